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
//! and PORTS is a port (`443`) or a range (`8000-8999`) of ports 1 to 65535. Without PORTS a rule
//! covers every port and protocol; with PORTS it covers TCP and UDP to those ports.
//!
//! Parsing trims the rule, lower-cases names and drops one trailing dot (`GitHub.com.` is
//! `github.com`). Names follow the LDH rules (labels of 1 to 63 letters, digits and hyphens, not
//! starting or ending with a hyphen, `_` allowed first as in `_dmarc`; 253 characters in all);
//! single-label names (`localhost`) are fine. Refused, each with a one-line hint: host bits set in a
//! CIDR (`10.1.2.3/16`: "did you mean 10.1.0.0/16?"), prefixes over 32, port 0, ranges that end
//! before they start, `*` anywhere but a leading `*.`, a bare `*`, a wildcard over a public suffix
//! (`*.com`, `*.co.uk`: see `is_public_suffix`, a conservative built-in approximation of the Public
//! Suffix List), and IPv6 (not supported yet).
//!
//! `NetworkPolicy::check` also refuses: rules under `deny-all`; a rule listed twice (same target and
//! ports, in one list or in both); an allow rule wholly covered by a deny rule (a deny beats an
//! allow, so it could never apply); under `allow-all`, an allow rule that opens no protected range
//! (it would change nothing); limits of 0.
//!
//! The decision for an address and port, per stage (`Checked::addr_verdict`): a matching deny rule
//! denies; else a matching allow rule that opens a protected range (`Rule::opens_protected`: its
//! network lies inside one of `PROTECTED`, or it is a resolved sibling workspace) allows; else a
//! protected address is denied; else `allow-all` allows; else a matching allow address rule allows;
//! else, under `allowlist` with an allow domain rule for that port, the address is allowed only if
//! such a name resolved to it (`AddrVerdict::IfResolvedFor`, the resolver's knowledge); else denied.
//! So `0.0.0.0/0:443` does not open `10.0.0.1:443`, while `10.0.0.0/8` opens `10.1.2.3`.
//!
//! The decision for a name (`Checked::name_verdict`): `deny-all` denies; a matching deny domain rule
//! without ports denies, one with ports takes those ports away; `allow-all` allows every port;
//! `allowlist` allows the union of the ports of the matching allow domain rules (every port if one
//! has no ports) and denies names no allow rule matches.

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
/// cloud metadata at 169.254.169.254), IETF protocol assignments, multicast, reserved and broadcast.
/// The host's own addresses and Warren's address pool are protected too; the runtime adds those.
///
/// Some entries lie inside others (`metadata` in `link-local`, `broadcast` in `reserved`): `protected`
/// names the narrowest. The documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) and
/// the benchmarking range (198.18.0.0/15) are not protected.
pub const PROTECTED: &[(Ipv4Net, &str)] = &[
    (net(0, 0, 0, 0, 8), "this-network"),
    (net(10, 0, 0, 0, 8), "private"),
    (net(100, 64, 0, 0, 10), "shared"),
    (net(127, 0, 0, 0, 8), "loopback"),
    (net(169, 254, 0, 0, 16), "link-local"),
    (net(169, 254, 169, 254, 32), "metadata"),
    (net(172, 16, 0, 0, 12), "private"),
    (net(192, 0, 0, 0, 24), "ietf-protocol"),
    (net(192, 168, 0, 0, 16), "private"),
    (net(224, 0, 0, 0, 4), "multicast"),
    (net(240, 0, 0, 0, 4), "reserved"),
    (net(255, 255, 255, 255, 32), "broadcast"),
];

const fn net(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net {
        addr: Ipv4Addr::new(a, b, c, d),
        prefix,
    }
}

/// The protected range `ip` falls in, by name (`private`, `metadata`, ...): the narrowest entry of
/// `PROTECTED` that contains it.
pub fn protected(ip: Ipv4Addr) -> Option<&'static str> {
    protected_range(ip).map(|(_, name)| name)
}

/// The narrowest entry of `PROTECTED` that contains `ip`.
pub fn protected_range(ip: Ipv4Addr) -> Option<(Ipv4Net, &'static str)> {
    PROTECTED
        .iter()
        .filter(|(range, _)| range.contains(ip))
        .max_by_key(|(range, _)| range.prefix)
        .copied()
}

/// Second-level labels that registries use under country-code top-level domains (`co.uk`,
/// `com.au`, `ac.jp`, ...). With every top-level domain, they make the public suffixes a wildcard
/// may not stand on (`is_public_suffix`): a small, conservative stand-in for the Public Suffix List,
/// which Warren does not ship. Shared-hosting suffixes such as `github.io` are not in it: a rule
/// `*.github.io` is taken as meant.
pub const SECOND_LEVEL_REGISTRIES: &[&str] = &[
    "ac", "biz", "co", "com", "edu", "gen", "go", "gob", "gov", "info", "ltd", "mil", "ne", "net",
    "nhs", "nic", "or", "org", "plc", "police", "sch",
];

/// Whether `domain` (lower case, no trailing dot) is a public suffix in Warren's approximation: a
/// single label (a top-level domain), or a label of `SECOND_LEVEL_REGISTRIES` under a two-letter
/// country code (`co.uk`).
pub fn is_public_suffix(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    match labels.as_slice() {
        [_] => true,
        [second, cc] => {
            cc.len() == 2
                && cc.bytes().all(|b| b.is_ascii_lowercase())
                && SECOND_LEVEL_REGISTRIES.contains(second)
        }
        _ => false,
    }
}

impl Ipv4Net {
    /// Parses `A.B.C.D` (a /32) or `A.B.C.D/N`; host bits must be zero.
    pub fn parse(s: &str) -> Result<Ipv4Net, String> {
        parse_net(s).map_err(|(message, hint)| match hint {
            Some(hint) => format!("{message} ({hint})"),
            None => message,
        })
    }
    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }
    /// Whether every address of `other` is inside.
    pub fn covers(&self, other: &Ipv4Net) -> bool {
        self.prefix <= other.prefix && self.contains(other.addr)
    }
    /// The last address inside.
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix))
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The netmask of a prefix length (0..=32) as a number.
fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

/// A parse problem: the message and a hint.
type Problem = (String, Option<String>);

fn parse_net(s: &str) -> Result<Ipv4Net, Problem> {
    let (addr_text, prefix_text) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: Ipv4Addr = addr_text.parse().map_err(|_| {
        (
            format!("`{addr_text}` is not an IPv4 address"),
            Some("write four numbers 0-255 separated by dots, e.g. 203.0.113.7".to_string()),
        )
    })?;
    let prefix = match prefix_text {
        None => 32,
        Some(p) => {
            let n = if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse::<u8>().ok()
            } else {
                None
            };
            match n {
                Some(n) if n <= 32 => n,
                _ => {
                    return Err((
                        format!("`/{p}` is not a prefix length"),
                        Some("a prefix length is 0 to 32, e.g. 10.0.0.0/8".to_string()),
                    ))
                }
            }
        }
    };
    let network = Ipv4Addr::from(u32::from(addr) & mask(prefix));
    if network != addr {
        return Err((
            format!("`{s}` has host bits set"),
            Some(format!("did you mean {network}/{prefix}?")),
        ));
    }
    Ok(Ipv4Net { addr, prefix })
}

