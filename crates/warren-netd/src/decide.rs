//! The resolver's and the proxy's decisions over a workspace's stages (`warren_api::net`), plus
//! the addresses that only the host knows are protected: Warren's pool, the gateway and the host's
//! own addresses.

use std::net::Ipv4Addr;

use warren_api::net::{
    protected, AddrVerdict, Checked, EgressMode, Ipv4Net, NameVerdict, PortRange, Target,
};
use warren_runtime::network::EgressPlan;

/// Addresses the host adds to `warren_api::net::PROTECTED`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostRanges {
    /// Warren's address pool (the bridge's subnet, gateway included).
    pub pool: Option<Ipv4Net>,
    /// The host's own addresses.
    pub host: Vec<Ipv4Addr>,
}

impl HostRanges {
    /// The host-side protected range `ip` is in, by name: `host` (the host's own addresses and the
    /// bridge's gateway, which nothing opens) or `warren-pool` (which only a sibling rule naming
    /// the address opens).
    pub fn protected(&self, ip: Ipv4Addr) -> Option<&'static str> {
        if self.host.contains(&ip) || self.gateway() == Some(ip) {
            return Some("host");
        }
        if self.pool.is_some_and(|p| p.contains(ip)) {
            return Some("warren-pool");
        }
        None
    }

    /// Whether `ip` is protected at all (the shared ranges or the host's).
    pub fn any_protected(&self, ip: Ipv4Addr) -> bool {
        protected(ip).is_some() || self.protected(ip).is_some()
    }

    /// The bridge's address: the pool's first host address (as `NetConfig::gateway`).
    fn gateway(&self) -> Option<Ipv4Addr> {
        self.pool
            .map(|p| Ipv4Addr::from(u32::from(p.addr).wrapping_add(1)))
    }
}

/// Ranges the proxy never connects to whatever the rules say: from the host, `0.0.0.0/8` and
/// `127.0.0.0/8` are the host itself, not anything a workspace could mean (its own loopback never
/// leaves its network namespace).
fn host_only(ip: Ipv4Addr) -> bool {
    ip.octets()[0] == 0 || ip.is_loopback()
}

/// The stages in force: a plan without stages is one deny-all stage, as the workspace's nftables
/// rules have it (they send everything to its deny chain).
pub fn stages(plan: &EgressPlan) -> std::borrow::Cow<'_, [Checked]> {
    if plan.stages.is_empty() {
        std::borrow::Cow::Owned(vec![Checked {
            mode: EgressMode::DenyAll,
            allow: Vec::new(),
            deny: Vec::new(),
        }])
    } else {
        std::borrow::Cow::Borrowed(&plan.stages)
    }
}

/// What to add to a stage's learned set for an allowed name: the stage's index and its ports
/// (`None`: every port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnFor {
    /// The stage's index in the plan.
    pub stage: usize,
    /// `None`: every port; else these ranges.
    pub ports: Option<Vec<PortRange>>,
}

/// The resolver's decision about `name`: `Ok` with the allowlist stages whose learned sets get the
/// answer's addresses, or `Err(why)`.
pub fn dns(plan: Option<&EgressPlan>, name: &str) -> Result<Vec<LearnFor>, String> {
    let Some(plan) = plan else {
        return Err("no egress policy".into());
    };
    let mut learn = Vec::new();
    for (i, stage) in stages(plan).iter().enumerate() {
        match stage.name_verdict(name) {
            NameVerdict::Denied { rule } => {
                return Err(rule.unwrap_or_else(|| match stage.mode {
                    EgressMode::DenyAll => "deny-all".into(),
                    _ => "not allowed".into(),
                }))
            }
            NameVerdict::Allowed { any_port, ports } => {
                if stage.mode == EgressMode::Allowlist {
                    learn.push(LearnFor {
                        stage: i,
                        ports: if any_port { None } else { Some(ports) },
                    });
                }
            }
        }
    }
    Ok(learn)
}

/// Whether `stage` has a sibling rule (`workspace:NAME`, resolved by the server to a /32 with
/// `sibling` set) naming exactly `ip` on `port`: the one thing that opens an address of Warren's
/// pool. Rules over wider networks (`10.0.0.0/8`) never do.
fn sibling_opens(stage: &Checked, ip: Ipv4Addr, port: u16) -> bool {
    stage.allow.iter().any(|r| {
        r.sibling
            && matches!(r.target, Target::Net(n) if n.prefix == 32 && n.addr == ip)
            && r.covers_port(Some(port))
    })
}

