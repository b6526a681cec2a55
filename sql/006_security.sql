-- Access that survives an attacker (docs/privacy.md#two-database-roles).
-- The schema belongs to an owner role that only `callrec migrate` uses; the daemon's runtime
-- role gets its rights from db/grants.py after every migration. This file holds what the
-- database itself must enforce whatever the runtime role sends.

-- The evidence logs' timestamps are the database's, never the client's: an INSERT that names
-- the column gets it overwritten. (The runtime role has no UPDATE on these tables.) Their ids
-- are the database's too: an INSERT ... OVERRIDING SYSTEM VALUE (an id out of order, to slip a
-- row in among older ones) is refused, since then the id is not the one just drawn from the
-- sequence in this session.
CREATE FUNCTION callrec_stamp_now() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    drawn bigint;
BEGIN
    BEGIN
        drawn := currval(pg_get_serial_sequence(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 'id'));
    EXCEPTION WHEN object_not_in_prerequisite_state THEN
        drawn := NULL;  -- no id drawn in this session: it was given by the client
    END;
    IF drawn IS DISTINCT FROM NEW.id THEN
        RAISE EXCEPTION '%: the id is set by the database', TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    NEW := jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[0], clock_timestamp()));
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_log_stamp BEFORE INSERT ON audit_log
    FOR EACH ROW EXECUTE FUNCTION callrec_stamp_now('at');
CREATE TRIGGER disposal_log_stamp BEFORE INSERT ON disposal_log
    FOR EACH ROW EXECUTE FUNCTION callrec_stamp_now('disposed_at');
CREATE TRIGGER legal_hold_log_stamp BEFORE INSERT ON legal_hold_log
    FOR EACH ROW EXECUTE FUNCTION callrec_stamp_now('at');

-- Settings only the owner writes (`callrec migrate` copies them from the config); the
-- runtime role reads them. The audit log's retention lives here, so the role that writes the
-- log cannot shorten how long it is kept.
CREATE TABLE callrec_settings (
    key     text PRIMARY KEY CHECK (key ~ '^[a-z_]{1,64}$'),
    value   text NOT NULL
);
INSERT INTO callrec_settings (key, value) VALUES ('audit_log_retention', '2 years');

-- The proof that old audit rows were destroyed: when, up to which time, how many.
CREATE TABLE audit_purge_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    purged_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    before      timestamptz NOT NULL,
    rows        bigint      NOT NULL CHECK (rows >= 0),
    by          text        NOT NULL
);
CREATE TRIGGER audit_purge_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_purge_log
    FOR EACH STATEMENT EXECUTE FUNCTION callrec_append_only();
CREATE TRIGGER audit_purge_log_stamp BEFORE INSERT ON audit_purge_log
    FOR EACH ROW EXECUTE FUNCTION callrec_stamp_now('purged_at');

-- audit_log stays append-only, except for the one DELETE the purge function below runs.
-- The marker is a transaction-local setting; setting it helps no one without DELETE rights,
-- which only the owner has.
CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('callrec.purging', true) = 'audit_log' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

-- Destroys the audit rows older than the configured retention, and records that it did.
-- SECURITY DEFINER: runs as the owner, so the runtime role can call it (each retention pass
-- does) without any right to delete rows itself; it takes no argument to abuse.
CREATE FUNCTION callrec_purge_audit_log() RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    keep    interval;
    cutoff  timestamptz;
    n       bigint;
BEGIN
    SELECT value::interval INTO keep FROM callrec_settings WHERE key = 'audit_log_retention';
    IF keep IS NULL OR keep < interval '1 day' THEN
        keep := interval '2 years';
    END IF;
    cutoff := now() - keep;
    PERFORM set_config('callrec.purging', 'audit_log', true);
    DELETE FROM audit_log WHERE at < cutoff;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM set_config('callrec.purging', '', true);
    IF n > 0 THEN
        INSERT INTO audit_purge_log (before, rows, by) VALUES (cutoff, n, session_user);
    END IF;
    RETURN n;
END
$$;
REVOKE EXECUTE ON FUNCTION callrec_purge_audit_log() FROM PUBLIC;

-- Web sign-in sessions (docs/api.md#web-sessions): the cookie holds a random id, the table
-- its SHA-256 only; a session ends at expires_at, after idle_timeout without use, or at
-- sign-out (revoked_at).
CREATE TABLE web_sessions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint      NOT NULL REFERENCES users (id),
    -- The token signed in with: revoking it (or its expiry) ends its sessions too.
    token_id        bigint      NOT NULL REFERENCES user_tokens (id),
    session_sha256  bytea       NOT NULL UNIQUE CHECK (length(session_sha256) = 32),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