impl PortRange {
    /// Whether `port` is inside.
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
    /// Whether every port of `other` is inside.
    pub fn covers(&self, other: &PortRange) -> bool {
        self.lo <= other.lo && other.hi <= self.hi
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

fn parse_ports(s: &str) -> Result<PortRange, Problem> {
    let hint = || Some("write a port (443) or a range (8000-8999) of ports 1 to 65535".to_string());
    let port = |p: &str| -> Option<u16> {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        p.parse::<u16>().ok().filter(|&n| n > 0)
    };
    let (lo_text, hi_text) = s.split_once('-').unwrap_or((s, s));
    match (port(lo_text), port(hi_text)) {
        (Some(lo), Some(hi)) if lo <= hi => Ok(PortRange { lo, hi }),
        (Some(lo), Some(hi)) => Err((
            format!("port range `{s}` ends before it starts"),
            Some(format!("did you mean {hi}-{lo}?")),
        )),
        _ => Err((format!("`{s}` is not a port or port range"), hint())),
    }
}

/// Checks a domain name (lower case, no trailing dot) label by label.
fn check_domain(name: &str) -> Result<(), Problem> {
    if let Some(c) = name.chars().find(|c| !c.is_ascii()) {
        return Err((
            format!("`{name}` contains {c:?}"),
            Some("write internationalized names in their ASCII (xn--) form".to_string()),
        ));
    }
    if name.len() > 253 {
        return Err((
            format!("the name is {} characters long", name.len()),
            Some("a domain name is at most 253 characters".to_string()),
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err((
                format!("`{name}` has an empty label"),
                Some("labels are separated by single dots, e.g. api.example.com".to_string()),
            ));
        }
        if label.len() > 63 {
            return Err((
                format!("the label `{label}` is {} characters long", label.len()),
                Some("a label is at most 63 characters".to_string()),
            ));
        }
        let body = label.strip_prefix('_').unwrap_or(label);
        if let Some(c) = body
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            let hint = if c == '*' {
                "a wildcard is `*.` in front of a domain, e.g. *.example.com"
            } else {
                "labels hold letters, digits and hyphens (and `_` first, as in _dmarc)"
            };
            return Err((
                format!("the label `{label}` contains {c:?}"),
                Some(hint.to_string()),
            ));
        }
        if body.is_empty() || body.starts_with('-') || body.ends_with('-') {
            return Err((
                format!("the label `{label}` starts or ends with a hyphen or is only `_`"),
                Some("a label starts and ends with a letter or digit".to_string()),
            ));
        }
    }
    Ok(())
}

fn rule_error(rule: &str, (message, hint): Problem) -> RuleError {
    RuleError {
        rule: rule.to_string(),
        message,
        hint,
    }
}

fn ipv6_problem() -> Problem {
    (
        "IPv6 is not supported yet".to_string(),
        Some("workspaces have IPv4 only; write an IPv4 address, CIDR or a domain name".to_string()),
    )
}

fn parse_target(address: &str) -> Result<Target, Problem> {
    if let Some(name) = address.strip_prefix("workspace:") {
        return crate::WorkspaceName::new(name)
            .map(|n| Target::Workspace(n.into_string()))
            .map_err(|e| {
                (
                    e.to_string(),
                    Some("write `workspace:NAME` with the name of one of your workspaces".into()),
                )
            });
    }
    if address.is_empty() {
        return Err((
            "the address is empty".to_string(),
            Some("write an IPv4 address, a CIDR, a domain name or workspace:NAME".to_string()),
        ));
    }
    if address.contains(':') || address.parse::<std::net::Ipv6Addr>().is_ok() {
        return Err(ipv6_problem());
    }
    let host = address.split('/').next().unwrap_or(address);
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return parse_net(address).map(Target::Net);
    }
    if address.contains('/') {
        return Err((
            format!("`{address}` is not an IPv4 network"),
            Some("write a CIDR as A.B.C.D/N, e.g. 10.1.0.0/16".to_string()),
        ));
    }
    let lower = address.to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    if name == "*" {
        return Err((
            "a bare `*` matches every name".to_string(),
            Some(
                "use `egress: allow-all` to allow everything, or name a domain: *.example.com"
                    .into(),
            ),
        ));
    }
    if let Some(base) = name.strip_prefix("*.") {
        if base.contains('*') {
            return Err((
                format!("`{address}` has more than one `*`"),
                Some("a wildcard is one `*.` in front of a domain, e.g. *.example.com".into()),
            ));
        }
        check_domain(base)?;
        if is_public_suffix(base) {
            return Err((
                format!("`*.{base}` matches every name under the public suffix `{base}`"),
                Some(format!("name a domain below it, e.g. *.example.{base}")),
            ));
        }
        return Ok(Target::Wildcard(base.to_string()));
    }
    if name.contains('*') {
        return Err((
            format!("`*` may only start a name, as `*.`: `{address}`"),
            Some("a wildcard is `*.` in front of a domain, e.g. *.example.com".into()),
        ));
    }
    check_domain(name)?;
    Ok(Target::Domain(name.to_string()))
}

impl Rule {
    /// Parses one rule (see the module docs), refusing wildcard abuse (`*`, `*.com`, `*.co.uk`),
    /// bad CIDRs (host bits set, prefix > 32), bad names and ports.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let trimmed = text.trim();
        let err = |p: Problem| rule_error(trimmed, p);
        if trimmed.is_empty() {
            return Err(err((
                "the rule is empty".to_string(),
                Some("write ADDRESS[:PORTS], e.g. github.com:443 or 10.1.0.0/16".to_string()),
            )));
        }
        // `workspace:` is the one prefix with a colon of its own; any other second colon is IPv6.
        let (prefix, rest) = match trimmed.get(..10) {
            Some(p) if p.eq_ignore_ascii_case("workspace:") => ("workspace:", &trimmed[10..]),
            _ => ("", trimmed),
        };
        if rest.matches(':').count() > 1 || rest.starts_with('[') {
            let ipv6 = prefix.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b":./[]-".contains(&b));
            return Err(err(if ipv6 {
                ipv6_problem()
            } else {
                (
                    "the rule has more than one `:`".to_string(),
                    Some("write ADDRESS[:PORTS], e.g. github.com:443".to_string()),
                )
            }));
        }
        let (address, ports) = match rest.split_once(':') {
            Some((a, p)) => (a, Some(parse_ports(p).map_err(err)?)),
            None => (rest, None),
        };
        let target = if prefix.is_empty() {
            parse_target(address)
        } else {
            parse_target(&format!("{prefix}{address}"))
        }
        .map_err(err)?;
        Ok(Rule {
            text: trimmed.to_string(),
            target,
            ports,
            sibling: false,
        })
    }
    /// Whether this allow rule may open a protected range: its network lies inside one, or it is a
    /// resolved sibling workspace. A `workspace:NAME` rule not resolved yet counts as one, since it
    /// will be.
    pub fn opens_protected(&self) -> bool {
        match &self.target {
            Target::Net(net) => {
                self.sibling || PROTECTED.iter().any(|(range, _)| range.covers(net))
            }
            Target::Workspace(_) => true,
            Target::Domain(_) | Target::Wildcard(_) => false,
        }
    }
    /// Whether the rule's ports cover `port` (`None`: a protocol without ports, which only a rule
    /// without ports covers).
    pub fn covers_port(&self, port: Option<u16>) -> bool {
        match (self.ports, port) {
            (None, _) => true,
            (Some(range), Some(port)) => range.contains(port),
            (Some(_), None) => false,
        }
    }
    /// Whether this is an address rule (`Net`) that names `ip` and `port`.
    pub fn matches_addr(&self, ip: Ipv4Addr, port: Option<u16>) -> bool {
        matches!(&self.target, Target::Net(net) if net.contains(ip)) && self.covers_port(port)
    }
    /// Whether this is a domain rule that names `name` (lower case, no trailing dot): the exact name,
    /// or a name strictly below a wildcard's domain.
    pub fn matches_name(&self, name: &str) -> bool {
        match &self.target {
            Target::Domain(d) => d == name,
            Target::Wildcard(base) => is_below(name, base),
            Target::Net(_) | Target::Workspace(_) => false,
        }
    }
    /// Whether it names a domain (exactly or by wildcard).
    pub fn is_domain(&self) -> bool {
        matches!(self.target, Target::Domain(_) | Target::Wildcard(_))
    }
    /// Whether every connection `other` names, this rule names too.
    fn covers_rule(&self, other: &Rule) -> bool {
        let ports = match (self.ports, other.ports) {
            (None, _) => true,
            (Some(mine), Some(theirs)) => mine.covers(&theirs),
            (Some(_), None) => false,
        };
        ports
            && match (&self.target, &other.target) {
                (Target::Net(mine), Target::Net(theirs)) => mine.covers(theirs),
                (Target::Domain(mine), Target::Domain(theirs)) => mine == theirs,
                (Target::Wildcard(base), Target::Domain(name)) => is_below(name, base),
                (Target::Wildcard(mine), Target::Wildcard(theirs)) => {
                    mine == theirs || is_below(theirs, mine)
                }
                (Target::Workspace(mine), Target::Workspace(theirs)) => mine == theirs,
                _ => false,
            }
    }
}

