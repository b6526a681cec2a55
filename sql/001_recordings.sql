-- The register itself: one row per recorded call (docs/privacy.md#what-a-row-holds, R3).
-- Only what the privacy notices promise is stored. The CHECK on customer_number_masked is
-- a last line of defence: the database refuses anything that is not a masked number.
CREATE TABLE recordings (
    id                      uuid PRIMARY KEY,
    call_id                 text        NOT NULL,
    register_name           text        NOT NULL,
    direction               text        NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    started_at              timestamptz NOT NULL,
    ended_at                timestamptz NOT NULL CHECK (ended_at >= started_at),
    duration_seconds        numeric(12, 3) NOT NULL CHECK (duration_seconds >= 0),
    service_number          text,
    customer_number_masked  text CHECK (customer_number_masked ~ '^\+?[0-9]*\*\*\*$'),
    -- Keyed HMAC-SHA256 of the normalised full number ([privacy] number_hmac_key_file), hex;
    -- tells apart numbers that differ only in the masked digits. The key is not in the database.
    customer_number_hmac    text CHECK (customer_number_hmac ~ '^[0-9a-f]{64}$'),
    agent_name              text,
    file_path               text        NOT NULL UNIQUE
                                        CHECK (file_path !~ '(^/|\.\.)'),
    file_size               bigint      NOT NULL CHECK (file_size >= 0),
    sha256                  text        NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    retain_until            timestamptz NOT NULL,
    legal_hold              boolean     NOT NULL DEFAULT false,
    -- Which callrec wrote the row ([daemon] node, default the host name): with two Asterisk
    -- servers on one database, each only touches files it can reach.
    node                    text        NOT NULL DEFAULT '',
    -- Written from the file after the daemon missed the call's end (crash, restart).
    recovered               boolean     NOT NULL DEFAULT false,
    -- The call was cut by an Asterisk restart; the file is as Asterisk left it.
    interrupted             boolean     NOT NULL DEFAULT false,
    created_at              timestamptz NOT NULL DEFAULT now()
);

-- The retention sweep reads expired rows; the access API searches by time, register, agent.
CREATE INDEX recordings_retain_until ON recordings (retain_until) WHERE NOT legal_hold;
CREATE INDEX recordings_register_started ON recordings (register_name, started_at);
CREATE INDEX recordings_agent_started ON recordings (agent_name, started_at);
CREATE INDEX recordings_started ON recordings (started_at);
