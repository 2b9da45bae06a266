//! Network policies: what a workspace may reach.
//!
//! A policy (`NetworkPolicy`, the JSON a template's `network` and a workspace's own policy hold) has an
//! egress mode, allow and deny rules written as strings, and optional limits. `NetworkPolicy::check`
//! validates it into a `Checked` policy, refusing bad rules with a `RuleError` that names the rule.
//! A workspace's policy in force is a list of stages (its template's, then its own): a connection or a
//! name must pass every stage. The decisions (`Checked::name_verdict`, `Checked::addr_verdict`,
//! `protected`) are pure, shared by the server (validation), the runtime (compiling nftables rules) and
//! Warren's resolver and egress proxy.
//!
//! Rule syntax (`Rule::parse`): `ADDRESS[:PORTS]`, where ADDRESS is
//! - an IPv4 address (`203.0.113.7`) or CIDR (`10.1.0.0/16`), or
//! - a domain name, matched exactly (`github.com`), or a wildcard `*.example.com` that matches every
//!   name below `example.com` (at any depth) but not `example.com` itself, or
//! - `workspace:NAME`, another workspace of the same owner (the server turns it into that
//!   workspace's address);
//!
//! and PORTS is a port (`443`) or a range (`8000-8999`). Without PORTS a rule covers every port and
//! protocol; with PORTS it covers TCP and UDP to those ports.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// How a stage treats destinations no rule names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EgressMode {
    /// Everything but the deny rules and the protected ranges (`protected`) is allowed.
    #[default]
    #[serde(rename = "allow-all")]
    AllowAll,
    /// Nothing is allowed, not even name resolution; `allow` and `deny` must be empty.
    #[serde(rename = "deny-all")]
    DenyAll,
    /// Only what an allow rule names, minus what a deny rule names.
    #[serde(rename = "allowlist")]
    Allowlist,
}

/// A network policy as written (a template's `network`, a workspace's own policy, an API body).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// `allow-all` (default), `deny-all` or `allowlist`.
    #[serde(default)]
    pub egress: EgressMode,
    /// Allow rules. Under `allow-all` they only open protected ranges (an allow rule inside one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Deny rules; a deny beats an allow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Bandwidth limit of traffic leaving the workspace, in megabits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_mbit: Option<u32>,
    /// Bandwidth limit of traffic entering the workspace, in megabits per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_mbit: Option<u32>,
    /// Most connections the workspace may have open at once (tracked by the host's conntrack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

/// An inclusive port range (`lo == hi` for one port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

/// An IPv4 network: an address and a prefix length, with the host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ipv4Net {
    /// Network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

/// What a rule names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    /// An address or network.
    Net(Ipv4Net),
    /// A domain name, exactly (lower case, no trailing dot).
    Domain(String),
    /// Every name below this domain (`*.example.com` is stored as `example.com`).
    Wildcard(String),
    /// Another workspace, by name (resolved by the server to `Net` with `sibling` set).
    Workspace(String),
}

/// One parsed rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rule {
    /// The rule as the user wrote it (for errors and listings).
    pub text: String,
    /// What it names.
    pub target: Target,
    /// The ports it covers; `None` is every port and protocol.
    pub ports: Option<PortRange>,
    /// Set by the server when it resolved `workspace:NAME` into `Net`: the one kind of rule that may
    /// open Warren's own address pool.
    #[serde(default)]
    pub sibling: bool,
}

/// A validated policy: one stage of a workspace's policy in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checked {
    /// The mode.
    pub mode: EgressMode,
    /// Allow rules, in the order written.
    pub allow: Vec<Rule>,
    /// Deny rules, in the order written.
    pub deny: Vec<Rule>,
}

/// A policy's limits (the smallest of every stage's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetLimits {
    /// Megabits per second leaving the workspace.
    pub egress_mbit: Option<u32>,
    /// Megabits per second entering the workspace.
    pub ingress_mbit: Option<u32>,
    /// Connections open at once.
    pub max_connections: Option<u32>,
}

