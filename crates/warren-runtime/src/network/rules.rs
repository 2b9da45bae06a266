//! nftables rules: the base tables of a host (`inet <table>`, `bridge <table>`) and each
//! workspace's chains and sets, compiled from its [`EgressPlan`] and replaced in one transaction.
//!
//! Per workspace (`T` its tag, see [`super::tag`]): chain `ws_T` (a jump to each stage's chain, then
//! accept, setting the plan's generation as the connection's conntrack mark), reached from
//! `forward` through the `ws` verdict map keyed by source address; `ws_T_conns` (the connection
//! limit, reached from prerouting through the `conns` map); chains `ws_T_sN` (one per stage) that return when the stage allows the packet and jump
//! to `ws_T_deny` otherwise; `ws_T_deny` counts (named counter `ws_T_denied`), logs to the nflog
//! group (rate-limited, prefix `warren:<id> `) and rejects, so clients fail fast; `ws_T_rate`
//! polices what the workspace sends (reached from prerouting through the `rate` map). A stage's rules without
//! ports become interval sets `ws_T_sN_{deny,open,allow}`; rules with ports are rules of their own.
//! The resolver's learned addresses go to `ws_T_sN_dns` (names allowed on every port) and
//! `ws_T_sN_dns_LO_HI` (names allowed on those ports), with timeouts.
//!
//! The stage chain decides in the order of `Checked::addr_verdict`: deny rules, sibling rules
//! (resolved `workspace:NAME`), Warren's pool (closed to anything else), allow rules that open a
//! protected range, the protected ranges (and the host's own networks) (`protected` set: `warren_api::net::PROTECTED` and
//! Warren's own pool), the mode (`allow-all` returns), allow rules, learned addresses, deny.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use warren_api::net::{Checked, EgressMode, PortRange, Rule, Target};

use super::nft::Nft;
use super::{host, mac_of, tag, Attachment, EgressPlan, NetConfig, NetCounters, NetResult};

