-- Secrets (issue 8): values encrypted with the server's key (AES-256-GCM; the associated data
-- binds scope, scope_id and name, so a ciphertext cannot be moved to another row). `scope` is
-- `user` (scope_id: the user's id), `team` (the team's id), `template` (the template's id), or
-- `workspace` (the workspace's id: Warren's own secrets of one workspace, such as its minted
-- credential; they go with the workspace). `kind` is `generic` or `git` (with `git_host` and
-- `username`: what Warren's git credential helper answers).
CREATE TABLE secrets (
    id          TEXT NOT NULL PRIMARY KEY,
    name        TEXT NOT NULL,
    scope       TEXT NOT NULL,
    scope_id    TEXT NOT NULL,
    kind        TEXT NOT NULL DEFAULT 'generic',
    git_host    TEXT,
    username    TEXT,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    created_by  TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    UNIQUE (scope, scope_id, name)
);

-- The secret names a workspace asked for at create (JSON array; NULL: none).
ALTER TABLE workspaces ADD COLUMN secrets_json TEXT;

-- The workspace a minted workspace credential belongs to (NULL: an ordinary token). Deleting the
-- workspace revokes them.
ALTER TABLE api_tokens ADD COLUMN workspace_credential TEXT;
CREATE INDEX api_tokens_workspace_credential ON api_tokens (workspace_credential)
    WHERE workspace_credential IS NOT NULL;
