-- Warren control-plane schema, version 4 (SQLite).
-- Workspaces keep the resource limits they were created with (a workspace that is provisioned
-- again, after a canceled create or a parameter update, gets the same limits).
ALTER TABLE workspaces ADD COLUMN limits_json TEXT NOT NULL DEFAULT '{}';

-- A device login's token never outlives the token that approved it.
ALTER TABLE device_codes ADD COLUMN approved_expires_at TEXT;

-- A job being canceled is still active: nothing else may start on its workspace until the
-- cancellation has settled the workspace.
DROP INDEX jobs_one_active;
CREATE UNIQUE INDEX jobs_one_active ON jobs (workspace_id)
    WHERE status IN ('pending', 'running', 'canceling');