/// Creates or refreshes the base tables, in one transaction. The `ws` map, the `proxied` set and the
/// bridge's `ports` set keep their elements; base chains are rewritten.
pub(crate) fn ensure_base(cfg: &NetConfig) -> NetResult<()> {
    let t = &cfg.table;
    let br = &cfg.bridge;
    let gw = cfg.gateway();
    let p = cfg.proxy_port;
    let subnet = cfg.subnet;
    let mut protected: Vec<String> = warren_api::net::PROTECTED
        .iter()
        .map(|(net, _)| net.to_string())
        .collect();
    protected.push(subnet.to_string());
    // The host's own networks (its LAN, say) are as private as RFC 1918 ones, whatever their
    // addresses; Warren's bridges are in the list already (the pools).
    for n in super::choose::connected_networks() {
        if !n.addr.is_loopback() && n.prefix > 0 && !subnet.covers(&n) {
            protected.push(n.to_string());
        }
    }
    let protected = protected.join(", ");
    let script = format!(
        r#"add table inet {t}
add map inet {t} ws {{ type ipv4_addr : verdict; }}
add map inet {t} rate {{ type ipv4_addr : verdict; }}
add map inet {t} conns {{ type ipv4_addr : verdict; }}
add set inet {t} proxied {{ type ipv4_addr; }}
add set inet {t} current {{ type ipv4_addr . mark; }}
add set inet {t} protected {{ type ipv4_addr; flags interval; auto-merge; }}
flush set inet {t} protected
add element inet {t} protected {{ {protected} }}
add chain inet {t} forward {{ type filter hook forward priority filter; policy accept; }}
flush chain inet {t} forward
add rule inet {t} forward iifname "{br}" ct state established,related ct original ip saddr . ct mark @current accept
add rule inet {t} forward iifname "{br}" ip saddr vmap @ws
add rule inet {t} forward iifname "{br}" counter drop
add rule inet {t} forward oifname "{br}" ct state established,related ct original ip saddr . ct mark @current accept
add rule inet {t} forward oifname "{br}" counter drop
add chain inet {t} input {{ type filter hook input priority filter; policy accept; }}
flush chain inet {t} input
add rule inet {t} input iifname "{br}" ct state established,related accept
add rule inet {t} input iifname "{br}" ip daddr {gw} udp dport 53 accept
add rule inet {t} input iifname "{br}" ip daddr {gw} tcp dport {{ 53, {p} }} accept
add rule inet {t} input iifname "{br}" meta l4proto tcp reject with tcp reset
add rule inet {t} input iifname "{br}" reject with icmpx admin-prohibited
add chain inet {t} output {{ type filter hook output priority filter; policy accept; }}
flush chain inet {t} output
add rule inet {t} output oifname "{br}" ct state established,related accept
add rule inet {t} output oifname "{br}" counter drop
add chain inet {t} guard {{ type filter hook prerouting priority raw; policy accept; }}
flush chain inet {t} guard
add rule inet {t} guard iifname "wv*" counter drop
add rule inet {t} guard iifname "{br}" ip saddr vmap @rate
add chain inet {t} limits {{ type filter hook prerouting priority mangle; policy accept; }}
flush chain inet {t} limits
add rule inet {t} limits iifname "{br}" ct state new ip daddr != {gw} ip saddr vmap @conns
add chain inet {t} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}
flush chain inet {t} prerouting
add rule inet {t} prerouting iifname "{br}" ip saddr @proxied ip daddr != {subnet} tcp dport {{ 80, 443 }} redirect to :{p}
add chain inet {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
flush chain inet {t} postrouting
add rule inet {t} postrouting ip saddr {subnet} oifname != "{br}" masquerade
add table bridge {t}
add set bridge {t} ports {{ type ifname . ether_addr . ipv4_addr; }}
add set bridge {t} wsports {{ type ifname; }}
add chain bridge {t} prerouting {{ type filter hook prerouting priority -300; policy accept; }}
flush chain bridge {t} prerouting
add rule bridge {t} prerouting iifname != @wsports accept
add rule bridge {t} prerouting ether type ip iifname . ether saddr . ip saddr @ports accept
add rule bridge {t} prerouting ether type arp iifname . ether saddr . arp saddr ip @ports iifname . arp saddr ether . arp saddr ip @ports accept
add rule bridge {t} prerouting counter drop
add chain bridge {t} input {{ type filter hook input priority -300; policy accept; }}
flush chain bridge {t} input
add rule bridge {t} input iifname != @wsports accept
add rule bridge {t} input ether daddr 01:80:c2:00:00:00-01:80:c2:00:00:0f counter drop
add rule bridge {t} input ether type ip iifname . ether saddr . ip saddr @ports accept
add rule bridge {t} input ether type arp iifname . ether saddr . arp saddr ip @ports iifname . arp saddr ether . arp saddr ip @ports accept
add rule bridge {t} input counter drop
"#
    );
    Nft::once(&script).map(|_| ())
}

fn net_of(rule: &Rule) -> Option<String> {
    match &rule.target {
        Target::Net(n) if n.prefix == 32 => Some(n.addr.to_string()),
        Target::Net(n) => Some(n.to_string()),
        _ => None,
    }
}

fn port_text(p: PortRange) -> String {
    if p.lo == p.hi {
        p.lo.to_string()
    } else {
        format!("{}-{}", p.lo, p.hi)
    }
}

/// The networks of the rules of `rules` that name addresses and cover every port.
fn elements<'a>(rules: impl Iterator<Item = &'a Rule>) -> Vec<String> {
    let mut plain: Vec<String> = rules
        .filter(|r| r.ports.is_none())
        .filter_map(net_of)
        .collect();
    plain.sort();
    plain.dedup();
    plain
}

