-- People as the web page shows them (docs/web.md#people): a display name in any script,
-- the time zone their times are shown and read in, and the language of their pages. Each is
-- optional: NULL means "[web] time_zone" / the browser's language / the login name.
ALTER TABLE users
    ADD COLUMN display_name text
        CHECK (display_name IS NULL OR (char_length(display_name) BETWEEN 1 AND 120
                                        AND display_name !~ '[[:cntrl:]]')),
    -- An IANA zone name (Europe/Helsinki); the daemon checks it names a real zone.
    ADD COLUMN time_zone text CHECK (time_zone IS NULL OR time_zone ~ '^[A-Za-z0-9_+/-]{1,64}$'),
    ADD COLUMN language text CHECK (language IS NULL OR language IN ('en', 'fi', 'sv'));