/// Whether `name` lies strictly below `base` (`a.b.example.com` below `example.com`).
fn is_below(name: &str, base: &str) -> bool {
    name.len() > base.len() + 1
        && name.ends_with(base)
        && name.as_bytes()[name.len() - base.len() - 1] == b'.'
}

impl NetworkPolicy {
    /// Validates the policy: every rule parses, `deny-all` has no rules, no rule repeats, and no allow
    /// rule is wholly covered by a deny rule (it could never take effect). Under `allow-all` an allow
    /// rule must open a protected range (otherwise it has no effect). Limits must be above zero.
    /// The error names the rule (or the field).
    pub fn check(&self) -> Result<(Checked, NetLimits), RuleError> {
        let allow = self
            .allow
            .iter()
            .map(|r| Rule::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        let deny = self
            .deny
            .iter()
            .map(|r| Rule::parse(r))
            .collect::<Result<Vec<_>, _>>()?;
        for (field, value) in [
            ("egress_mbit", self.egress_mbit),
            ("ingress_mbit", self.ingress_mbit),
            ("max_connections", self.max_connections),
        ] {
            if value == Some(0) {
                return Err(RuleError {
                    rule: field.to_string(),
                    message: "must be greater than 0".to_string(),
                    hint: Some(format!("leave `{field}` out for no limit")),
                });
            }
        }
        if self.egress == EgressMode::DenyAll {
            if let Some(rule) = allow.iter().chain(&deny).next() {
                return Err(RuleError {
                    rule: rule.text.clone(),
                    message: "deny-all takes no rules".to_string(),
                    hint: Some(
                        "remove the rules, or use `egress: allowlist` to allow what they name"
                            .to_string(),
                    ),
                });
            }
        }
        let same = |a: &Rule, b: &Rule| a.target == b.target && a.ports == b.ports;
        let as_written = |earlier: &Rule, later: &Rule| {
            if earlier.text == later.text {
                String::new()
            } else {
                format!(" (as `{}`)", earlier.text)
            }
        };
        for (list, what) in [(&allow, "allow"), (&deny, "deny")] {
            for (i, rule) in list.iter().enumerate() {
                if let Some(earlier) = list[..i].iter().find(|e| same(e, rule)) {
                    return Err(RuleError {
                        rule: rule.text.clone(),
                        message: format!("listed twice in {what}{}", as_written(earlier, rule)),
                        hint: Some("remove one of them".to_string()),
                    });
                }
            }
        }
        for rule in &allow {
            if let Some(d) = deny.iter().find(|d| same(d, rule)) {
                return Err(RuleError {
                    rule: rule.text.clone(),
                    message: format!(
                        "`{}` is both allowed and denied{}",
                        rule.text,
                        as_written(d, rule)
                    ),
                    hint: Some("remove it from one of the lists".to_string()),
                });
            }
        }
        if self.egress == EgressMode::AllowAll {
            if let Some(rule) = allow.iter().find(|r| !r.opens_protected()) {
                return Err(RuleError {
                    rule: rule.text.clone(),
                    message: "has no effect under allow-all".to_string(),
                    hint: Some(
                        "under allow-all, allow rules only open protected ranges; use \
                         `egress: allowlist`"
                            .to_string(),
                    ),
                });
            }
        }
        for rule in &allow {
            if let Some(d) = deny.iter().find(|d| d.covers_rule(rule)) {
                let how = match rule.target {
                    Target::Net(_) => "is inside",
                    _ => "is matched by",
                };
                return Err(RuleError {
                    rule: rule.text.clone(),
                    message: format!("conflict: `{}` {how} deny `{}`", rule.text, d.text),
                    hint: Some(
                        "a deny rule beats an allow rule, so this one never applies; remove one"
                            .to_string(),
                    ),
                });
            }
        }
        Ok((
            Checked {
                mode: self.egress,
                allow,
                deny,
            },
            NetLimits {
                egress_mbit: self.egress_mbit,
                ingress_mbit: self.ingress_mbit,
                max_connections: self.max_connections,
            },
        ))
    }
}

/// Sorts and merges port ranges (overlapping or adjacent ones become one).
fn merge_ports(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort();
    let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => last.hi = last.hi.max(r.hi),
            _ => merged.push(r),
        }
    }
    merged
}

/// `ranges` (sorted, merged) minus `holes`.
fn subtract_ports(ranges: &[PortRange], holes: &[PortRange]) -> Vec<PortRange> {
    let mut out = ranges.to_vec();
    for hole in holes {
        out = out
            .into_iter()
            .flat_map(|r| {
                let mut pieces = Vec::new();
                if hole.hi < r.lo || hole.lo > r.hi {
                    pieces.push(r);
                } else {
                    if hole.lo > r.lo {
                        pieces.push(PortRange {
                            lo: r.lo,
                            hi: hole.lo - 1,
                        });
                    }
                    if hole.hi < r.hi {
                        pieces.push(PortRange {
                            lo: hole.hi + 1,
                            hi: r.hi,
                        });
                    }
                }
                pieces
            })
            .collect();
    }
    out
}

const ALL_PORTS: PortRange = PortRange { lo: 1, hi: 65535 };