/// Refuses what cannot be compiled: unresolved `workspace:` rules.
fn check_stage(stage: &Checked) -> NetResult<()> {
    for r in stage.allow.iter().chain(&stage.deny) {
        if let Target::Workspace(name) = &r.target {
            return Err(format!(
                "network rule `{}`: workspace `{name}` was not resolved to an address",
                r.text
            ));
        }
    }
    Ok(())
}

fn has_domain_rules(stage: &Checked) -> bool {
    stage
        .allow
        .iter()
        .chain(&stage.deny)
        .any(|r| matches!(r.target, Target::Domain(_) | Target::Wildcard(_)))
}

/// Checks that `plan` can be compiled (every `workspace:` rule resolved).
pub fn check_plan(plan: &EgressPlan) -> NetResult<()> {
    plan.stages.iter().try_for_each(check_stage)
}

/// Existing stage chains of workspace tag `tg` (their numbers).
fn existing_stages(cfg: &NetConfig, tg: &str) -> NetResult<Vec<usize>> {
    let prefix = format!("ws_{tg}_s");
    Ok(chains(cfg)?
        .into_iter()
        .filter_map(|c| c.strip_prefix(&prefix).and_then(|n| n.parse().ok()))
        .collect())
}

/// Names of the chains of the inet table.
fn chains(cfg: &NetConfig) -> NetResult<Vec<String>> {
    let v = Nft::json("list chains inet")?;
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let c = &item["chain"];
        if c["table"].as_str() == Some(cfg.table.as_str()) {
            if let Some(n) = c["name"].as_str() {
                out.push(n.to_string());
            }
        }
    }
    Ok(out)
}

/// Commands removing workspace `tg`'s stage chains `stages` and the sets their rules use (after
/// the chains that jump to them were flushed).
fn remove_stages(
    cfg: &NetConfig,
    script: &mut String,
    tg: &str,
    stages: &[usize],
) -> NetResult<()> {
    let t = &cfg.table;
    let mut sets = Vec::new();
    for n in stages {
        let chain = format!("ws_{tg}_s{n}");
        sets.extend(sets_used_by(cfg, &chain)?);
        let _ = writeln!(script, "flush chain inet {t} {chain}");
    }
    for n in stages {
        let _ = writeln!(script, "delete chain inet {t} ws_{tg}_s{n}");
    }
    sets.sort();
    sets.dedup();
    for set in sets {
        let _ = writeln!(script, "delete set inet {t} {set}");
    }
    Ok(())
}

/// The workspace sets (`@ws_...`) the rules of `chain` look up.
fn sets_used_by(cfg: &NetConfig, chain: &str) -> NetResult<Vec<String>> {
    let text = Nft::once(&format!("list chain inet {} {chain}", cfg.table))?;
    Ok(text
        .split(|c: char| c.is_whitespace() || c == ',' || c == '{' || c == '}')
        .filter_map(|w| w.strip_prefix('@'))
        .filter(|w| w.starts_with("ws_"))
        .map(str::to_string)
        .collect())
}

/// The set of addresses the resolver learned for names allowed on `ports` (every port: `None`).
fn dns_set(stage_chain: &str, ports: Option<PortRange>) -> String {
    match ports {
        None => format!("{stage_chain}_dns"),
        Some(p) => format!("{stage_chain}_dns_{}_{}", p.lo, p.hi),
    }
}

