-- Access to recordings: the people who may listen, their API tokens, and the audit
-- log of every access (docs/privacy.md, R5, R6, R8, R9, R10).

-- Data-subject requests look up one masked number in a time window.
CREATE INDEX recordings_masked_started ON recordings (customer_number_masked, started_at)
    WHERE customer_number_masked IS NOT NULL;

-- People. Never deleted, only disabled: audit rows keep pointing at them, and an agent id can
-- never pass to another person (the UNIQUE below covers disabled rows too).
CREATE TABLE users (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text        NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$'),
    role            text        NOT NULL CHECK (role IN ('agent', 'supervisor', 'admin', 'dpo')),
    supervisor_id   bigint      REFERENCES users (id),
    -- The value the dialplan puts in CALLREC_AGENT for this person's calls; recordings.agent_name
    -- holds the same value. An id, not a display name: names change and collide.
    agent_id        text        UNIQUE CHECK (agent_id <> '' AND length(agent_id) <= 128),
    created_at      timestamptz NOT NULL DEFAULT now(),
    disabled_at     timestamptz,
    CHECK (supervisor_id IS DISTINCT FROM id)
);
CREATE INDEX users_supervisor ON users (supervisor_id);

-- The supervisor relation must stay a tree: a loop would make people their own subordinates.
CREATE FUNCTION users_refuse_loop() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.supervisor_id IS NULL THEN
        RETURN NEW;
    END IF;
    -- Serialises tree changes: two concurrent moves could each pass the check and close a loop.
    -- The query below runs with a fresh snapshot, taken after the lock.
    PERFORM pg_advisory_xact_lock(7235690142315001);
    IF EXISTS (
        WITH RECURSIVE up (id, supervisor_id) AS (
            SELECT id, supervisor_id FROM users WHERE id = NEW.supervisor_id
            UNION
            SELECT u.id, u.supervisor_id FROM users u JOIN up ON u.id = up.supervisor_id
        )
        SELECT 1 FROM up WHERE id = NEW.id
    ) THEN
        RAISE EXCEPTION 'supervisor loop' USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER users_refuse_loop BEFORE INSERT OR UPDATE OF supervisor_id ON users
    FOR EACH ROW EXECUTE FUNCTION users_refuse_loop();

-- Bearer tokens: only the SHA-256 of a 32-byte random token is kept; the token is shown once.
-- A plain hash suffices: the token has 256 bits of entropy, nothing to brute-force.
CREATE TABLE user_tokens (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint      NOT NULL REFERENCES users (id),
    token_sha256    bytea       NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz
);
CREATE INDEX user_tokens_user ON user_tokens (user_id);

-- Who accessed what. One row per API or web request, refused ones included, and one per
-- user-management command. recording_id has no foreign key: the row outlives an erasure.
CREATE TABLE audit_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    user_id         bigint      REFERENCES users (id),
    user_name       text,
    role            text,
    action          text        NOT NULL CHECK (action ~ '^[a-z_]{1,32}$'),
    recording_id    uuid,
    client          text,
    outcome         text        NOT NULL
                                CHECK (outcome IN ('ok', 'unauthenticated', 'denied', 'not_found',
                                                   'invalid', 'error')),
    status          smallint,
    -- Parameters of the access: search filters, the masked number of a data-subject search,
    -- a disclosure's recipient, legal basis and case reference. Never a full number or a token.
    detail          jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_recording ON audit_log (recording_id, at) WHERE recording_id IS NOT NULL;
CREATE INDEX audit_log_user ON audit_log (user_id, at);
-- "Who received this recording?": exports and data-subject searches list their ids in detail.
CREATE INDEX audit_log_recording_ids ON audit_log USING gin ((detail -> 'recording_ids'));

-- Append-only for every role, the owner included (R9: protection against alteration).
-- Statement-level, so even an UPDATE or DELETE that matches no row is refused.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
