-- The archive (docs/archive.md): each recording transcoded, sealed with a data key of its own
-- and kept in the object store; the data key lives only here, wrapped by the key-encryption
-- key of [archive] key_file. Destroying the key destroys every copy of the audio (R4, R9).

-- Until archived_at is set the row's audio is the WAV at file_path under recordings_dir; from
-- then on it is the object named after the id (archive/store.py), and sha256 and file_size
-- describe the audio as a recipient gets it (decrypted, in audio_format).
ALTER TABLE recordings
    ADD COLUMN audio_format text NOT NULL DEFAULT 'wav' CHECK (audio_format IN ('wav', 'opus', 'flac')),
    ADD COLUMN archived_at  timestamptz,
    ADD COLUMN encrypted    boolean NOT NULL DEFAULT false,
    -- The last `callrec verify` of the archived object: when, and what failed (NULL: intact).
    ADD COLUMN verified_at  timestamptz,
    ADD COLUMN verify_error text CHECK (length(verify_error) <= 200),
    ADD CONSTRAINT recordings_encrypted_is_archived CHECK (NOT encrypted OR archived_at IS NOT NULL);
-- Backfill and the daemon's start look for rows still waiting for the archive.
CREATE INDEX recordings_unarchived ON recordings (node, ended_at) WHERE archived_at IS NULL;
CREATE INDEX recordings_verify_failed ON recordings (verified_at) WHERE verify_error IS NOT NULL;

-- One data key per recording, wrapped (RFC 3394 AES key wrap, 40 bytes). ON DELETE CASCADE: a
-- key can never outlive its row; the statement that takes a row out of the register for
-- destruction destroys its key in the same transaction (retention/queries.py).
CREATE TABLE recording_keys (
    recording_id  uuid PRIMARY KEY REFERENCES recordings (id) ON DELETE CASCADE,
    key_id        text NOT NULL CHECK (key_id ~ '^[0-9a-f]{16}$'),
    wrapped_key   bytea NOT NULL CHECK (length(wrapped_key) = 40),
    created_at    timestamptz NOT NULL DEFAULT now(),
    rotated_at    timestamptz
);
-- `callrec keys rotate` finds the keys still wrapped by a retired key-encryption key.
CREATE INDEX recording_keys_key_id ON recording_keys (key_id);

-- Destruction of an archived recording: the key first (with the row), then the object.
ALTER TABLE disposal_pending
    ADD COLUMN archived         boolean NOT NULL DEFAULT false,
    ADD COLUMN key_destroyed_at timestamptz;
-- The proof: when the data key was destroyed, and where the audio was deleted from
-- ('archive' or 'recordings_dir'); disposed_at is when that deletion was confirmed.
ALTER TABLE disposal_log
    ADD COLUMN key_destroyed_at timestamptz,
    ADD COLUMN audio_deleted_from text CHECK (audio_deleted_from IN ('archive', 'recordings_dir'));