/// Compiles one stage into chain `st` (and the sets it uses, named after it): the stage returns
/// when it allows a packet and jumps to `deny` otherwise.
fn compile_stage(
    s: &mut String,
    t: &str,
    st: &str,
    stage: &Checked,
    deny: &str,
    pool: warren_api::net::Ipv4Net,
    siblings: &[String],
) {
    let _ = writeln!(s, "add chain inet {t} {st}");
    let rule = |s: &mut String, r: &str| {
        let _ = writeln!(s, "add rule inet {t} {st} {r}");
    };
    if stage.mode == EgressMode::DenyAll {
        rule(s, &format!("jump {deny}"));
        return;
    }
    // Rules without ports become one interval set per kind (overlaps merge); rules with ports are
    // rules of their own (overlapping address . port intervals cannot share a set).
    let kind = |s: &mut String, name: &str, rules: Vec<&Rule>, verdict: &str| {
        let plain = elements(rules.iter().copied());
        if !plain.is_empty() {
            let set = format!("{st}_{name}");
            let _ = writeln!(
                s,
                "add set inet {t} {set} {{ type ipv4_addr; flags interval; auto-merge; }}"
            );
            let _ = writeln!(s, "add element inet {t} {set} {{ {} }}", plain.join(", "));
            rule(s, &format!("ip daddr @{set} {verdict}"));
        }
        for r in &rules {
            if let (Some(net), Some(p)) = (net_of(r), r.ports) {
                rule(
                    s,
                    &format!(
                        "ip daddr {net} meta l4proto {{ tcp, udp }} th dport {} {verdict}",
                        port_text(p)
                    ),
                );
            }
        }
    };
    let jump = format!("jump {deny}");
    kind(s, "deny", stage.deny.iter().collect(), &jump);
    // Warren's pool opens only to rules naming a sibling workspace (resolved by the control plane):
    // `10.0.0.0/8` opens the private range, never the other workspaces in it.
    kind(
        s,
        "sib",
        stage.allow.iter().filter(|r| r.sibling).collect(),
        "return",
    );
    // An allow-all stage lets through what another stage's sibling rule names (that stage then
    // decides the ports); allowlists name their siblings themselves.
    if stage.mode == EgressMode::AllowAll && !siblings.is_empty() {
        rule(s, &format!("ip daddr {{ {} }} return", siblings.join(", ")));
    }
    rule(s, &format!("ip daddr {pool} {jump}"));
    kind(
        s,
        "open",
        stage
            .allow
            .iter()
            .filter(|r| r.opens_protected() && !r.sibling)
            .collect(),
        "return",
    );
    rule(s, &format!("ip daddr @protected {jump}"));
    if stage.mode == EgressMode::AllowAll {
        rule(s, "return");
        return;
    }
    kind(
        s,
        "allow",
        stage
            .allow
            .iter()
            .filter(|r| !r.opens_protected() && !r.sibling)
            .collect(),
        "return",
    );
    // What the resolver learns for allowed names: every port, and one set per port range named.
    let any = dns_set(st, None);
    let _ = writeln!(
        s,
        "add set inet {t} {any} {{ type ipv4_addr; flags timeout; }}"
    );
    rule(s, &format!("ip daddr @{any} return"));
    let mut ranges: Vec<PortRange> = stage
        .allow
        .iter()
        .filter(|r| matches!(r.target, Target::Domain(_) | Target::Wildcard(_)))
        .filter_map(|r| r.ports)
        .collect();
    ranges.sort();
    ranges.dedup();
    for p in ranges {
        let set = dns_set(st, Some(p));
        let _ = writeln!(
            s,
            "add set inet {t} {set} {{ type ipv4_addr; flags timeout; }}"
        );
        rule(
            s,
            &format!(
                "meta l4proto {{ tcp, udp }} th dport {} ip daddr @{set} return",
                port_text(p)
            ),
        );
    }
    rule(s, &jump);
}

