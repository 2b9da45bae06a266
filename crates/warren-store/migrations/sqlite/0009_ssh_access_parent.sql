-- Warren control-plane schema, version 9 (SQLite): an SSH access token remembers the API token
-- that made it, and dies with it (revoked or expired): a stolen API token's revocation also ends
-- the SSH access it minted.
ALTER TABLE ssh_access_tokens ADD COLUMN token_id TEXT REFERENCES api_tokens (id);
