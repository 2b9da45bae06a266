-- Warren control-plane schema, version 6 (SQLite): workspace activity, for idle-shutdown policies.
-- One row per workspace and kind of activity (`ssh`, `exec`, `pty`, `port`, `api`, `keepalive`)
-- with the last time it was seen. The server batches writes (at most one per workspace and kind
-- every few seconds), so the table stays small and write load is bounded by the number of
-- workspaces, not by traffic.
CREATE TABLE workspace_activity (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    kind         TEXT NOT NULL,
    last_at      TEXT NOT NULL,
    PRIMARY KEY (workspace_id, kind)
);
