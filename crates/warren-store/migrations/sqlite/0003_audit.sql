-- Append-only, hash-chained audit log (see crates/warren-store/src/audit.rs for the hashing
-- scheme). Independent of every other table: no foreign keys, so records outlive what they
-- describe.
-- Portable to PostgreSQL except for the id, which becomes BIGINT GENERATED ALWAYS AS IDENTITY
-- there. Timestamps are TEXT in RFC 3339 UTC with millisecond precision, like the rest of the
-- schema. diff_json and details_json hold JSON text; it is hashed byte for byte.

CREATE TABLE audit_log (
    id             INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at             TEXT    NOT NULL,
    request_id     TEXT    NOT NULL,
    actor_user_id  TEXT,
    actor_username TEXT,
    actor_token_id TEXT,
    source_ip      TEXT,
    user_agent     TEXT,
    action         TEXT    NOT NULL,
    target_type    TEXT    NOT NULL,
    target_id      TEXT,
    target_name    TEXT,
    outcome        TEXT    NOT NULL,
    status         INTEGER NOT NULL,
    diff_json      TEXT,
    details_json   TEXT,
    prev_hash      TEXT    NOT NULL,
    hash           TEXT    NOT NULL
);

-- Every query is ordered by id, so each index ends with it.
CREATE INDEX audit_log_actor_user_id ON audit_log (actor_user_id, id);
CREATE INDEX audit_log_actor_username ON audit_log (actor_username, id);
CREATE INDEX audit_log_actor_token_id ON audit_log (actor_token_id, id);
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_target_id ON audit_log (target_id, id);
CREATE INDEX audit_log_target_name ON audit_log (target_name, id);
CREATE INDEX audit_log_at ON audit_log (at);