/// Replaces workspace `id`'s chains and sets with the compilation of `plan`, in one transaction, and
/// (re)enters it in the `ws` map, the `proxied` set and the bridge's `ports` set. Learned (resolver)
/// elements are dropped: the resolver adds again what its next answers allow.
pub fn apply(cfg: &NetConfig, id: &str, att: &Attachment, plan: &EgressPlan) -> NetResult<()> {
    super::check_id(id)?;
    for s in &plan.stages {
        check_stage(s)?;
    }
    let t = &cfg.table;
    let tg = tag(id);
    let ws = format!("ws_{tg}");
    let deny = format!("ws_{tg}_deny");
    let addr = att.address;
    let old = existing_stages(cfg, &tg)?;
    let old_gens: Vec<u32> = generations(cfg)?
        .into_iter()
        .filter(|(a, _)| *a == addr)
        .map(|(_, g)| g)
        .collect();
    // The connections accepted under this plan carry its generation in their conntrack mark; the
    // established ones of an older plan are judged again, packet by packet, by this one.
    let gen = next_generation(&old_gens);
    let mut s = String::new();
    let _ = writeln!(s, "add chain inet {t} {ws}");
    let _ = writeln!(s, "flush chain inet {t} {ws}");
    let _ = writeln!(s, "add counter inet {t} ws_{tg}_denied");
    let _ = writeln!(s, "add chain inet {t} {deny}");
    let _ = writeln!(s, "flush chain inet {t} {deny}");
    remove_stages(cfg, &mut s, &tg, &old)?;
    // Packets of connections an older plan accepted and this one does not are dropped silently:
    // a connection this plan allows whose name the resolver has not learned again yet then
    // recovers by retransmission once it has.
    let _ = writeln!(
        s,
        "add rule inet {t} {deny} ct state established,related drop"
    );
    let _ = writeln!(
        s,
        "add rule inet {t} {deny} counter name \"ws_{tg}_denied\""
    );
    let _ = writeln!(
        s,
        "add rule inet {t} {deny} limit rate 20/second burst 40 packets log prefix \"warren:{id} \" group {}",
        cfg.log_group
    );
    let _ = writeln!(
        s,
        "add rule inet {t} {deny} meta l4proto tcp reject with tcp reset"
    );
    let _ = writeln!(
        s,
        "add rule inet {t} {deny} reject with icmpx admin-prohibited"
    );
    let mut siblings: Vec<String> = plan
        .stages
        .iter()
        .flat_map(|st| &st.allow)
        .filter(|r| r.sibling)
        .filter_map(net_of)
        .collect();
    siblings.sort();
    siblings.dedup();
    for (n, stage) in plan.stages.iter().enumerate() {
        compile_stage(
            &mut s,
            t,
            &format!("ws_{tg}_s{n}"),
            stage,
            &deny,
            cfg.subnet,
            &siblings,
        );
    }
    // Bandwidth from the workspace: policed here (what it receives is shaped by tc on its veth).
    let rate = format!("ws_{tg}_rate");
    let _ = writeln!(s, "add chain inet {t} {rate}");
    let _ = writeln!(s, "flush chain inet {t} {rate}");
    let _ = writeln!(s, "add element inet {t} rate {{ {addr} : jump {rate} }}");
    match plan.limits.egress_mbit.filter(|m| *m > 0) {
        Some(mbit) => {
            let kbytes = u64::from(mbit) * 1000 / 8;
            let burst = (kbytes / 10).max(64);
            let _ = writeln!(
                s,
                "add rule inet {t} {rate} limit rate over {kbytes} kbytes/second burst {burst} kbytes drop"
            );
        }
        None => {
            let _ = writeln!(s, "delete element inet {t} rate {{ {addr} }}");
        }
    }
    // Connections: counted in prerouting, forwarded and proxied alike (not those to the gateway
    // itself: the resolver).
    let conns = format!("ws_{tg}_conns");
    let _ = writeln!(s, "add chain inet {t} {conns}");
    let _ = writeln!(s, "flush chain inet {t} {conns}");
    let _ = writeln!(s, "add element inet {t} conns {{ {addr} : jump {conns} }}");
    match plan.limits.max_connections {
        Some(max) => {
            let _ = writeln!(
                s,
                "add rule inet {t} {conns} ct count over {max} counter reject"
            );
        }
        None => {
            let _ = writeln!(s, "delete element inet {t} conns {{ {addr} }}");
        }
    }
    if plan.stages.is_empty() {
        // No plan yet: nothing but the resolver (which the input chain allows).
        let _ = writeln!(s, "add rule inet {t} {ws} jump {deny}");
    }
    for n in 0..plan.stages.len() {
        let _ = writeln!(s, "add rule inet {t} {ws} jump ws_{tg}_s{n}");
    }
    let _ = writeln!(s, "add rule inet {t} {ws} ct mark set {gen} accept");
    let _ = writeln!(s, "add element inet {t} ws {{ {addr} : jump {ws} }}");
    for g in &old_gens {
        let _ = writeln!(s, "delete element inet {t} current {{ {addr} . {g} }}");
    }
    let _ = writeln!(s, "add element inet {t} current {{ {addr} . {gen} }}");
    // Add then delete: the element is gone afterwards whether or not it was there.
    let _ = writeln!(s, "add element inet {t} proxied {{ {addr} }}");
    if !plan.stages.iter().any(has_domain_rules) {
        let _ = writeln!(s, "delete element inet {t} proxied {{ {addr} }}");
    }
    let _ = writeln!(
        s,
        "add element bridge {t} ports {{ \"{}\" . {} . {addr} }}",
        att.veth,
        mac_of(addr)
    );
    let _ = writeln!(s, "add element bridge {t} wsports {{ \"{}\" }}", att.veth);
    Nft::once(&s)
        .map(|_| ())
        .map_err(|e| format!("install the network rules of {id}: {e}"))?;
    host::set_limits(&att.veth, &plan.limits)
}