impl Checked {
    /// This stage's decision about resolving and reaching `name` (lower case, no trailing dot; other
    /// spellings are normalized).
    ///
    /// `deny-all` denies every name. A matching deny rule without ports denies the name; one with
    /// ports takes its ports away from what is allowed (the name is denied when nothing is left).
    /// Under `allow-all` the name is allowed on every port; under `allowlist` on the union of the
    /// ports of the matching allow domain rules (every port if one has none), or denied if none
    /// matches.
    pub fn name_verdict(&self, name: &str) -> NameVerdict {
        let lower = name.to_ascii_lowercase();
        let name = lower.strip_suffix('.').unwrap_or(&lower);
        if self.mode == EgressMode::DenyAll {
            return NameVerdict::Denied { rule: None };
        }
        let denies: Vec<&Rule> = self.deny.iter().filter(|r| r.matches_name(name)).collect();
        if let Some(rule) = denies.iter().find(|r| r.ports.is_none()) {
            return NameVerdict::Denied {
                rule: Some(rule.text.clone()),
            };
        }
        let (mut any_port, mut ports) = match self.mode {
            EgressMode::AllowAll => (true, Vec::new()),
            _ => {
                let allows: Vec<&Rule> =
                    self.allow.iter().filter(|r| r.matches_name(name)).collect();
                if allows.is_empty() {
                    return NameVerdict::Denied { rule: None };
                }
                let any = allows.iter().any(|r| r.ports.is_none());
                let ports = if any {
                    Vec::new()
                } else {
                    merge_ports(allows.iter().filter_map(|r| r.ports).collect())
                };
                (any, ports)
            }
        };
        if !denies.is_empty() {
            let holes = merge_ports(denies.iter().filter_map(|r| r.ports).collect());
            let from = if any_port { vec![ALL_PORTS] } else { ports };
            ports = subtract_ports(&from, &holes);
            any_port = false;
            if ports.is_empty() {
                return NameVerdict::Denied {
                    rule: Some(denies[0].text.clone()),
                };
            }
        }
        NameVerdict::Allowed { any_port, ports }
    }
    /// This stage's decision about a destination reached by address. `port` is `None` for
    /// protocols without ports. Protected ranges are denied unless an allow rule opens them.
    ///
    /// In order: a matching deny rule denies; a matching allow rule that opens a protected range
    /// allows; a protected address is denied; `allow-all` allows; a matching allow address rule
    /// allows; under `allowlist`, an allow domain rule covering the port makes it
    /// `IfResolvedFor`; anything else is denied.
    pub fn addr_verdict(&self, ip: Ipv4Addr, port: Option<u16>) -> AddrVerdict {
        if let Some(rule) = self.deny.iter().find(|r| r.matches_addr(ip, port)) {
            return AddrVerdict::Denied {
                why: rule.text.clone(),
            };
        }
        let allows = || self.allow.iter().filter(|r| r.matches_addr(ip, port));
        if allows().any(|r| r.opens_protected()) {
            return AddrVerdict::Allowed;
        }
        if let Some(name) = protected(ip) {
            return AddrVerdict::Denied {
                why: format!("protected:{name}"),
            };
        }
        match self.mode {
            EgressMode::DenyAll => AddrVerdict::Denied {
                why: "default".to_string(),
            },
            EgressMode::AllowAll => AddrVerdict::Allowed,
            EgressMode::Allowlist => {
                if allows().next().is_some() {
                    AddrVerdict::Allowed
                } else if self
                    .allow
                    .iter()
                    .any(|r| r.is_domain() && r.covers_port(port))
                {
                    AddrVerdict::IfResolvedFor
                } else {
                    AddrVerdict::Denied {
                        why: "default".to_string(),
                    }
                }
            }
        }
    }
    /// Whether any rule names a domain (so the resolver's answers and the egress proxy matter).
    pub fn has_domain_rules(&self) -> bool {
        self.allow.iter().chain(&self.deny).any(Rule::is_domain)
    }
    /// The rules that name domains, allow rules first.
    pub fn domain_rules(&self) -> impl Iterator<Item = &Rule> {
        self.allow
            .iter()
            .chain(&self.deny)
            .filter(|r| r.is_domain())
    }
}

impl NetLimits {
    /// The tighter of two stages' limits, field by field.
    pub fn min(self, other: NetLimits) -> NetLimits {
        fn tighter(a: Option<u32>, b: Option<u32>) -> Option<u32> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        NetLimits {
            egress_mbit: tighter(self.egress_mbit, other.egress_mbit),
            ingress_mbit: tighter(self.ingress_mbit, other.ingress_mbit),
            max_connections: tighter(self.max_connections, other.max_connections),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn rule(s: &str) -> Rule {
        Rule::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn target(s: &str) -> Target {
        rule(s).target
    }

    fn ports(lo: u16, hi: u16) -> Option<PortRange> {
        Some(PortRange { lo, hi })
    }

    /// Parses `s`, expecting an error that names the rule as written (trimmed) and says `needle`.
    fn bad(s: &str, needle: &str) -> RuleError {
        let e = Rule::parse(s).expect_err(s);
        assert_eq!(e.rule, s.trim(), "{e}");
        let full = format!("{e} {}", e.hint.clone().unwrap_or_default());
        assert!(full.contains(needle), "{s}: `{full}` lacks `{needle}`");
        assert!(!full.contains('\n'), "{full}");
        e
    }

    fn policy(mode: EgressMode, allow: &[&str], deny: &[&str]) -> NetworkPolicy {
        NetworkPolicy {
            egress: mode,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            ..NetworkPolicy::default()
        }
    }

    fn checked(mode: EgressMode, allow: &[&str], deny: &[&str]) -> Checked {
        policy(mode, allow, deny)
            .check()
            .unwrap_or_else(|e| panic!("{allow:?} {deny:?}: {e}"))
            .0
    }

    /// Checks the policy, expecting an error naming `rule` and saying `needle`.
    fn refused(p: NetworkPolicy, rule: &str, needle: &str) {
        let e = p.check().expect_err(rule);
        assert_eq!(e.rule, rule, "{e}");
        let full = format!("{e} {}", e.hint.clone().unwrap_or_default());
        assert!(full.contains(needle), "`{full}` lacks `{needle}`");
    }

    fn denied(why: &str) -> AddrVerdict {
        AddrVerdict::Denied { why: why.into() }
    }

    use EgressMode::{AllowAll, Allowlist, DenyAll};

    #[test]
    fn protected_ranges_by_name() {
        for (addr, name) in [
            ("0.1.2.3", "this-network"),
            ("10.1.2.3", "private"),
            ("100.64.0.1", "shared"),
            ("100.127.255.255", "shared"),
            ("127.0.0.1", "loopback"),
            ("169.254.1.1", "link-local"),
            ("169.254.169.254", "metadata"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "ietf-protocol"),
            ("192.168.1.1", "private"),
            ("224.0.0.251", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
        ] {
            assert_eq!(protected(ip(addr)), Some(name), "{addr}");
        }
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
            "223.255.255.255",
        ] {
            assert_eq!(protected(ip(addr)), None, "{addr}");
        }
        for (range, _) in PROTECTED {
            assert_eq!(Ipv4Net::parse(&range.to_string()), Ok(*range));
        }
    }

    #[test]
    fn ipv4_nets() {
        let n = Ipv4Net::parse("10.1.0.0/16").unwrap();
        assert_eq!(n.addr, ip("10.1.0.0"));
        assert_eq!(n.prefix, 16);
        assert!(n.contains(ip("10.1.255.255")));
        assert!(!n.contains(ip("10.2.0.0")));
        assert_eq!(n.last(), ip("10.1.255.255"));
        assert_eq!(Ipv4Net::parse("1.2.3.4").unwrap().prefix, 32);
        let all = Ipv4Net::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("255.255.255.255")));
        assert!(all.covers(&n));
        assert!(!n.covers(&all));
        assert!(n.covers(&n));
        assert!(n.covers(&Ipv4Net::parse("10.1.2.0/24").unwrap()));
        assert!(!n.covers(&Ipv4Net::parse("10.0.0.0/8").unwrap()));
        let e = Ipv4Net::parse("10.1.2.3/16").unwrap_err();
        assert!(e.contains("did you mean 10.1.0.0/16?"), "{e}");
        assert!(Ipv4Net::parse("10.0.0.0/33").is_err());
        assert!(Ipv4Net::parse("10.0.0.0/").is_err());
        assert!(Ipv4Net::parse("10.0.0/8").is_err());
        assert!(Ipv4Net::parse("256.0.0.0/8").is_err());
    }

    #[test]
    fn parses_addresses_and_ports() {
        let r = rule(" 203.0.113.7 ");
        assert_eq!(r.text, "203.0.113.7");
        assert_eq!(r.target, Target::Net(net(203, 0, 113, 7, 32)));
        assert_eq!(r.ports, None);
        assert!(!r.sibling);
        let r = rule("10.1.0.0/16:443");
        assert_eq!(r.target, Target::Net(net(10, 1, 0, 0, 16)));
        assert_eq!(r.ports, ports(443, 443));
        assert_eq!(rule("0.0.0.0/0:8000-8999").ports, ports(8000, 8999));
        assert_eq!(rule("1.2.3.4:1-65535").ports, ports(1, 65535));
        assert_eq!(rule("1.2.3.4:22-22").ports, ports(22, 22));
    }

    #[test]
    fn parses_names() {
        assert_eq!(target("github.com"), Target::Domain("github.com".into()));
        assert_eq!(target("GitHub.COM."), Target::Domain("github.com".into()));
        assert_eq!(target("localhost"), Target::Domain("localhost".into()));
        assert_eq!(
            target("_dmarc.example.com"),
            Target::Domain("_dmarc.example.com".into())
        );
        assert_eq!(
            target("xn--bcher-kva.example"),
            Target::Domain("xn--bcher-kva.example".into())
        );
        assert_eq!(
            target("*.example.com"),
            Target::Wildcard("example.com".into())
        );
        assert_eq!(
            target("*.Example.com."),
            Target::Wildcard("example.com".into())
        );
        assert_eq!(
            target("*.example.co.uk"),
            Target::Wildcard("example.co.uk".into())
        );
        assert_eq!(target("*.github.io"), Target::Wildcard("github.io".into()));
        assert_eq!(
            target("*.amazonaws.com"),
            Target::Wildcard("amazonaws.com".into())
        );
        let r = rule("api.github.com:443");
        assert_eq!(r.target, Target::Domain("api.github.com".into()));
        assert_eq!(r.ports, ports(443, 443));
        assert_eq!(rule("*.example.com.:80-81").ports, ports(80, 81));
        let long = format!("{}.com", "a".repeat(63));
        assert_eq!(target(&long), Target::Domain(long.clone()));
        let name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(name.len(), 253);
        assert_eq!(target(&name), Target::Domain(name.clone()));
    }

    #[test]
    fn parses_workspaces() {
        assert_eq!(target("workspace:db"), Target::Workspace("db".into()));
        let r = rule("workspace:api-2:8080");
        assert_eq!(r.target, Target::Workspace("api-2".into()));
        assert_eq!(r.ports, ports(8080, 8080));
        bad("workspace:", "empty");
        bad("workspace:Db", "workspace:NAME");
        bad("workspace:2db", "does not start with a letter");
        bad("workspace:db-", "ends with '-'");
        bad("workspace:db_1", "contains");
        bad("workspace:db:0", "not a port");
    }

    #[test]
    fn refuses_bad_addresses() {
        bad("", "empty");
        bad("   ", "empty");
        bad("10.1.2.3/16", "did you mean 10.1.0.0/16?");
        bad("10.1.2.3/16:443", "did you mean 10.1.0.0/16?");
        bad("10.0.0.0/33", "0 to 32");
        bad("10.0.0.0/", "prefix length");
        bad("10.0.0.0/8/8", "prefix length");
        bad("10.0.0.0/-1", "prefix length");
        bad("256.1.1.1", "not an IPv4 address");
        bad("1.2.3", "not an IPv4 address");
        bad("1.2.3.4.5", "not an IPv4 address");
        bad("01.2.3.4", "not an IPv4 address");
        bad("example.com/24", "CIDR");
        bad("::1", "IPv6 is not supported yet");
        bad("fe80::/10", "IPv6 is not supported yet");
        bad("2001:db8::1", "IPv6 is not supported yet");
        bad("[2001:db8::1]:443", "IPv6 is not supported yet");
        bad("::ffff:10.0.0.1", "IPv6 is not supported yet");
        bad(":443", "address is empty");
        bad("example.com:443:80", "more than one `:`");
        bad("workspace:db:1:2", "more than one `:`");
    }

    #[test]
    fn refuses_bad_ports() {
        bad("1.2.3.4:", "not a port");
        bad("1.2.3.4:0", "1 to 65535");
        bad("1.2.3.4:65536", "not a port");
        bad("1.2.3.4:99999999999", "not a port");
        bad("1.2.3.4:http", "not a port");
        bad("1.2.3.4:+443", "not a port");
        bad("1.2.3.4: 443", "not a port");
        bad("1.2.3.4:9000-8000", "did you mean 8000-9000?");
        bad("1.2.3.4:80-", "not a port");
        bad("1.2.3.4:-80", "not a port");
        bad("1.2.3.4:1-2-3", "not a port");
        bad("example.com:0-10", "not a port");
    }

    #[test]
    fn refuses_bad_names() {
        bad("*", "allow-all");
        bad("*.", "allow-all");
        bad("*:443", "allow-all");
        bad("*.com", "public suffix `com`");
        bad("*.COM.", "public suffix `com`");
        bad("*.co.uk", "public suffix `co.uk`");
        bad("*.com.au", "public suffix `com.au`");
        bad("*.ac.jp", "public suffix");
        bad("*.co.uk", "*.example.co.uk");
        bad("*.*.example.com", "more than one");
        bad("a.*.com", "may only start");
        bad("*foo.com", "may only start");
        bad("foo*.com", "may only start");
        bad("**.example.com", "may only start");
        bad("a..b", "empty label");
        bad(".example.com", "empty label");
        bad("example.com..", "empty label");
        bad("-a.example.com", "hyphen");
        bad("a-.example.com", "hyphen");
        bad("_.example.com", "only `_`");
        bad("a_b.example.com", "contains '_'");
        bad("exa mple.com", "contains ' '");
        bad("exämple.com", "xn--");
        bad("ex!ample.com", "contains '!'");
        bad(&format!("{}.com", "a".repeat(64)), "at most 63");
        let name = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(62),
        ]
        .join(".");
        bad(&name, "at most 253");
    }

