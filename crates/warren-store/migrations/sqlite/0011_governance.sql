-- Lifecycle policies, events and metering (issue 6).

-- Per workspace: its own policy values (within its template's ceilings), the team it is charged
-- to, the cost rates it was made with, the start and stop of its current or last run, why it
-- last stopped, and the reason and initiator of the operation in progress (written when its job
-- is created, read by the transitions that finish it).
ALTER TABLE workspaces ADD COLUMN policy_json TEXT;
ALTER TABLE workspaces ADD COLUMN team_id TEXT;
ALTER TABLE workspaces ADD COLUMN cost_json TEXT;
ALTER TABLE workspaces ADD COLUMN started_at TEXT;
ALTER TABLE workspaces ADD COLUMN stopped_at TEXT;
ALTER TABLE workspaces ADD COLUMN stop_reason TEXT;
ALTER TABLE workspaces ADD COLUMN op_reason TEXT;
ALTER TABLE workspaces ADD COLUMN op_actor TEXT;

-- What happened, for people and webhooks: transitions (with their reasons), warnings, budget
-- alerts. Kept after the workspace is gone (no foreign key). `dedupe_key` makes an event that
-- must happen once (a warning, an alert per period) idempotent: a second insert is ignored.
CREATE TABLE events (
    id             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at             TEXT    NOT NULL,
    kind           TEXT    NOT NULL,
    workspace_id   TEXT,
    workspace_name TEXT,
    owner_id       TEXT,
    team_id        TEXT,
    actor_id       TEXT,
    reason         TEXT,
    message        TEXT    NOT NULL,
    data_json      TEXT    NOT NULL DEFAULT '{}',
    dedupe_key     TEXT    UNIQUE
);

CREATE INDEX events_workspace ON events (workspace_id, id);
CREATE INDEX events_owner ON events (owner_id, id);

-- Metering: one row per stretch of time a workspace spent running (`running`: starting, running,
-- stopping) or existing without running (`stopped`: pending, stopped, failed), at the hourly rate
-- its template declared then. Opened and closed in the same transaction as the state change, so
-- time is never counted twice or lost across restarts; an open row (`ended_at` null) runs until
-- now. Rows outlive their workspace.
CREATE TABLE usage_segments (
    id             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    workspace_id   TEXT    NOT NULL,
    workspace_name TEXT    NOT NULL,
    owner_id       TEXT    NOT NULL,
    team_id        TEXT,
    template_id    TEXT,
    class          TEXT    NOT NULL,
    rate_per_hour  REAL    NOT NULL,
    cpus           REAL,
    memory_mb      INTEGER,
    started_at     TEXT    NOT NULL,
    ended_at       TEXT
);

CREATE INDEX usage_segments_workspace ON usage_segments (workspace_id, ended_at);
CREATE INDEX usage_segments_time ON usage_segments (started_at);
CREATE INDEX usage_segments_open ON usage_segments (ended_at) WHERE ended_at IS NULL;