/// The proxy's decision about a connection to `dst:port` that sent `name` (SNI or Host):
/// every stage must allow it. `resolved(name, ip)` says whether the resolver answered `ip` for
/// `name` to this workspace (and it has not expired).
///
/// The host's own addresses, the bridge's gateway, `0.0.0.0/8` and `127.0.0.0/8` are refused
/// whatever the rules say (from the host they are the host). An address of Warren's pool is
/// reached only when a stage has a sibling rule naming it (and port); the other stages then let
/// it through unless they deny it or are not `allow-all` (a template's allowlist is a ceiling
/// the workspace's own sibling rule does not lift).
pub fn proxy(
    plan: Option<&EgressPlan>,
    host: &HostRanges,
    name: Option<&str>,
    dst: Ipv4Addr,
    port: u16,
    resolved: &dyn Fn(&str, Ipv4Addr) -> bool,
) -> Result<(), String> {
    let Some(plan) = plan else {
        return Err("no egress policy".into());
    };
    if host_only(dst) {
        return Err("protected:host".into());
    }
    let host_range = host.protected(dst);
    if host_range == Some("host") {
        return Err("protected:host".into());
    }
    let in_pool = host_range == Some("warren-pool");
    let stages = stages(plan);
    if in_pool && !stages.iter().any(|s| sibling_opens(s, dst, port)) {
        return Err("protected:warren-pool".into());
    }
    for stage in stages.iter() {
        let name_verdict = name.map(|n| stage.name_verdict(n));
        match (name, &name_verdict) {
            (_, Some(NameVerdict::Denied { rule: Some(rule) })) => return Err(rule.clone()),
            // A name allowed on some ports only (its allow rules' ports, less a deny rule's):
            // refused on the others, naming the deny rule that took the port.
            (
                Some(n),
                Some(NameVerdict::Allowed {
                    any_port: false,
                    ports,
                }),
            ) if !ports.iter().any(|r| r.contains(port)) => {
                if let Some(rule) = stage
                    .deny
                    .iter()
                    .find(|r| r.matches_name(n) && r.covers_port(Some(port)))
                {
                    return Err(rule.text.clone());
                }
                return Err(format!("not allowed: {n} on port {port}"));
            }
            _ => {}
        }
        if in_pool {
            if let Some(rule) = stage.deny.iter().find(|r| r.matches_addr(dst, Some(port))) {
                return Err(rule.text.clone());
            }
            if sibling_opens(stage, dst, port) || stage.mode == EgressMode::AllowAll {
                continue;
            }
            return Err("protected:warren-pool".into());
        }
        match stage.addr_verdict(dst, Some(port)) {
            AddrVerdict::Allowed => {}
            AddrVerdict::Denied { why } => return Err(why),
            AddrVerdict::IfResolvedFor => {
                let (Some(n), Some(NameVerdict::Allowed { any_port, ports })) =
                    (name, name_verdict)
                else {
                    return Err("not allowed".into());
                };
                if !any_port && !ports.iter().any(|r| r.contains(port)) {
                    return Err("not allowed".into());
                }
                if !resolved(n, dst) {
                    return Err(format!("not allowed: {n} did not resolve to {dst}"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_api::net::NetworkPolicy;

    fn stage(mode: &str, allow: &[&str], deny: &[&str]) -> Checked {
        let p: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "egress": mode, "allow": allow, "deny": deny
        }))
        .unwrap();
        p.check().unwrap().0
    }

    fn plan(stages: Vec<Checked>) -> EgressPlan {
        EgressPlan {
            stages,
            limits: Default::default(),
        }
    }

    fn host() -> HostRanges {
        HostRanges {
            pool: Some(Ipv4Net {
                addr: Ipv4Addr::new(198, 18, 0, 0),
                prefix: 16,
            }),
            host: vec![Ipv4Addr::new(203, 0, 113, 250)],
        }
    }

    const WEB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);

    #[test]
    fn names_must_pass_every_stage() {
        let p = plan(vec![
            stage("allowlist", &["*.example.com", "api.other.org:443"], &[]),
            stage("allow-all", &[], &["bad.example.com"]),
        ]);
        assert_eq!(
            dns(Some(&p), "www.example.com"),
            Ok(vec![LearnFor {
                stage: 0,
                ports: None
            }])
        );
        assert_eq!(
            dns(Some(&p), "api.other.org"),
            Ok(vec![LearnFor {
                stage: 0,
                ports: Some(vec![PortRange { lo: 443, hi: 443 }])
            }])
        );
        assert_eq!(
            dns(Some(&p), "bad.example.com"),
            Err("bad.example.com".into())
        );
        assert_eq!(dns(Some(&p), "example.com"), Err("not allowed".into()));
        assert_eq!(
            dns(Some(&plan(vec![stage("deny-all", &[], &[])])), "a.com"),
            Err("deny-all".into())
        );
        assert!(dns(None, "a.com").is_err(), "no plan: nothing");
        assert_eq!(
            dns(Some(&plan(vec![])), "a.com"),
            Err("deny-all".into()),
            "no stages: nothing, as nftables has it"
        );
        let resolved = |_: &str, _: Ipv4Addr| true;
        assert!(
            proxy(
                Some(&plan(vec![])),
                &host(),
                Some("a.com"),
                WEB,
                443,
                &resolved
            )
            .is_err(),
            "no stages: the proxy refuses too"
        );
    }

    #[test]
    fn the_proxy_needs_a_resolved_allowed_name() {
        let p = plan(vec![stage(
            "allowlist",
            &["*.example.com:443", "198.51.100.0/24"],
            &[],
        )]);
        let resolved = |n: &str, ip: Ipv4Addr| n == "www.example.com" && ip == WEB;
        let h = host();
        assert_eq!(
            proxy(Some(&p), &h, Some("www.example.com"), WEB, 443, &resolved),
            Ok(())
        );
        // Wrong port for the rule.
        assert!(proxy(Some(&p), &h, Some("www.example.com"), WEB, 80, &resolved).is_err());
        // An allowed name the workspace never resolved to this address.
        assert!(proxy(Some(&p), &h, Some("api.example.com"), WEB, 443, &resolved).is_err());
        // A name not allowed, at an address the allowed name resolved to.
        assert!(proxy(Some(&p), &h, Some("evil.org"), WEB, 443, &resolved).is_err());
        // No name.
        assert!(proxy(Some(&p), &h, None, WEB, 443, &resolved).is_err());
        // A CIDR allow needs no name.
        assert_eq!(
            proxy(
                Some(&p),
                &h,
                None,
                Ipv4Addr::new(198, 51, 100, 9),
                80,
                &resolved
            ),
            Ok(())
        );
    }

    #[test]
    fn the_proxy_refuses_protected_and_denied() {
        let h = host();
        let never = |_: &str, _: Ipv4Addr| false;
        let all = plan(vec![stage(
            "allow-all",
            &[],
            &["*.evil.org", "203.0.113.66"],
        )]);
        assert_eq!(
            proxy(Some(&all), &h, Some("a.com"), WEB, 443, &never),
            Ok(())
        );
        assert_eq!(
            proxy(Some(&all), &h, Some("x.evil.org"), WEB, 443, &never),
            Err("*.evil.org".into())
        );
        assert!(proxy(
            Some(&all),
            &h,
            None,
            Ipv4Addr::new(203, 0, 113, 66),
            80,
            &never
        )
        .is_err());
        // Metadata, the pool and the host itself, even under allow-all.
        for ip in [
            Ipv4Addr::new(169, 254, 169, 254),
            Ipv4Addr::new(198, 18, 0, 1),
            Ipv4Addr::new(203, 0, 113, 250),
            Ipv4Addr::new(127, 0, 0, 1),
        ] {
            let r = proxy(Some(&all), &h, Some("a.com"), ip, 80, &never);
            assert!(
                r.as_ref().is_err_and(|w| w.starts_with("protected:")),
                "{ip}: {r:?}"
            );
        }
        assert!(proxy(None, &h, Some("a.com"), WEB, 443, &never).is_err());
        // Every stage must allow.
        let two = plan(vec![
            stage("allow-all", &[], &[]),
            stage("allowlist", &["a.com"], &[]),
        ]);
        let resolved = |n: &str, ip: Ipv4Addr| n == "a.com" && ip == WEB;
        assert_eq!(
            proxy(Some(&two), &h, Some("a.com"), WEB, 443, &resolved),
            Ok(())
        );
        assert!(proxy(Some(&two), &h, Some("b.com"), WEB, 443, &resolved).is_err());
    }

    /// Warren's pool inside `10.0.0.0/8`, as the automatic choice makes it.
    fn private_pool() -> HostRanges {
        HostRanges {
            pool: Some(Ipv4Net {
                addr: Ipv4Addr::new(10, 213, 0, 0),
                prefix: 16,
            }),
            host: vec![Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(127, 0, 0, 1)],
        }
    }

    /// A `workspace:NAME` rule as the server resolves it.
    fn sibling(ip: Ipv4Addr, prefix: u8, ports: Option<PortRange>) -> warren_api::net::Rule {
        warren_api::net::Rule {
            text: "workspace:b".into(),
            target: Target::Net(Ipv4Net { addr: ip, prefix }),
            ports,
            sibling: true,
        }
    }

    #[test]
    fn a_protected_range_rule_opens_neither_the_pool_nor_the_host() {
        let h = private_pool();
        let never = |_: &str, _: Ipv4Addr| false;
        let p = plan(vec![stage(
            "allow-all",
            &["10.0.0.0/8", "127.0.0.0/8", "0.0.0.0/8"],
            &[],
        )]);
        // The rule opens what it names outside the host's ranges...
        assert_eq!(
            proxy(Some(&p), &h, None, Ipv4Addr::new(10, 9, 9, 9), 80, &never),
            Ok(())
        );
        // ...but not another workspace, the gateway, the host's addresses or its loopback.
        for (ip, why) in [
            (Ipv4Addr::new(10, 213, 0, 5), "protected:warren-pool"),
            (Ipv4Addr::new(10, 213, 0, 1), "protected:host"),
            (Ipv4Addr::new(10, 1, 2, 3), "protected:host"),
            (Ipv4Addr::new(127, 0, 0, 1), "protected:host"),
            (Ipv4Addr::new(127, 0, 0, 2), "protected:host"),
            (Ipv4Addr::new(0, 0, 0, 0), "protected:host"),
        ] {
            for port in [80, 443] {
                assert_eq!(
                    proxy(Some(&p), &h, Some("a.com"), ip, port, &never),
                    Err(why.to_string()),
                    "{ip}:{port}"
                );
            }
        }
        // A sibling rule opens its own address only: not the gateway, not its neighbours, and a
        // (forged) wider sibling rule opens nothing of the pool.
        let mut st = stage("allow-all", &[], &[]);
        st.allow
            .push(sibling(Ipv4Addr::new(10, 213, 0, 1), 32, None));
        st.allow
            .push(sibling(Ipv4Addr::new(10, 213, 1, 0), 24, None));
        let p = plan(vec![st]);
        for ip in [
            Ipv4Addr::new(10, 213, 0, 1),
            Ipv4Addr::new(10, 213, 1, 7),
            Ipv4Addr::new(10, 213, 0, 9),
        ] {
            assert!(
                proxy(Some(&p), &h, None, ip, 80, &never).is_err(),
                "{ip} opened"
            );
        }
    }

    #[test]
    fn sibling_rules_work_through_the_proxy() {
        let h = private_pool();
        let never = |_: &str, _: Ipv4Addr| false;
        let b = Ipv4Addr::new(10, 213, 0, 7);
        // The template's allow-all stage, then the workspace's own naming its sibling.
        let mut own = stage("allowlist", &["*.example.com"], &[]);
        own.allow.push(sibling(b, 32, None));
        let p = plan(vec![stage("allow-all", &[], &[]), own.clone()]);
        for port in [80, 443] {
            assert_eq!(proxy(Some(&p), &h, None, b, port, &never), Ok(()));
            assert_eq!(
                proxy(Some(&p), &h, Some("b.internal"), b, port, &never),
                Ok(())
            );
        }
        // Only on the sibling rule's ports.
        let mut own80 = stage("allow-all", &[], &[]);
        own80
            .allow
            .push(sibling(b, 32, Some(PortRange { lo: 80, hi: 80 })));
        let p80 = plan(vec![stage("allow-all", &[], &[]), own80]);
        assert_eq!(proxy(Some(&p80), &h, None, b, 80, &never), Ok(()));
        assert_eq!(
            proxy(Some(&p80), &h, None, b, 443, &never),
            Err("protected:warren-pool".into())
        );
        // Not another workspace.
        assert!(proxy(Some(&p), &h, None, Ipv4Addr::new(10, 213, 0, 8), 80, &never).is_err());
        // A template that denies the address, or is not allow-all, is not lifted.
        let p = plan(vec![
            stage("allow-all", &[], &["10.213.0.0/16"]),
            own.clone(),
        ]);
        assert_eq!(
            proxy(Some(&p), &h, None, b, 80, &never),
            Err("10.213.0.0/16".into())
        );
        let p = plan(vec![stage("allowlist", &["*.example.com"], &[]), own]);
        assert!(proxy(Some(&p), &h, None, b, 80, &never).is_err());
    }

    #[test]
    fn a_port_scoped_name_deny_is_enforced_by_the_proxy() {
        let h = host();
        let never = |_: &str, _: Ipv4Addr| false;
        let p = plan(vec![stage("allow-all", &[], &["evil.example:443"])]);
        assert_eq!(
            proxy(Some(&p), &h, Some("evil.example"), WEB, 443, &never),
            Err("evil.example:443".into())
        );
        assert_eq!(
            proxy(Some(&p), &h, Some("evil.example"), WEB, 80, &never),
            Ok(())
        );
        // Under an allowlist too, even at an address a CIDR rule allows.
        let p = plan(vec![stage(
            "allowlist",
            &["*.corp.example:80-8080", "203.0.113.0/24"],
            &["evil.corp.example:443"],
        )]);
        assert_eq!(
            proxy(Some(&p), &h, Some("evil.corp.example"), WEB, 443, &never),
            Err("evil.corp.example:443".into())
        );
        // A name allowed on some ports only is refused on the others.
        assert!(proxy(Some(&p), &h, Some("ok.corp.example"), WEB, 9000, &never).is_err());
        assert_eq!(
            proxy(Some(&p), &h, Some("ok.corp.example"), WEB, 80, &never),
            Ok(())
        );
    }
}