    #[test]
    fn public_suffixes() {
        for s in [
            "com",
            "io",
            "uk",
            "co.uk",
            "com.au",
            "gov.br",
            "ac.jp",
            "police.uk",
        ] {
            assert!(is_public_suffix(s), "{s}");
        }
        for s in [
            "example.com",
            "github.io",
            "co.com",
            "co.example",
            "example.co.uk",
        ] {
            assert!(!is_public_suffix(s), "{s}");
        }
    }

    #[test]
    fn opens_protected() {
        for s in [
            "10.0.0.0/8",
            "10.1.2.3",
            "10.1.0.0/16:5432",
            "169.254.169.254",
            "169.254.0.0/16",
            "127.0.0.1:8080",
            "192.168.1.0/24",
            "224.0.0.251",
            "0.0.0.0/8",
            "workspace:db",
        ] {
            assert!(rule(s).opens_protected(), "{s}");
        }
        for s in [
            "0.0.0.0/0",
            "0.0.0.0/0:443",
            "8.0.0.0/5",
            "172.0.0.0/8",
            "203.0.113.7",
            "example.com",
            "*.example.com",
        ] {
            assert!(!rule(s).opens_protected(), "{s}");
        }
        let mut sibling = rule("198.51.100.3");
        assert!(!sibling.opens_protected());
        sibling.sibling = true;
        assert!(sibling.opens_protected());
    }

