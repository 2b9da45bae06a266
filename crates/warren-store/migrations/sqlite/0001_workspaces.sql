-- Warren control-plane schema, version 1 (SQLite).
-- Kept portable so migrations/postgres/ can mirror it: TEXT ids, INTEGER counters, and
-- timestamps as TEXT in RFC 3339 UTC with millisecond precision ("2024-05-01T12:00:00.000Z"),
-- which sort chronologically as plain text. *_json columns hold opaque JSON owned by the engine.

CREATE TABLE workspaces (
    id             TEXT    NOT NULL PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    project_dir    TEXT    NOT NULL,
    config_path    TEXT    NOT NULL,
    image          TEXT    NOT NULL,
    spec_json      TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    generation     INTEGER NOT NULL,
    last_error     TEXT,
    lifecycle_json TEXT    NOT NULL,
    runtime_json   TEXT    NOT NULL,
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL
);

CREATE INDEX workspaces_project_dir ON workspaces (project_dir);

-- Append-only history (the future audit trail). Deliberately no foreign key to workspaces:
-- the history of a workspace outlives its record.
CREATE TABLE workspace_events (
    id           INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT    NOT NULL,
    at           TEXT    NOT NULL,
    from_state   TEXT    NOT NULL,
    to_state     TEXT    NOT NULL,
    event        TEXT    NOT NULL,
    message      TEXT
);

CREATE INDEX workspace_events_workspace ON workspace_events (workspace_id, id);
