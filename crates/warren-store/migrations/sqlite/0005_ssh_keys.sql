-- Warren control-plane schema, version 5 (SQLite): users' SSH public keys, for the SSH gateway.
-- `public_key` is the key's canonical OpenSSH text (`type base64`, no comment); `fingerprint` is
-- `SHA256:<base64 without padding>` of the key's wire format, as `ssh-keygen -l` prints it. A key
-- belongs to one user on the whole server: the gateway finds the user by the key. Users are never
-- deleted (they are suspended), so, as for API tokens, no cascade is needed.
CREATE TABLE ssh_keys (
    id           TEXT NOT NULL PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    key_type     TEXT NOT NULL,
    public_key   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT
);

CREATE INDEX ssh_keys_user ON ssh_keys (user_id, created_at);
