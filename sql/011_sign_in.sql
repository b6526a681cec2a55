-- Signing in on the page with a password or through the company directory
-- (docs/web.md#signing-in). API tokens stay for programs.

-- How a person signs in: 'password' (an argon2id hash kept here) or 'directory' (a bind to
-- the [ldap] server; no password is ever stored for them). Role, team and agent id always
-- come from this table, never from the directory.
ALTER TABLE users
    ADD COLUMN sign_in text NOT NULL DEFAULT 'password' CHECK (sign_in IN ('password', 'directory')),
    -- PHC string of argon2-cffi ("$argon2id$v=19$m=...,t=...,p=...$salt$hash"); NULL: no
    -- password set, so password sign-in is refused.
    ADD COLUMN password_hash text CHECK (password_hash IS NULL OR password_hash LIKE '$argon2id$%'),
    ADD COLUMN password_set_at timestamptz,
    ADD CHECK (sign_in = 'password' OR password_hash IS NULL);

-- A session opened with a password or by the directory has no token: it ends at its lifetime,
-- after the idle timeout, at sign-out, when its person is disabled, or when their password is
-- changed. A token-opened one also ends with its token, as before.
ALTER TABLE web_sessions
    ALTER COLUMN token_id DROP NOT NULL,
    ADD COLUMN method text NOT NULL DEFAULT 'token' CHECK (method IN ('token', 'password', 'directory')),
    ADD CHECK ((method = 'token') = (token_id IS NOT NULL));
