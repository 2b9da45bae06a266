-- Warren control-plane schema, version 2 (SQLite): users, organizations, teams, API tokens,
-- templates and their versions, uploaded files, jobs, and workspace ownership.
-- Same conventions as version 1: TEXT ids (32 lowercase hex), RFC 3339 UTC millisecond TEXT
-- timestamps, *_json columns holding JSON documents.

CREATE TABLE organizations (
    id         TEXT NOT NULL PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE users (
    id           TEXT    NOT NULL PRIMARY KEY,
    username     TEXT    NOT NULL UNIQUE,
    display_name TEXT,
    suspended    INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL
);

-- A user's role in an organization: owner, admin, template-admin, member or auditor.
CREATE TABLE memberships (
    org_id     TEXT NOT NULL REFERENCES organizations (id),
    user_id    TEXT NOT NULL REFERENCES users (id),
    role       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);

CREATE TABLE teams (
    id         TEXT NOT NULL PRIMARY KEY,
    org_id     TEXT NOT NULL REFERENCES organizations (id),
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (org_id, name)
);

CREATE TABLE team_members (
    team_id TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id),
    PRIMARY KEY (team_id, user_id)
);

-- API tokens. The secret is never stored: only its SHA-256. `workspaces_json` is null for no
-- restriction, else a JSON array of workspace ids the token may act on.
CREATE TABLE api_tokens (
    id              TEXT NOT NULL PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id),
    name            TEXT NOT NULL,
    secret_sha256   TEXT NOT NULL,
    scopes_json     TEXT NOT NULL,
    workspaces_json TEXT,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    last_used_at    TEXT,
    revoked_at      TEXT
);

CREATE INDEX api_tokens_user ON api_tokens (user_id);

-- Device authorization (browser-free login): the CLI holds the device code, the user approves
-- the short user code from an already signed-in session.
CREATE TABLE device_codes (
    device_sha256 TEXT NOT NULL PRIMARY KEY,
    user_code     TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    approved_by   TEXT REFERENCES users (id),
    token_id      TEXT,
    consumed      INTEGER NOT NULL DEFAULT 0
);

-- Uploaded archives (template folders, project folders), content-addressed by SHA-256.
CREATE TABLE files (
    id         TEXT    NOT NULL PRIMARY KEY,
    size       INTEGER NOT NULL,
    created_by TEXT    NOT NULL,
    created_at TEXT    NOT NULL
);

CREATE TABLE templates (
    id                TEXT NOT NULL PRIMARY KEY,
    org_id            TEXT NOT NULL REFERENCES organizations (id),
    name              TEXT NOT NULL,
    display_name      TEXT,
    description       TEXT,
    active_version_id TEXT,
    archived_at       TEXT,
    created_by        TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    UNIQUE (org_id, name)
);

-- Immutable once written. template_id is null for an ad-hoc version: the one `warren up DIR`
-- makes from a project folder for a single workspace.
CREATE TABLE template_versions (
    id                TEXT    NOT NULL PRIMARY KEY,
    template_id       TEXT REFERENCES templates (id),
    number            INTEGER NOT NULL,
    message           TEXT,
    devcontainer_json TEXT    NOT NULL,
    file_id           TEXT REFERENCES files (id),
    parameters_json   TEXT    NOT NULL,
    ceilings_json     TEXT    NOT NULL,
    policy_json       TEXT    NOT NULL,
    created_by        TEXT    NOT NULL,
    created_at        TEXT    NOT NULL
);

CREATE UNIQUE INDEX template_versions_number ON template_versions (template_id, number)
    WHERE template_id IS NOT NULL;

-- Workspace transitions run as jobs (like Coder's builds). At most one job per workspace is
-- active (pending or running): the partial unique index turns a concurrent second one into a
-- conflict.
CREATE TABLE jobs (
    id           TEXT NOT NULL PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL,
    initiator_id TEXT,
    error        TEXT,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT
);

CREATE UNIQUE INDEX jobs_one_active ON jobs (workspace_id) WHERE status IN ('pending', 'running');
CREATE INDEX jobs_workspace ON jobs (workspace_id, created_at);

-- Workspaces gain an owner (the empty string: a host-local workspace made by the embedded CLI),
-- an organization, the template version they were built from, parameter values, a TTL and a
-- deadline. Names become unique per owner. SQLite cannot change a UNIQUE constraint in place,
-- so the table is rebuilt.
CREATE TABLE workspaces_v2 (
    id                  TEXT    NOT NULL PRIMARY KEY,
    name                TEXT    NOT NULL,
    owner_id            TEXT    NOT NULL DEFAULT '',
    org_id              TEXT    NOT NULL DEFAULT '',
    template_id         TEXT,
    template_version_id TEXT,
    parameters_json     TEXT    NOT NULL DEFAULT '{}',
    ttl_secs            INTEGER,
    deadline_at         TEXT,
    project_dir         TEXT    NOT NULL,
    config_path         TEXT    NOT NULL,
    image               TEXT    NOT NULL,
    spec_json           TEXT    NOT NULL,
    state               TEXT    NOT NULL,
    generation          INTEGER NOT NULL,
    last_error          TEXT,
    lifecycle_json      TEXT    NOT NULL,
    runtime_json        TEXT    NOT NULL,
    created_at          TEXT    NOT NULL,
    updated_at          TEXT    NOT NULL,
    UNIQUE (owner_id, name)
);

INSERT INTO workspaces_v2 (id, name, project_dir, config_path, image, spec_json, state, generation,
                           last_error, lifecycle_json, runtime_json, created_at, updated_at)
SELECT id, name, project_dir, config_path, image, spec_json, state, generation, last_error,
       lifecycle_json, runtime_json, created_at, updated_at
FROM workspaces;

DROP TABLE workspaces;
ALTER TABLE workspaces_v2 RENAME TO workspaces;

CREATE INDEX workspaces_project_dir ON workspaces (project_dir);
CREATE INDEX workspaces_owner ON workspaces (owner_id, name);
CREATE INDEX workspaces_template ON workspaces (template_id);