/// The plan generations in force: (workspace address, conntrack mark of the connections its
/// plan accepted).
fn generations(cfg: &NetConfig) -> NetResult<Vec<(Ipv4Addr, u32)>> {
    let v = Nft::json(&format!("list set inet {} current", cfg.table))?;
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for e in item["set"]["elem"].as_array().into_iter().flatten() {
            // { "concat": [ "10.0.0.2", 7 ] }
            let c = &e["concat"];
            if let (Some(a), Some(g)) = (
                c[0].as_str().and_then(|a| a.parse().ok()),
                c[1].as_u64().and_then(|g| u32::try_from(g).ok()),
            ) {
                out.push((a, g));
            }
        }
    }
    Ok(out)
}

/// A generation different from `old` and from 0 (the mark of connections nobody marked).
fn next_generation(old: &[u32]) -> u32 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
        .unwrap_or(1);
    let mut g = old.iter().copied().max().unwrap_or(seed).wrapping_add(1);
    while g == 0 || old.contains(&g) {
        g = g.wrapping_add(1);
    }
    g
}

/// The address the `ws` map sends to chain `ws_<tg>`, if any; every (address, chain) pair.
fn ws_map(cfg: &NetConfig) -> NetResult<Vec<(Ipv4Addr, String)>> {
    let v = Nft::json(&format!("list map inet {} ws", cfg.table))?;
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for e in item["map"]["elem"].as_array().into_iter().flatten() {
            // [ "10.0.0.2", { "jump": { "target": "ws_x" } } ]
            let (Some(a), Some(c)) = (
                e[0].as_str().and_then(|a| a.parse().ok()),
                e[1]["jump"]["target"].as_str(),
            ) else {
                continue;
            };
            out.push((a, c.to_string()));
        }
    }
    Ok(out)
}

/// Removes workspace `id`'s chains, sets, counter and map entries, and its host veth end.
/// Idempotent.
pub fn detach(cfg: &NetConfig, id: &str) -> NetResult<()> {
    let tg = tag(id);
    // The veth first: the bridge polices only the ports in `wsports`, so a port must never be
    // on the bridge without its entries.
    let veth = super::veth_name(id);
    host::remove_veth(&veth);
    if host::link_exists(&veth) {
        return Err(format!("remove {veth}: it is still there"));
    }
    remove_tag(cfg, &tg, &chains(cfg)?, &ws_map(cfg).unwrap_or_default())?;
    remove_ports(cfg, |i| i == veth)?;
    Ok(())
}

