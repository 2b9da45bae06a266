-- Quotas, budgets and cost (issue 6).

-- What a workspace made from a template version costs per hour, running and stopped (JSON
-- `{"running_per_hour": 1.5, "stopped_per_hour": 0.05}`, in cost units; `{}`: free). Snapshot
-- onto the workspace (`workspaces.cost_json`) at create and update.
ALTER TABLE template_versions ADD COLUMN cost_json TEXT NOT NULL DEFAULT '{}';

-- Quotas of a user (`subject_kind` user, `subject_id` the user's id), a team (team, the team's
-- id) and the default of every user without their own (default, ''). Unset limits are unlimited.
-- `budget` is in cost units per `budget_period` (day, week, month: calendar periods in UTC);
-- `on_exhausted` is `refuse` (new starts) or `stop` (and stop running workspaces).
CREATE TABLE quotas (
    subject_kind   TEXT    NOT NULL,
    subject_id     TEXT    NOT NULL,
    max_workspaces INTEGER,
    max_cpus       REAL,
    max_memory_mb  INTEGER,
    budget         REAL,
    budget_period  TEXT    NOT NULL DEFAULT 'month',
    on_exhausted   TEXT    NOT NULL DEFAULT 'refuse',
    updated_by     TEXT,
    updated_at     TEXT    NOT NULL,
    PRIMARY KEY (subject_kind, subject_id)
);

-- Overrides an admin grants a user or team until `expires_at`: extra budget for the period, or
-- no limits at all (`unlimited`). Revoked ones keep their row (`revoked_at`) for the record.
CREATE TABLE quota_overrides (
    id           TEXT    NOT NULL PRIMARY KEY,
    subject_kind TEXT    NOT NULL,
    subject_id   TEXT    NOT NULL,
    extra_budget REAL,
    unlimited    INTEGER NOT NULL DEFAULT 0,
    expires_at   TEXT    NOT NULL,
    note         TEXT,
    created_by   TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    revoked_at   TEXT
);

CREATE INDEX quota_overrides_subject ON quota_overrides (subject_kind, subject_id, expires_at);
