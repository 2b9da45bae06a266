-- Warren control-plane schema, version 10 (SQLite): SSH keys are proven before they are used.
-- Registering a public key proves nothing (public keys are public); a key authenticates at the
-- SSH gateway only once its user has signed a registration message with it (`verified_at`).
-- Fingerprints are unique among verified keys only, so nobody can squat someone else's key; an
-- unverified copy registered by another user goes when the real owner verifies theirs. Keys made
-- before this version must be verified again.
CREATE TABLE ssh_keys_v10 (
    id           TEXT NOT NULL PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    key_type     TEXT NOT NULL,
    public_key   TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    last_used_at TEXT,
    verified_at  TEXT
);

INSERT INTO ssh_keys_v10 (id, user_id, name, key_type, public_key, fingerprint, created_at, last_used_at)
    SELECT id, user_id, name, key_type, public_key, fingerprint, created_at, last_used_at FROM ssh_keys;

DROP TABLE ssh_keys;
ALTER TABLE ssh_keys_v10 RENAME TO ssh_keys;

CREATE INDEX ssh_keys_user ON ssh_keys (user_id, created_at);
CREATE UNIQUE INDEX ssh_keys_user_fingerprint ON ssh_keys (user_id, fingerprint);
CREATE UNIQUE INDEX ssh_keys_verified ON ssh_keys (fingerprint) WHERE verified_at IS NOT NULL;