fn remove_tag(
    cfg: &NetConfig,
    tg: &str,
    all_chains: &[String],
    map: &[(Ipv4Addr, String)],
) -> NetResult<()> {
    let t = &cfg.table;
    let ws = format!("ws_{tg}");
    let stage_prefix = format!("ws_{tg}_s");
    let stages: Vec<usize> = all_chains
        .iter()
        .filter_map(|c| c.strip_prefix(&stage_prefix).and_then(|n| n.parse().ok()))
        .collect();
    let has = |c: &str| all_chains.iter().any(|x| x == c);
    let mut s = String::new();
    let rate = format!("ws_{tg}_rate");
    let conns = format!("ws_{tg}_conns");
    let gens = generations(cfg).unwrap_or_default();
    for (addr, _) in map.iter().filter(|(_, c)| *c == ws) {
        let _ = writeln!(s, "delete element inet {t} ws {{ {addr} }}");
        for (_, g) in gens.iter().filter(|(a, _)| a == addr) {
            let _ = writeln!(s, "delete element inet {t} current {{ {addr} . {g} }}");
        }
        if has(&rate) {
            let _ = writeln!(s, "add element inet {t} rate {{ {addr} : jump {rate} }}");
            let _ = writeln!(s, "delete element inet {t} rate {{ {addr} }}");
        }
        if has(&conns) {
            let _ = writeln!(s, "add element inet {t} conns {{ {addr} : jump {conns} }}");
            let _ = writeln!(s, "delete element inet {t} conns {{ {addr} }}");
        }
        let _ = writeln!(s, "add element inet {t} proxied {{ {addr} }}");
        let _ = writeln!(s, "delete element inet {t} proxied {{ {addr} }}");
    }
    if has(&ws) {
        let _ = writeln!(s, "flush chain inet {t} {ws}");
    }
    remove_stages(cfg, &mut s, tg, &stages)?;
    for c in [&rate, &conns] {
        if has(c) {
            let _ = writeln!(s, "flush chain inet {t} {c}");
            let _ = writeln!(s, "delete chain inet {t} {c}");
        }
    }
    let deny = format!("ws_{tg}_deny");
    if has(&deny) {
        let _ = writeln!(s, "flush chain inet {t} {deny}");
        let _ = writeln!(s, "delete chain inet {t} {deny}");
    }
    if has(&ws) {
        let _ = writeln!(s, "delete chain inet {t} {ws}");
        let _ = writeln!(s, "add counter inet {t} ws_{tg}_denied");
        let _ = writeln!(s, "delete counter inet {t} ws_{tg}_denied");
    }
    if s.is_empty() {
        return Ok(());
    }
    Nft::once(&s)
        .map(|_| ())
        .map_err(|e| format!("remove the network rules of {tg}: {e}"))?;
    Ok(())
}

/// The bridge's anti-spoofing entries: (veth, MAC, address).
fn bridge_ports(cfg: &NetConfig) -> NetResult<Vec<(String, String, String)>> {
    // No tables yet (nothing was ever started here): no entries.
    let v = match Nft::json(&format!("list set bridge {} ports", cfg.table)) {
        Ok(v) => v,
        Err(e) if e.contains("No such file or directory") => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        for e in item["set"]["elem"].as_array().into_iter().flatten() {
            let c = &e["concat"];
            if let (Some(i), Some(m), Some(a)) = (c[0].as_str(), c[1].as_str(), c[2].as_str()) {
                out.push((i.to_string(), m.to_string(), a.to_string()));
            }
        }
    }
    Ok(out)
}

