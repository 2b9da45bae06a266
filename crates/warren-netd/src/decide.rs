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
    /// The host-side protected range `ip` is in, by name.
    pub fn protected(&self, ip: Ipv4Addr) -> Option<&'static str> {
        if self.pool.is_some_and(|p| p.contains(ip)) {
            return Some("warren-pool");
        }
        if self.host.contains(&ip) {
            return Some("host");
        }
        None
    }

    /// Whether `ip` is protected at all (the shared ranges or the host's).
    pub fn any_protected(&self, ip: Ipv4Addr) -> bool {
        protected(ip).is_some() || self.protected(ip).is_some()
    }
}

/// The stages in force: a plan without stages is one allow-all stage without rules (the default
/// policy), so protected ranges stay protected.
pub fn stages(plan: &EgressPlan) -> std::borrow::Cow<'_, [Checked]> {
    if plan.stages.is_empty() {
        std::borrow::Cow::Owned(vec![Checked {
            mode: EgressMode::AllowAll,
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

fn covers(ports: &Option<PortRange>, port: u16) -> bool {
    ports.is_none_or(|r| r.lo <= port && port <= r.hi)
}

/// Whether an allow rule of `stage` that may open protected ranges covers `ip:port`.
fn opened(stage: &Checked, ip: Ipv4Addr, port: u16) -> bool {
    stage.allow.iter().any(|r| {
        matches!(r.target, Target::Net(n) if n.contains(ip))
            && r.opens_protected()
            && covers(&r.ports, port)
    })
}

/// The proxy's decision about a connection to `dst:port` that sent `name` (SNI or Host):
/// every stage must allow it. `resolved(name, ip)` says whether the resolver answered `ip` for
/// `name` to this workspace (and it has not expired).
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
    for stage in stages(plan).iter() {
        let name_verdict = name.map(|n| stage.name_verdict(n));
        if let Some(NameVerdict::Denied { rule: Some(rule) }) = &name_verdict {
            return Err(rule.clone());
        }
        if let Some(range) = host.protected(dst) {
            if !opened(stage, dst, port) {
                return Err(format!("protected:{range}"));
            }
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
                if !any_port && !ports.iter().any(|r| r.lo <= port && port <= r.hi) {
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
            Ok(vec![]),
            "no stages: allow-all"
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
}
