-- Warren control-plane schema, version 7 (SQLite): how widely each workspace port is shared through
-- its preview URLs. A port without a row is shared with its owner only (`owner`, the default), so
-- only `organization` and `public` are stored. Rows go with their workspace.
CREATE TABLE port_shares (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    port         INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    sharing      TEXT NOT NULL CHECK (sharing IN ('organization', 'public')),
    updated_at   TEXT NOT NULL,
    updated_by   TEXT,
    PRIMARY KEY (workspace_id, port)
);
