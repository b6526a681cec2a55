-- A call recorded whole (issue 14, docs/dialplan.md#transfers): every agent who was on it.
-- agent_name stays the first agent (as before); agents lists each agent whose leg answered,
-- in order, as [{"agent": ..., "joined_at": ..., "left_at": ...}] (ISO 8601 times within the
-- recording). Access follows the list (access/policy.py): each listed agent, and every
-- supervisor above any of them, reaches the recording.
ALTER TABLE recordings
    ADD COLUMN agents jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(agents) = 'array');

-- Rows written before this migration name one agent: list it, so access reads one place.
UPDATE recordings
   SET agents = jsonb_build_array(jsonb_build_object(
           'agent', agent_name, 'joined_at', started_at, 'left_at', ended_at))
 WHERE agent_name IS NOT NULL;

-- "Recordings where this agent was on the call": the policy's reach and the agent filter.
CREATE INDEX recordings_agents ON recordings USING gin (agents jsonb_path_ops);

-- Spans muted for card numbers (PCI DSS 4.0 3.3.1; docs/dialplan.md#pause-for-card-numbers):
-- [[start, end], ...] in seconds from started_at; the audio holds silence of the same length.
ALTER TABLE recordings
    ADD COLUMN paused jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(paused) = 'array');
