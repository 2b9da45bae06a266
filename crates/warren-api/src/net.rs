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
    if address
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'/')
    {
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
            Some("use `egress: allow-all` to allow everything, or name a domain: *.example.com".into()),
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
        if rest.starts_with('[') || rest.matches(':').count() > 1 {
            return Err(err(ipv6_problem()));
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
        self.allow.iter().chain(&self.deny).filter(|r| r.is_domain())
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
