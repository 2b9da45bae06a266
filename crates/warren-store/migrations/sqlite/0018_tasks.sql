-- Tasks (issue 8): work run in a fresh workspace. `state` follows `warren_api::task::transition`;
-- `generation` is bumped by every change (compare-and-set, like workspaces).
CREATE TABLE tasks (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL,
    team_id TEXT,
    template TEXT NOT NULL,
    template_version INTEGER,
    params_json TEXT NOT NULL DEFAULT '{}',
    repo_url TEXT,
    base_branch TEXT,
    branch TEXT NOT NULL,
    command_json TEXT,
    shell TEXT,
    interactive INTEGER NOT NULL DEFAULT 0,
    time_limit_s INTEGER NOT NULL,
    idle_limit_s INTEGER NOT NULL,
    labels_json TEXT NOT NULL DEFAULT '{}',
    secrets_json TEXT NOT NULL DEFAULT '[]',
    artifacts_json TEXT NOT NULL DEFAULT '[]',
    keep INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    reason TEXT,
    workspace_id TEXT,
    repo_dir TEXT,
    credential_token_id TEXT,
    exit_code INTEGER,
    pushed_branch TEXT,
    diff TEXT,
    collected_json TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    generation INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX tasks_state ON tasks (state, created_at);
CREATE INDEX tasks_owner ON tasks (owner_id, created_at);
CREATE INDEX tasks_workspace ON tasks (workspace_id);