/// Removes the bridge `ports` entries of veths `gone` says are gone; their names.
pub(crate) fn remove_ports(cfg: &NetConfig, gone: impl Fn(&str) -> bool) -> NetResult<Vec<String>> {
    let mut s = String::new();
    let mut names = Vec::new();
    for (i, m, a) in bridge_ports(cfg)? {
        if gone(&i) {
            let _ = writeln!(
                s,
                "delete element bridge {} ports {{ \"{i}\" . {m} . {a} }}",
                cfg.table
            );
            let t = &cfg.table;
            let _ = writeln!(s, "add element bridge {t} wsports {{ \"{i}\" }}");
            let _ = writeln!(s, "delete element bridge {t} wsports {{ \"{i}\" }}");
            names.push(i);
        }
    }
    if !s.is_empty() {
        Nft::once(&s).map_err(|e| format!("remove anti-spoofing entries: {e}"))?;
    }
    Ok(names)
}

/// Removes the objects of every workspace whose tag is not in `keep`; the tags removed.
pub(crate) fn remove_except(cfg: &NetConfig, keep: &[String]) -> NetResult<Vec<String>> {
    let all = chains(cfg)?;
    let map = ws_map(cfg).unwrap_or_default();
    let mut gone = Vec::new();
    for c in &all {
        let Some(tg) = c.strip_prefix("ws_") else {
            continue;
        };
        if tg.contains('_') || keep.iter().any(|k| k == tg) {
            continue;
        }
        remove_tag(cfg, tg, &all, &map)?;
        gone.push(tg.to_string());
    }
    Ok(gone)
}

/// Adds addresses a resolver answer allowed to stage `stage`'s learned sets, each for `ttl`.
pub fn learn(
    cfg: &NetConfig,
    id: &str,
    stage: usize,
    entries: &[(Ipv4Addr, Option<PortRange>, Duration)],
) -> NetResult<()> {
    learn_with(cfg, id, stage, entries, false)
}

/// [`learn`], replacing elements that are there already so that they get the new timeout. Slower
/// by far (a transaction that deletes set elements waits for the kernel's RCU grace period, some
/// 15 ms): the resolver does this only when an element would expire within the answer's TTL.
pub fn relearn(
    cfg: &NetConfig,
    id: &str,
    stage: usize,
    entries: &[(Ipv4Addr, Option<PortRange>, Duration)],
) -> NetResult<()> {
    learn_with(cfg, id, stage, entries, true)
}

fn learn_with(
    cfg: &NetConfig,
    id: &str,
    stage: usize,
    entries: &[(Ipv4Addr, Option<PortRange>, Duration)],
    replace: bool,
) -> NetResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let t = &cfg.table;
    let st = format!("ws_{}_s{stage}", tag(id));
    let mut s = String::new();
    for (addr, ports, ttl) in entries {
        let secs = ttl.as_secs().max(1);
        let name = dns_set(&st, *ports);
        if replace {
            // Add, delete, add: the element ends up with this timeout whether or not it was there.
            let _ = writeln!(s, "add element inet {t} {name} {{ {addr} }}");
            let _ = writeln!(s, "delete element inet {t} {name} {{ {addr} }}");
        }
        // Adding an element that is there already leaves it (and its timeout) as it is.
        let _ = writeln!(
            s,
            "add element inet {t} {name} {{ {addr} timeout {secs}s }}"
        );
    }
    Nft::once(&s).map(|_| ())
}

/// The workspace's counters (zero when it has no rules).
pub fn counters(cfg: &NetConfig, id: &str) -> NetResult<NetCounters> {
    let v = match Nft::json(&format!(
        "list counter inet {} ws_{}_denied",
        cfg.table,
        tag(id)
    )) {
        Ok(v) => v,
        Err(e) if e.contains("No such file") || e.contains("does not exist") => {
            return Ok(NetCounters::default())
        }
        Err(e) => return Err(e),
    };
    let mut c = NetCounters::default();
    for item in v["nftables"].as_array().into_iter().flatten() {
        if let Some(p) = item["counter"]["packets"].as_u64() {
            c.denied_connections = p;
        }
    }
    Ok(c)
}
