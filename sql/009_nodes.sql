-- Several callrecs, one register (docs/retention.md#several-nodes): each node's retention pass
-- says it is alive here, so `callrec check` can name a node whose files wait for it although
-- no callrec of that name has been seen for days (a renamed host, a retired PBX).
CREATE TABLE nodes (
    name          text PRIMARY KEY,
    -- /etc/machine-id: the same host under a new name is recognised (callrec check warns).
    machine_id    text NOT NULL,
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX nodes_machine ON nodes (machine_id);
-- Every node now claims from the whole register; disposals waiting for another node's files
-- are found by node.
CREATE INDEX disposal_pending_node ON disposal_pending (node);
