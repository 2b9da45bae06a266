//! Workspace networks: Warren's bridge, address pool (IPAM), each workspace's veth and network
//! namespace, NAT, and the nftables rules that enforce egress policies. Warren's resolver and egress
//! proxy (`warren __netd`, crate `warren-netd`) run beside them and use `learn` and `nflog`.
//!
//! Layout under the runtime root (`STATE/workspaces`): `.net/config.json` (the `NetConfig` in use),
//! `.net/ipam/<address>` (one file per allocated address, holding the workspace id),
//! `.net/netd.sock` (the resolver's control socket), `.net/denials.jsonl` (the denial journal), and per
//! workspace `<id>/net.json` (`Attachment`) and `<id>/egress.json` (`EgressPlan`).

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use warren_api::net::{Checked, Ipv4Net, NetLimits};

/// A host's Warren network. One per runtime root; two Warren instances on a host need different
/// bridges, subnets and tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// The bridge's name (default `warren0`).
    pub bridge: String,
    /// The address pool; the bridge (gateway, resolver, proxy) takes its first host address.
    pub subnet: Ipv4Net,
    /// The nftables tables' name (`inet NAME` and `bridge NAME`).
    pub table: String,
    /// Upstream resolvers; empty means the host's `/etc/resolv.conf`.
    pub dns_upstream: Vec<SocketAddr>,
    /// Port of the egress proxy on the gateway address.
    pub proxy_port: u16,
    /// nflog group of denied connection attempts.
    pub log_group: u16,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            bridge: "warren0".into(),
            subnet: Ipv4Net {
                addr: Ipv4Addr::new(10, 213, 0, 0),
                prefix: 16,
            },
            table: "warren".into(),
            dns_upstream: Vec::new(),
            proxy_port: 15001,
            log_group: 2113,
        }
    }
}

impl NetConfig {
    /// The bridge's address: the gateway, resolver and proxy of every workspace.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.addr) + 1)
    }
}

/// What the control plane decides a workspace may reach: its stages (template's, then its own; a
/// connection or name must pass each) and the limits in force. Stored as `<id>/egress.json`; a
/// workspace without one reaches nothing but the resolver, which answers nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressPlan {
    /// The stages, in order.
    pub stages: Vec<Checked>,
    /// Bandwidth and connection limits.
    pub limits: NetLimits,
}

/// A workspace's place on the bridge (`<id>/net.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The workspace id.
    pub id: String,
    /// Its address (a /32 inside the workspace, routed through the gateway).
    pub address: Ipv4Addr,
    /// The host end of its veth pair.
    pub veth: String,
}

/// One record of the denial journal (`.net/denials.jsonl`), rate-limited by the resolver: the first
/// denial of a kind per workspace, destination and port in a minute is written at once, the rest of
/// that minute as one record with their `count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// When (RFC 3339, UTC): the first denial the record covers.
    pub time: String,
    /// Workspace id.
    pub workspace: String,
    /// `connect` (nftables refused a connection), `dns` (the resolver refused a name) or `proxy`
    /// (the egress proxy refused a Host header or TLS server name).
    pub kind: String,
    /// Destination address, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// Destination port, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `tcp`, `udp`, `icmp`... when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The name asked for (`dns`) or sent (`proxy`: Host or SNI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why: the deny rule, `protected:<range>`, `not allowed`, ...
    pub why: String,
    /// How many denials this record stands for.
    pub count: u64,
}

/// Counters of a workspace's network (from nftables and the resolver).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetCounters {
    /// Connection attempts nftables refused.
    pub denied_connections: u64,
}

mod choose;
pub use choose::{for_root, NetRequest};

/// Removes a gone instance's bridge and nftables tables (best effort).
pub(crate) fn remove_host_leftovers(bridge: &str) {
    let _ = std::process::Command::new("ip")
        .args(["link", "del", bridge])
        .stderr(std::process::Stdio::null())
        .status();
    for family in ["inet", "bridge"] {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", family, bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}