/// A bad rule or policy: which rule, what is wrong, and a hint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network rule `{rule}`: {message}")]
pub struct RuleError {
    /// The rule as written (or the field, for a policy-level problem such as `egress`).
    pub rule: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// A stage's decision about a domain name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameVerdict {
    /// A deny rule names it (or the mode is `deny-all`).
    Denied {
        /// The deny rule, or `None` for `deny-all` / not listed under `allowlist`.
        rule: Option<String>,
    },
    /// It may be resolved and reached: on every port (`ports` empty and `any_port`), or on the
    /// listed port ranges.
    Allowed {
        /// Reachable on every port.
        any_port: bool,
        /// Otherwise, these ports.
        ports: Vec<PortRange>,
    },
}

/// A stage's decision about a destination address and port (`None`: a protocol without ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrVerdict {
    /// Allowed by a CIDR/IP rule or by the mode.
    Allowed,
    /// Allowed only if a name an allowed domain rule matches resolved to it (the resolver knows).
    IfResolvedFor,
    /// Denied: by this rule, by the protected range named, or by the mode.
    Denied {
        /// Why, for logs: the deny rule, `protected:<range name>`, or `default`.
        why: String,
    },
}

/// The ranges denied by default, even under `allow-all`, unless an allow rule inside them opens them:
/// "this network", private (RFC 1918), shared address space (RFC 6598), loopback, link-local (with
/// cloud metadata at 169.254.169.254), multicast, reserved and broadcast. The host's own addresses and
/// Warren's address pool are protected too; the runtime adds those.
pub const PROTECTED: &[(Ipv4Net, &str)] = &[];

/// The protected range `ip` falls in, by name (`private`, `metadata`, ...).
pub fn protected(ip: Ipv4Addr) -> Option<&'static str> {
    let _ = ip;
    unimplemented!("skeleton: the warren-api net helper writes this")
}

impl Ipv4Net {
    /// Parses `A.B.C.D` (a /32) or `A.B.C.D/N`; host bits must be zero.
    pub fn parse(s: &str) -> Result<Ipv4Net, String> {
        let _ = s;
        unimplemented!("skeleton")
    }
    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let _ = ip;
        unimplemented!("skeleton")
    }
    /// Whether every address of `other` is inside.
    pub fn covers(&self, other: &Ipv4Net) -> bool {
        let _ = other;
        unimplemented!("skeleton")
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Rule {
    /// Parses one rule (see the module docs), refusing wildcard abuse (`*`, `*.com`, `*.co.uk`),
    /// bad CIDRs (host bits set, prefix > 32), bad names and ports.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let _ = text;
        unimplemented!("skeleton")
    }
    /// Whether this allow rule may open a protected range: its network lies inside one, or it is a
    /// resolved sibling workspace.
    pub fn opens_protected(&self) -> bool {
        unimplemented!("skeleton")
    }
}

impl NetworkPolicy {
    /// Validates the policy: every rule parses, `deny-all` has no rules, no rule repeats, and no allow
    /// rule is wholly covered by a deny rule (it could never take effect). The error names the rule.
    pub fn check(&self) -> Result<(Checked, NetLimits), RuleError> {
        unimplemented!("skeleton")
    }
}

impl Checked {
    /// This stage's decision about resolving and reaching `name` (lower case, no trailing dot).
    pub fn name_verdict(&self, name: &str) -> NameVerdict {
        let _ = name;
        unimplemented!("skeleton")
    }
    /// This stage's decision about a destination reached by address. `port` is `None` for
    /// protocols without ports. Protected ranges are denied unless an allow rule opens them.
    pub fn addr_verdict(&self, ip: Ipv4Addr, port: Option<u16>) -> AddrVerdict {
        let _ = (ip, port);
        unimplemented!("skeleton")
    }
    /// Whether any rule names a domain (so the resolver's answers and the egress proxy matter).
    pub fn has_domain_rules(&self) -> bool {
        unimplemented!("skeleton")
    }
}

impl NetLimits {
    /// The tighter of two stages' limits, field by field.
    pub fn min(self, other: NetLimits) -> NetLimits {
        let _ = other;
        unimplemented!("skeleton")
    }
}
