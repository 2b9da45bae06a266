-- Network policies (issue 7). `network_json`: the workspace's own network policy as written
-- (`warren_api::net::NetworkPolicy`; NULL: none, only its template's applies). `egress_json`: the
-- plan in force the control plane computed from its template's and its own policy
-- (`warren_runtime::network::EgressPlan`; NULL: the engine's default).
ALTER TABLE workspaces ADD COLUMN network_json TEXT;
ALTER TABLE workspaces ADD COLUMN egress_json TEXT;

-- Small named values the control plane keeps between runs (e.g. how far the network denial journal
-- has been read).
CREATE TABLE kv (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
