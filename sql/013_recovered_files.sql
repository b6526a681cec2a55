-- A recording found in recordings_dir with no journal entry and no row (the daemon was killed
-- between MixMonitor and its journal entry, or lost its state_dir) gets a `recovered` row from
-- the file alone (docs/recording.md#files-without-a-row). Its file names the register and the
-- node; Asterisk's linkedid is not known, so call_id may be NULL, as the service number,
-- the customer and the agent already may.
ALTER TABLE recordings ALTER COLUMN call_id DROP NOT NULL;
