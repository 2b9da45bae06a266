-- Warren control-plane schema, version 8 (SQLite): short-lived SSH access tokens.
-- A token lets whoever holds it run commands in one workspace over SSH (`ssh TOKEN@gateway`),
-- with no key, until it expires or is revoked. Only its SHA-256 is kept. It goes with its
-- workspace.
CREATE TABLE ssh_access_tokens (
    id           TEXT NOT NULL PRIMARY KEY,
    token_sha256 TEXT NOT NULL UNIQUE,
    user_id      TEXT NOT NULL REFERENCES users (id),
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    revoked_at   TEXT,
    last_used_at TEXT
);

CREATE INDEX ssh_access_tokens_workspace ON ssh_access_tokens (workspace_id, created_at);