    #[test]
    fn check_gives_rules_and_limits() {
        let p = NetworkPolicy {
            egress: Allowlist,
            allow: vec!["GitHub.com:443".into(), "10.1.0.0/16".into()],
            deny: vec!["10.1.2.0/24".into()],
            egress_mbit: Some(100),
            ingress_mbit: None,
            max_connections: Some(512),
        };
        let (c, limits) = p.check().unwrap();
        assert_eq!(c.mode, Allowlist);
        assert_eq!(c.allow, vec![rule("GitHub.com:443"), rule("10.1.0.0/16")]);
        assert_eq!(c.deny, vec![rule("10.1.2.0/24")]);
        assert_eq!(
            limits,
            NetLimits {
                egress_mbit: Some(100),
                ingress_mbit: None,
                max_connections: Some(512)
            }
        );
        let (c, limits) = NetworkPolicy::default().check().unwrap();
        assert_eq!(c.mode, AllowAll);
        assert_eq!(limits, NetLimits::default());
        assert!(checked(DenyAll, &[], &[]).allow.is_empty());
        // A policy from JSON.
        let p: NetworkPolicy = serde_json::from_str(
            r#"{"egress":"allowlist","allow":["*.example.com:443"],"max_connections":10}"#,
        )
        .unwrap();
        assert_eq!(
            p.check().unwrap().0.allow[0].target,
            Target::Wildcard("example.com".into())
        );
        assert!(serde_json::from_str::<NetworkPolicy>(r#"{"egress":"open"}"#).is_err());
        assert!(serde_json::from_str::<NetworkPolicy>(r#"{"alow":[]}"#).is_err());
    }

    #[test]
    fn check_refuses_bad_rules_naming_them() {
        refused(
            policy(Allowlist, &["github.com", "*.com"], &[]),
            "*.com",
            "public suffix",
        );
        refused(
            policy(Allowlist, &[], &["10.0.0.1/8"]),
            "10.0.0.1/8",
            "did you mean 10.0.0.0/8?",
        );
    }

    #[test]
    fn check_refuses_zero_limits() {
        for field in ["egress_mbit", "ingress_mbit", "max_connections"] {
            let mut p = NetworkPolicy::default();
            match field {
                "egress_mbit" => p.egress_mbit = Some(0),
                "ingress_mbit" => p.ingress_mbit = Some(0),
                _ => p.max_connections = Some(0),
            }
            refused(p, field, "greater than 0");
        }
    }

    #[test]
    fn check_refuses_rules_under_deny_all() {
        refused(
            policy(DenyAll, &["github.com"], &[]),
            "github.com",
            "deny-all takes no rules",
        );
        refused(
            policy(DenyAll, &[], &["1.2.3.4"]),
            "1.2.3.4",
            "deny-all takes no rules",
        );
        refused(
            policy(DenyAll, &["a.example", "b.example"], &["c.example"]),
            "a.example",
            "allowlist",
        );
    }

    #[test]
    fn check_refuses_duplicates() {
        refused(
            policy(Allowlist, &["github.com", "GitHub.com."], &[]),
            "GitHub.com.",
            "listed twice",
        );
        refused(
            policy(Allowlist, &["github.com"], &["github.com"]),
            "github.com",
            "both allowed and denied",
        );
        refused(
            policy(AllowAll, &[], &["1.2.3.4", "1.2.3.4/32"]),
            "1.2.3.4/32",
            "listed twice",
        );
        refused(
            policy(Allowlist, &["1.2.3.4:443"], &["1.2.3.4/32:443"]),
            "1.2.3.4:443",
            "both allowed and denied",
        );
        refused(
            policy(Allowlist, &["workspace:db", "workspace:db"], &[]),
            "workspace:db",
            "listed twice",
        );
        // Same target, other ports: not a duplicate.
        checked(
            Allowlist,
            &["github.com:443", "github.com:22"],
            &["github.com:80"],
        );
    }

    #[test]
    fn check_refuses_allows_covered_by_denies() {
        refused(
            policy(Allowlist, &["10.1.0.0/16"], &["10.0.0.0/8"]),
            "10.1.0.0/16",
            "conflict: `10.1.0.0/16` is inside deny `10.0.0.0/8`",
        );
        refused(
            policy(Allowlist, &["10.1.0.0/16:443"], &["10.0.0.0/8"]),
            "10.1.0.0/16:443",
            "deny `10.0.0.0/8`",
        );
        refused(
            policy(Allowlist, &["10.1.0.0/16:443"], &["10.0.0.0/8:1-1000"]),
            "10.1.0.0/16:443",
            "conflict",
        );
        refused(
            policy(Allowlist, &["api.example.com"], &["*.example.com"]),
            "api.example.com",
            "matched by deny `*.example.com`",
        );
        refused(
            policy(Allowlist, &["*.api.example.com"], &["*.example.com"]),
            "*.api.example.com",
            "conflict",
        );
        refused(
            policy(Allowlist, &["*.example.com:443"], &["*.example.com"]),
            "*.example.com:443",
            "conflict",
        );
        refused(
            policy(Allowlist, &["example.com:443"], &["example.com"]),
            "example.com:443",
            "conflict",
        );
        refused(
            policy(Allowlist, &["workspace:db:5432"], &["workspace:db"]),
            "workspace:db:5432",
            "conflict",
        );
        // Partly covered: fine.
        checked(Allowlist, &["10.0.0.0/8"], &["10.1.0.0/16"]);
        checked(Allowlist, &["10.1.0.0/16"], &["10.0.0.0/8:22"]);
        checked(Allowlist, &["10.1.0.0/16:20-30"], &["10.0.0.0/8:22"]);
        checked(Allowlist, &["*.example.com"], &["api.example.com"]);
        checked(Allowlist, &["example.com"], &["*.example.com"]);
        checked(Allowlist, &["*.example.com"], &["*.api.example.com"]);
        checked(Allowlist, &["example.com"], &["example.com:22"]);
    }

    #[test]
    fn check_refuses_allows_without_effect_under_allow_all() {
        for r in [
            "0.0.0.0/0:443",
            "203.0.113.7",
            "github.com",
            "*.example.com",
            "172.0.0.0/8",
        ] {
            refused(policy(AllowAll, &[r], &[]), r, "use `egress: allowlist`");
        }
        let c = checked(
            AllowAll,
            &["10.0.0.0/8", "169.254.169.254", "workspace:db"],
            &["workspace:x"],
        );
        assert_eq!(c.allow.len(), 3);
        checked(
            AllowAll,
            &[],
            &["github.com", "*.example.com", "10.0.0.0/8", "0.0.0.0/0:25"],
        );
    }

    #[test]
    fn addr_verdicts_allow_all() {
        let c = checked(AllowAll, &[], &["203.0.113.0/24:25", "198.51.100.7"]);
        assert_eq!(
            c.addr_verdict(ip("1.1.1.1"), Some(443)),
            AddrVerdict::Allowed
        );
        assert_eq!(c.addr_verdict(ip("1.1.1.1"), None), AddrVerdict::Allowed);
        assert_eq!(
            c.addr_verdict(ip("203.0.113.9"), Some(443)),
            AddrVerdict::Allowed
        );
        assert_eq!(
            c.addr_verdict(ip("203.0.113.9"), Some(25)),
            denied("203.0.113.0/24:25")
        );
        assert_eq!(
            c.addr_verdict(ip("203.0.113.9"), None),
            AddrVerdict::Allowed
        );
        assert_eq!(
            c.addr_verdict(ip("198.51.100.7"), None),
            denied("198.51.100.7")
        );
        assert_eq!(
            c.addr_verdict(ip("10.0.0.1"), Some(443)),
            denied("protected:private")
        );
        assert_eq!(
            c.addr_verdict(ip("169.254.169.254"), Some(80)),
            denied("protected:metadata")
        );
        assert_eq!(
            c.addr_verdict(ip("127.0.0.1"), Some(22)),
            denied("protected:loopback")
        );
        assert_eq!(
            c.addr_verdict(ip("255.255.255.255"), None),
            denied("protected:broadcast")
        );
    }

    #[test]
    fn protected_ranges_open_only_from_inside() {
        let c = checked(Allowlist, &["0.0.0.0/0:443"], &[]);
        assert_eq!(
            c.addr_verdict(ip("1.1.1.1"), Some(443)),
            AddrVerdict::Allowed
        );
        assert_eq!(c.addr_verdict(ip("1.1.1.1"), Some(80)), denied("default"));
        assert_eq!(
            c.addr_verdict(ip("10.0.0.1"), Some(443)),
            denied("protected:private")
        );
        assert_eq!(
            c.addr_verdict(ip("169.254.169.254"), Some(443)),
            denied("protected:metadata")
        );

        let c = checked(AllowAll, &["10.0.0.0/8"], &[]);
        assert_eq!(
            c.addr_verdict(ip("10.1.2.3"), Some(5432)),
            AddrVerdict::Allowed
        );
        assert_eq!(c.addr_verdict(ip("10.1.2.3"), None), AddrVerdict::Allowed);
        assert_eq!(
            c.addr_verdict(ip("192.168.0.1"), None),
            denied("protected:private")
        );
        assert_eq!(
            c.addr_verdict(ip("169.254.169.254"), None),
            denied("protected:metadata")
        );

        let c = checked(AllowAll, &["169.254.169.254"], &[]);
        assert_eq!(
            c.addr_verdict(ip("169.254.169.254"), Some(80)),
            AddrVerdict::Allowed
        );
        assert_eq!(
            c.addr_verdict(ip("169.254.169.253"), Some(80)),
            denied("protected:link-local")
        );

        let c = checked(Allowlist, &["10.1.0.0/16:5432"], &[]);
        assert_eq!(
            c.addr_verdict(ip("10.1.9.9"), Some(5432)),
            AddrVerdict::Allowed
        );
        assert_eq!(
            c.addr_verdict(ip("10.1.9.9"), Some(5433)),
            denied("protected:private")
        );
        assert_eq!(
            c.addr_verdict(ip("10.1.9.9"), None),
            denied("protected:private")
        );

        // A resolved sibling opens its address; an unresolved workspace rule matches nothing.
        let mut c = checked(AllowAll, &["workspace:db"], &[]);
        assert_eq!(
            c.addr_verdict(ip("10.213.0.9"), Some(5432)),
            denied("protected:private")
        );
        c.allow[0].target = Target::Net(net(10, 213, 0, 9, 32));
        c.allow[0].sibling = true;
        assert_eq!(
            c.addr_verdict(ip("10.213.0.9"), Some(5432)),
            AddrVerdict::Allowed
        );
    }

    #[test]
    fn addr_verdicts_allowlist_and_deny_all() {
        let c = checked(
            Allowlist,
            &["203.0.113.0/24:8000-8999", "198.51.100.7", "github.com:443"],
            &["203.0.113.66"],
        );
        assert_eq!(
            c.addr_verdict(ip("203.0.113.5"), Some(8000)),
            AddrVerdict::Allowed
        );
        assert_eq!(
            c.addr_verdict(ip("203.0.113.5"), Some(8999)),
            AddrVerdict::Allowed
        );
        assert_eq!(
            c.addr_verdict(ip("203.0.113.5"), Some(9000)),
            denied("default")
        );
        assert_eq!(
            c.addr_verdict(ip("203.0.113.5"), Some(443)),
            AddrVerdict::IfResolvedFor
        );
        assert_eq!(
            c.addr_verdict(ip("203.0.113.66"), Some(8080)),
            denied("203.0.113.66")
        );
        assert_eq!(
            c.addr_verdict(ip("203.0.113.66"), Some(443)),
            denied("203.0.113.66")
        );
        assert_eq!(
            c.addr_verdict(ip("198.51.100.7"), None),
            AddrVerdict::Allowed
        );
        assert_eq!(c.addr_verdict(ip("1.1.1.1"), None), denied("default"));
        assert_eq!(
            c.addr_verdict(ip("1.1.1.1"), Some(443)),
            AddrVerdict::IfResolvedFor
        );
        assert_eq!(
            c.addr_verdict(ip("10.0.0.1"), Some(443)),
            denied("protected:private")
        );
        let c = checked(Allowlist, &["github.com"], &[]);
        assert_eq!(
            c.addr_verdict(ip("1.1.1.1"), None),
            AddrVerdict::IfResolvedFor
        );
        let c = checked(Allowlist, &[], &[]);
        assert_eq!(c.addr_verdict(ip("1.1.1.1"), Some(443)), denied("default"));
        let c = checked(DenyAll, &[], &[]);
        assert_eq!(c.addr_verdict(ip("1.1.1.1"), Some(443)), denied("default"));
        assert_eq!(
            c.addr_verdict(ip("10.0.0.1"), None),
            denied("protected:private")
        );
    }

    #[test]
    fn deny_beats_allow() {
        let c = checked(
            AllowAll,
            &["10.0.0.0/8"],
            &["10.9.0.0/16", "10.1.0.0/16:22"],
        );
        assert_eq!(
            c.addr_verdict(ip("10.9.1.1"), Some(443)),
            denied("10.9.0.0/16")
        );
        assert_eq!(
            c.addr_verdict(ip("10.1.1.1"), Some(22)),
            denied("10.1.0.0/16:22")
        );
        assert_eq!(
            c.addr_verdict(ip("10.1.1.1"), Some(23)),
            AddrVerdict::Allowed
        );
        assert_eq!(c.addr_verdict(ip("10.1.1.1"), None), AddrVerdict::Allowed);
        let c = checked(
            Allowlist,
            &["*.example.com", "0.0.0.0/0:443"],
            &["bad.example.com", "203.0.113.0/24"],
        );
        assert_eq!(
            c.addr_verdict(ip("203.0.113.1"), Some(443)),
            denied("203.0.113.0/24")
        );
        assert_eq!(
            c.name_verdict("bad.example.com"),
            NameVerdict::Denied {
                rule: Some("bad.example.com".into())
            }
        );
    }

    fn any() -> NameVerdict {
        NameVerdict::Allowed {
            any_port: true,
            ports: vec![],
        }
    }

    fn only(list: &[(u16, u16)]) -> NameVerdict {
        NameVerdict::Allowed {
            any_port: false,
            ports: list.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect(),
        }
    }

    fn name_denied(rule: Option<&str>) -> NameVerdict {
        NameVerdict::Denied {
            rule: rule.map(String::from),
        }
    }

    #[test]
    fn name_verdicts_by_mode() {
        let c = checked(AllowAll, &[], &["*.tracker.example", "evil.example"]);
        assert_eq!(c.name_verdict("github.com"), any());
        assert_eq!(
            c.name_verdict("evil.example"),
            name_denied(Some("evil.example"))
        );
        assert_eq!(
            c.name_verdict("EVIL.example."),
            name_denied(Some("evil.example"))
        );
        assert_eq!(c.name_verdict("a.evil.example"), any());
        assert_eq!(
            c.name_verdict("x.y.tracker.example"),
            name_denied(Some("*.tracker.example"))
        );
        assert_eq!(c.name_verdict("tracker.example"), any());
        let c = checked(DenyAll, &[], &[]);
        assert_eq!(c.name_verdict("github.com"), name_denied(None));
        let c = checked(Allowlist, &["github.com", "10.0.0.0/8"], &[]);
        assert_eq!(c.name_verdict("github.com"), any());
        assert_eq!(c.name_verdict("api.github.com"), name_denied(None));
        assert_eq!(c.name_verdict("gitlab.com"), name_denied(None));
        assert_eq!(c.name_verdict("10.0.0.1"), name_denied(None));
    }

    #[test]
    fn wildcards_match_any_depth_below_but_not_the_base() {
        let c = checked(Allowlist, &["*.example.com"], &[]);
        assert_eq!(c.name_verdict("a.example.com"), any());
        assert_eq!(c.name_verdict("a.b.c.example.com"), any());
        assert_eq!(c.name_verdict("example.com"), name_denied(None));
        assert_eq!(c.name_verdict("badexample.com"), name_denied(None));
        assert_eq!(c.name_verdict("example.com.evil.net"), name_denied(None));
        assert_eq!(c.name_verdict(".example.com"), name_denied(None));
    }

    #[test]
    fn name_ports_are_the_union_of_matching_rules() {
        let c = checked(
            Allowlist,
            &[
                "*.example.com:443",
                "api.example.com:8000-8999",
                "api.example.com:80",
                "git.example.com:22",
                "*.example.com:444",
            ],
            &[],
        );
        assert_eq!(
            c.name_verdict("api.example.com"),
            only(&[(80, 80), (443, 444), (8000, 8999)])
        );
        assert_eq!(c.name_verdict("www.example.com"), only(&[(443, 444)]));
        let c = checked(Allowlist, &["*.example.com:443", "api.example.com"], &[]);
        assert_eq!(c.name_verdict("api.example.com"), any());
        // A deny rule with ports takes its ports away.
        let c = checked(
            Allowlist,
            &["*.example.com:80-90"],
            &["*.internal.example.com:85"],
        );
        assert_eq!(
            c.name_verdict("a.internal.example.com"),
            only(&[(80, 84), (86, 90)])
        );
        let c = checked(AllowAll, &[], &["example.com:25"]);
        assert_eq!(c.name_verdict("example.com"), only(&[(1, 24), (26, 65535)]));
        let c = checked(Allowlist, &["*.example.com:443"], &["a.example.com:1-1000"]);
        assert_eq!(
            c.name_verdict("a.example.com"),
            name_denied(Some("a.example.com:1-1000"))
        );
    }

    #[test]
    fn domain_rules() {
        assert!(!checked(AllowAll, &["10.0.0.0/8"], &["1.2.3.4"]).has_domain_rules());
        assert!(checked(AllowAll, &[], &["example.com"]).has_domain_rules());
        let c = checked(
            Allowlist,
            &["*.example.com", "1.2.3.4"],
            &["bad.example.com"],
        );
        assert!(c.has_domain_rules());
        let texts: Vec<&str> = c.domain_rules().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, ["*.example.com", "bad.example.com"]);
        assert!(!checked(DenyAll, &[], &[]).has_domain_rules());
    }

    #[test]
    fn limits_min() {
        let a = NetLimits {
            egress_mbit: Some(10),
            ingress_mbit: None,
            max_connections: Some(100),
        };
        let b = NetLimits {
            egress_mbit: Some(20),
            ingress_mbit: Some(5),
            max_connections: None,
        };
        let m = NetLimits {
            egress_mbit: Some(10),
            ingress_mbit: Some(5),
            max_connections: Some(100),
        };
        assert_eq!(a.min(b), m);
        assert_eq!(b.min(a), m);
        assert_eq!(a.min(NetLimits::default()), a);
        assert_eq!(
            NetLimits::default().min(NetLimits::default()),
            NetLimits::default()
        );
    }

    #[test]
    fn checked_round_trips_through_json() {
        let c = checked(
            Allowlist,
            &["*.example.com:443", "10.0.0.0/8"],
            &["workspace:x"],
        );
        let back: Checked = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    /// xorshift64*: a small deterministic generator (no randomness crate needed).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len() as u64) as usize]
        }
    }

    #[test]
    fn parse_never_panics_on_random_text() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let alphabet: Vec<char> = "0123456789./:-*_abcxyzABC[]  workspace:é\u{0}\n-65535"
            .chars()
            .collect();
        for _ in 0..50_000 {
            let len = rng.below(24) as usize;
            let text: String = (0..len).map(|_| *rng.pick(&alphabet)).collect();
            match Rule::parse(&text) {
                Ok(r) => {
                    // What parses parses again the same way, from its own text.
                    assert_eq!(Rule::parse(&r.text).as_ref(), Ok(&r), "{text:?}");
                }
                Err(e) => {
                    assert_eq!(e.rule, text.trim());
                    assert!(!e.message.contains('\n') || text.contains('\n'), "{e:?}");
                }
            }
        }
    }

    fn random_net(rng: &mut Rng) -> Ipv4Net {
        // Addresses mostly near the protected ranges' edges and the documentation ranges.
        let bases = [
            "0.0.0.0",
            "10.0.0.0",
            "10.1.0.0",
            "100.64.0.0",
            "127.0.0.0",
            "169.254.169.254",
            "169.254.0.0",
            "172.16.0.0",
            "172.31.0.0",
            "192.0.0.0",
            "192.168.1.0",
            "203.0.113.0",
            "198.51.100.0",
            "224.0.0.0",
            "240.0.0.0",
            "255.255.255.255",
            "8.8.8.8",
            "1.1.1.1",
        ];
        let base = *rng.pick::<&str>(&bases);
        let base = u32::from(ip(base)) ^ (rng.below(4) as u32 * rng.below(1 << 20) as u32);
        let prefix = *rng.pick(&[0u8, 1, 4, 5, 8, 10, 12, 15, 16, 20, 24, 28, 31, 32, 32, 32]);
        Ipv4Net {
            addr: Ipv4Addr::from(base & mask(prefix)),
            prefix,
        }
    }

    fn random_rule(rng: &mut Rng) -> String {
        let ports = match rng.below(4) {
            0 => format!(":{}", rng.pick(&[22u16, 53, 80, 443, 5432, 8080])),
            1 => {
                let lo = rng.below(1000) as u16 + 1;
                format!(":{lo}-{}", lo + rng.below(9000) as u16)
            }
            _ => String::new(),
        };
        let address = match rng.below(8) {
            0 => rng
                .pick(&[
                    "example.com",
                    "api.example.com",
                    "*.example.com",
                    "*.a.example.com",
                ])
                .to_string(),
            1 => format!("workspace:{}", rng.pick(&["db", "web"])),
            _ => random_net(rng).to_string(),
        };
        format!("{address}{ports}")
    }

    fn random_addr(rng: &mut Rng) -> Ipv4Addr {
        let n = random_net(rng);
        let span = if n.prefix == 0 {
            u32::MAX
        } else {
            !mask(n.prefix)
        };
        Ipv4Addr::from(u32::from(n.addr) | (rng.next() as u32 & span))
    }

    /// Over random policies and destinations: a protected address is allowed only through an allow
    /// rule inside its range (or a sibling), and never when a deny rule names it.
    #[test]
    fn property_protected_and_denied_addresses_stay_closed() {
        let mut rng = Rng(0x0DDB_1A5E_5BAD_5EED);
        let mut checked_policies = 0;
        let mut allowed_protected = 0;
        for _ in 0..4000 {
            let mode = *rng.pick(&[AllowAll, Allowlist, Allowlist, DenyAll]);
            let allow: Vec<String> = (0..rng.below(4)).map(|_| random_rule(&mut rng)).collect();
            let deny: Vec<String> = (0..rng.below(3)).map(|_| random_rule(&mut rng)).collect();
            let p = NetworkPolicy {
                egress: mode,
                allow,
                deny,
                ..NetworkPolicy::default()
            };
            let Ok((c, _)) = p.check() else { continue };
            checked_policies += 1;
            for _ in 0..50 {
                let addr = random_addr(&mut rng);
                let port = match rng.below(3) {
                    0 => None,
                    1 => Some(*rng.pick(&[22u16, 53, 80, 443, 5432, 8080])),
                    _ => Some(rng.below(65535) as u16 + 1),
                };
                let verdict = c.addr_verdict(addr, port);
                let open = verdict != denied_any(&verdict);
                if c.deny.iter().any(|r| r.matches_addr(addr, port)) {
                    assert!(!open, "{p:?} {addr} {port:?}: {verdict:?}");
                }
                if let Some((range, name)) = protected_range(addr) {
                    if open {
                        allowed_protected += 1;
                        assert_eq!(verdict, AddrVerdict::Allowed, "{p:?} {addr}");
                        let inside = c.allow.iter().any(|r| {
                            r.matches_addr(addr, port)
                                && matches!(&r.target, Target::Net(n) if inside_protected(addr, n))
                        });
                        assert!(inside, "{p:?} opened {addr} ({name} {range}) {port:?}");
                    } else if verdict == denied(&format!("protected:{name}")) {
                        assert!(!c
                            .allow
                            .iter()
                            .any(|r| r.matches_addr(addr, port) && r.opens_protected()));
                    }
                }
                if c.mode == DenyAll {
                    assert!(!open, "{p:?}");
                }
            }
        }
        assert!(checked_policies > 500, "{checked_policies}");
        assert!(allowed_protected > 50, "{allowed_protected}");
    }

    /// Whether `n` lies inside a protected range that holds `addr`.
    fn inside_protected(addr: Ipv4Addr, n: &Ipv4Net) -> bool {
        PROTECTED
            .iter()
            .any(|(outer, _)| outer.contains(addr) && outer.covers(n))
    }

    /// `verdict` if it is a denial, else a denial that cannot equal it.
    fn denied_any(verdict: &AddrVerdict) -> AddrVerdict {
        match verdict {
            AddrVerdict::Denied { .. } => verdict.clone(),
            _ => denied("\u{0}"),
        }
    }
}
