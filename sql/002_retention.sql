-- Retention: legal holds, the crash-safe disposal queue, and the disposal log.
-- docs/retention.md#crash-safe-order explains the order of a pass; the invariants this schema serves:
--   * a row in `recordings` always has its audio file (the sweep never deletes a file whose
--     recording row still exists);
--   * every audio file is referenced by `recordings` or by `disposal_pending` until it is
--     gone, so a pass killed at any moment leaves work the next pass can finish.

-- Restriction of processing (Art. 18) and police cases (R8): a held recording is never
-- destroyed. Who, why and when are kept with the hold; hold_until NULL means until released.
ALTER TABLE recordings
    ADD COLUMN hold_reason text,
    ADD COLUMN hold_by     text,
    ADD COLUMN hold_at     timestamptz,
    ADD COLUMN hold_until  timestamptz;
-- NOT VALID: enforced for every new hold without rechecking rows that predate this file.
ALTER TABLE recordings ADD CONSTRAINT recordings_hold_is_explained
    CHECK (NOT legal_hold OR (hold_reason IS NOT NULL AND hold_by IS NOT NULL AND hold_at IS NOT NULL))
    NOT VALID;
-- Held rows are few; the sweep lifts the holds whose hold_until has passed.
CREATE INDEX recordings_hold_until ON recordings (hold_until) WHERE legal_hold;

-- A recording whose destruction has begun: its row has left `recordings` (the register no
-- longer shows it) and its file is being deleted. Only the node that holds the file finishes it.
-- An orphan file gets a row here too, named by the uuid in its file name.
CREATE TABLE disposal_pending (
    recording_id    uuid PRIMARY KEY,
    register_name   text,
    file_path       text        NOT NULL CHECK (file_path !~ '(^/|\.\.)'),
    file_size       bigint      NOT NULL CHECK (file_size >= 0),
    reason          text        NOT NULL CHECK (reason IN ('retention', 'erasure', 'orphan')),
    node            text        NOT NULL,
    requested_by    text,
    request_reason  text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The proof that destruction happened. No phone number, masked or not: only the recording id,
-- its register, why, and how many bytes. Erasure requests also keep who asked and why.
CREATE TABLE disposal_log (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    disposed_at     timestamptz NOT NULL DEFAULT now(),
    recording_id    uuid        NOT NULL,
    register_name   text,
    reason          text        NOT NULL CHECK (reason IN ('retention', 'erasure', 'orphan')),
    -- The recording's registered size (file_size); an orphan's size on disk.
    bytes           bigint      NOT NULL CHECK (bytes >= 0),
    node            text        NOT NULL,
    requested_by    text,
    request_reason  text,
    requested_at    timestamptz NOT NULL
);
CREATE INDEX disposal_log_recording ON disposal_log (recording_id);

-- Holds and releases are evidence as well (who restricted processing, who lifted it).
CREATE TABLE legal_hold_log (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    recording_id    uuid        NOT NULL,
    action          text        NOT NULL CHECK (action IN ('hold', 'release', 'expire')),
    by              text        NOT NULL,
    reason          text,
    hold_until      timestamptz
);

-- Append-only: a log that can be edited proves nothing. (A superuser can still disable the
-- trigger; the daemon's own role should not own these tables in production.)
CREATE FUNCTION callrec_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER disposal_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON disposal_log
    FOR EACH STATEMENT EXECUTE FUNCTION callrec_append_only();
CREATE TRIGGER legal_hold_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON legal_hold_log
    FOR EACH STATEMENT EXECUTE FUNCTION callrec_append_only();
