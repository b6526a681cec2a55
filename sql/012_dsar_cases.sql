-- A data-subject request (or a police request) as a case the DPO works through
-- (docs/web.md#data-subject-requests, docs/privacy.md#finding-a-data-subjects-calls): who asked
-- and when, the answer's deadline, the searches run for it, the candidate calls the DPO
-- listened to, and each export with its receipt. No full phone number is stored anywhere here:
-- a search keeps the masked number and, with [privacy] number_hmac_key_file, its keyed HMAC.
CREATE TABLE dsar_cases (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind            text        NOT NULL DEFAULT 'data_subject' CHECK (kind IN ('data_subject', 'police')),
    -- Free text typed by the DPO, redacted (privacy.redact) before it is stored.
    requester       text        NOT NULL
                                CHECK (char_length(requester) BETWEEN 1 AND 300 AND requester !~ '[[:cntrl:]]'),
    received_on     date        NOT NULL,
    -- GDPR Art. 12(3): an answer within one month of receipt, extendable by two further months
    -- (the requester told why within the first month). PostgreSQL's month arithmetic clamps to
    -- the month's last day: 31 January + 1 month = 28 (or 29) February.
    extension_reason text       CHECK (extension_reason IS NULL OR (char_length(extension_reason) BETWEEN 1 AND 300
                                                                    AND extension_reason !~ '[[:cntrl:]]')),
    due_on          date        GENERATED ALWAYS AS (
                                    (received_on + CASE WHEN extension_reason IS NULL THEN interval '1 month'
                                                        ELSE interval '3 months' END)::date) STORED,
    status          text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'answered', 'refused')),
    status_note     text        CHECK (status_note IS NULL OR (char_length(status_note) BETWEEN 1 AND 300
                                                              AND status_note !~ '[[:cntrl:]]')),
    opened_by       bigint      NOT NULL REFERENCES users (id),
    opened_at       timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,
    CHECK ((status = 'open') = (closed_at IS NULL))
);
CREATE INDEX dsar_cases_open ON dsar_cases (due_on) WHERE status = 'open';

-- One data-subject search of a case: what was asked (masked), what was found, in order.
CREATE TABLE dsar_case_searches (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id         bigint      NOT NULL REFERENCES dsar_cases (id),
    searched_by     bigint      NOT NULL REFERENCES users (id),
    searched_at     timestamptz NOT NULL DEFAULT now(),
    number_masked   text        NOT NULL CHECK (number_masked ~ '^\+?[0-9]*\*\*\*$'),
    number_hmac     text        CHECK (number_hmac IS NULL OR number_hmac ~ '^[0-9a-f]{64}$'),
    at              timestamptz NOT NULL,
    window_minutes  integer     NOT NULL CHECK (window_minutes >= 0),
    exact_matching  boolean     NOT NULL,
    -- [{"id": uuid, "match": "exact"|"masked", "seconds_away": n}] as found, nearest first. No
    -- foreign key: a candidate erased later stays named here, as in the audit log.
    candidates      jsonb       NOT NULL DEFAULT '[]'
);
CREATE INDEX dsar_case_searches_case ON dsar_case_searches (case_id, id);

-- A candidate the DPO played from the case page (its audio went through the case's own URL).
CREATE TABLE dsar_case_listens (
    case_id         bigint      NOT NULL REFERENCES dsar_cases (id),
    recording_id    uuid        NOT NULL,
    user_id         bigint      NOT NULL REFERENCES users (id),
    first_at        timestamptz NOT NULL DEFAULT now(),
    last_at         timestamptz NOT NULL DEFAULT now(),
    requests        integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (case_id, recording_id, user_id)
);

-- An export of the case and its receipt: what left, to whom, why, provably (the bundle's sha256).
CREATE TABLE dsar_case_exports (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    case_id         bigint      NOT NULL REFERENCES dsar_cases (id),
    exported_by     bigint      NOT NULL REFERENCES users (id),
    exported_at     timestamptz NOT NULL,
    recipient       text        NOT NULL,
    legal_basis     text        NOT NULL,
    -- GDPR Art. 15(4): agents' names and ids left out of metadata.json, or not (a police request).
    employee_identity text      NOT NULL CHECK (employee_identity IN ('withheld', 'included')),
    recording_ids   uuid[]      NOT NULL,
    bundle_sha256   text        NOT NULL CHECK (bundle_sha256 ~ '^[0-9a-f]{64}$'),
    bundle_bytes    bigint      NOT NULL CHECK (bundle_bytes > 0)
);
CREATE INDEX dsar_case_exports_case ON dsar_case_exports (case_id, id);

-- The case's trail in the audit log: every request about a case names it in detail.case_id.
CREATE INDEX audit_log_case ON audit_log ((detail ->> 'case_id'), id) WHERE detail ? 'case_id';
