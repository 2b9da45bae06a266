//! Workspace networks (`Network::Egress`), attacked from inside real workspaces: a bridge, nftables
//! and veths on this host, and a fake "internet" (a network namespace holding documentation
//! addresses and a private one) with TCP listeners. Each test has its own bridge, subnet, table and
//! internet, so they run in parallel.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::time::Duration;

use warren_api::net::{Checked, EgressMode, Ipv4Net, NetLimits, PortRange, Rule, Target};
use warren_runtime::network::{self, EgressPlan, NetConfig};
use warren_runtime::{LinuxRuntime, Network, Runtime};

use crate::runtime::{fixture, sh, spec, Fixture};

/// Port the fake internet listens on (it says `hello` and hangs up).
const PORT: u16 = 8080;
/// (It says `hello` on PORT + 1 too.)
/// Port where it says `hello` and keeps the connection open for 3 s.
const HOLD: u16 = 8082;

fn cmd(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn must(program: &str, args: &[&str]) {
    let (ok, out) = cmd(program, args);
    assert!(ok, "{program} {args:?}: {out}");
}

/// One test's network: its runtime, bridge, table, subnet, and fake internet
/// (`198.18.N.1`, `198.18.N.2` and `10.251.N.1`, reached through the host).
struct Net {
    f: Fixture,
    rt: LinuxRuntime,
    cfg: NetConfig,
    n: u8,
    ns: String,
    uplink: String,
}

impl Net {
    fn new(n: u8) -> Net {
        let pid = std::process::id();
        // Distinct per test (n) and per test process (pid), within interface-name limits.
        let unique = format!("{:04}{n:02}", pid % 10_000);
        let third = ((pid % 12) * 20) as u8 + n;
        let cfg = NetConfig {
            bridge: format!("wb{unique}"),
            subnet: Ipv4Net {
                addr: Ipv4Addr::new(10, 250, third, 0),
                prefix: 24,
            },
            table: format!("wt{unique}"),
            dns_upstream: vec![],
            proxy_port: 15001,
            log_group: 3000 + u16::from(third),
        };
        // OCI=runc runs them on runc (its create/start split) instead of libcontainer.
        let f = fixture(
            std::env::var("OCI")
                .map(|s| warren_runtime::OciRuntime::parse(&s))
                .unwrap_or_default(),
        );
        let rt = f.rt.clone().with_network(cfg.clone()).unwrap();
        let ns = format!("wtinet{unique}");
        let uplink = format!("wi{unique}");
        let net = Net {
            f,
            rt,
            cfg,
            n: third,
            ns,
            uplink,
        };
        net.internet();
        net
    }

    /// The fake internet: a namespace behind a veth, with the test's addresses routed to it.
    fn internet(&self) {
        let (ns, up, n) = (&self.ns, &self.uplink, self.n);
        must("ip", &["netns", "add", ns]);
        must(
            "ip",
            &[
                "link", "add", up, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        );
        must(
            "ip",
            &["addr", "add", &format!("198.19.{n}.1/24"), "dev", up],
        );
        must("ip", &["link", "set", up, "up"]);
        let inside = |args: &[&str]| {
            let mut a = vec!["netns", "exec", ns, "ip"];
            a.extend_from_slice(args);
            must("ip", &a);
        };
        inside(&["addr", "add", &format!("198.19.{n}.2/24"), "dev", "eth0"]);
        for a in [
            format!("198.18.{n}.1/32"),
            format!("198.18.{n}.2/32"),
            format!("10.251.{n}.1/32"),
        ] {
            inside(&["addr", "add", &a, "dev", "lo"]);
        }
        inside(&["link", "set", "lo", "up"]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&["route", "add", "default", "via", &format!("198.19.{n}.1")]);
        for r in [format!("198.18.{n}.0/24"), format!("10.251.{n}.0/24")] {
            must("ip", &["route", "add", &r, "via", &format!("198.19.{n}.2")]);
        }
        // A listener answering `hello` on every address of the namespace.
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let f = std::fs::File::open(path).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let l = TcpListener::bind(("0.0.0.0", PORT)).unwrap();
            let hold = TcpListener::bind(("0.0.0.0", HOLD)).unwrap();
            let other = TcpListener::bind(("0.0.0.0", PORT + 1)).unwrap();
            std::thread::spawn(move || {
                for c in other.incoming().flatten() {
                    let mut c = c;
                    let _ = c.write_all(b"hello\n");
                }
            });
            std::thread::spawn(move || {
                for c in hold.incoming().flatten() {
                    std::thread::spawn(move || {
                        let mut c = c;
                        let _ = c.write_all(b"hello\n");
                        std::thread::sleep(Duration::from_secs(3));
                    });
                }
            });
            for c in l.incoming().flatten() {
                let mut c = c;
                let _ = c.write_all(b"hello\n");
            }
        });
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Takes the gateway's resolver and proxy ports for listeners of the test's own that say
    /// `hello` (Warren's netd, started with the first workspace, then cannot bind them and exits).
    fn fake_gateway_services(&self) {
        network::ensure_host(&self.f.dir.join("ws"), &self.cfg).unwrap();
        for port in [53, self.cfg.proxy_port] {
            let l = TcpListener::bind((self.gateway(), port)).unwrap();
            std::thread::spawn(move || {
                for c in l.incoming().flatten() {
                    let mut c = c;
                    let _ = c.write_all(format!("hello from {port}\n").as_bytes());
                }
            });
        }
    }

    fn create(&self, id: &str, caps: &[&str]) {
        let mut s = spec(&self.f, id);
        s.network = Network::Egress;
        s.security.cap_add = caps.iter().map(|c| c.to_string()).collect();
        self.rt.create(&s).unwrap();
        self.rt.start(id).unwrap();
    }

    fn internet_addr(&self, host: u8) -> String {
        format!("198.18.{}.{host}", self.n)
    }

    fn gateway(&self) -> Ipv4Addr {
        self.cfg.gateway()
    }

    /// Connects from the workspace to `addr:port`: `Ok(greeting)` or `Err(nc's error)`.
    fn connect(&self, id: &str, addr: &str, port: u16) -> Result<String, String> {
        let (code, out, err) = sh(&self.rt, id, &format!("nc -w 5 {addr} {port} </dev/null"));
        if code == 0 && out.contains("hello") {
            Ok(out)
        } else {
            Err(format!("exit {code}: {out}{err}"))
        }
    }

    /// Asserts the connection is refused at once (a TCP reset), not left to time out, by the
    /// workspace's policy (its denial counter goes up).
    fn refused(&self, id: &str, addr: &str, port: u16) {
        let before = self.denied(id);
        self.refused_by_host(id, addr, port);
        assert!(
            self.denied(id) > before,
            "{id} -> {addr}:{port} was refused, but not by its policy"
        );
    }

    /// Asserts the connection is refused at once (a TCP reset), not left to time out. For
    /// destinations where something listens (the host's own addresses are refused by the host's
    /// input rules, which count nothing).
    fn refused_by_host(&self, id: &str, addr: &str, port: u16) {
        match self.connect(id, addr, port) {
            Ok(out) => panic!("{id} reached {addr}:{port}: {out}"),
            Err(e) => assert!(e.contains("refused"), "{id} -> {addr}:{port}: {e}"),
        }
    }

    fn denied(&self, id: &str) -> u64 {
        self.rt
            .attachment(id)
            .unwrap()
            .unwrap()
            .1
            .denied_connections
    }

    fn reaches(&self, id: &str, addr: &str, port: u16) {
        if let Err(e) = self.connect(id, addr, port) {
            panic!("{id} cannot reach {addr}:{port}: {e}");
        }
    }

    /// Packets the bridge's anti-spoofing chain dropped so far.
    fn spoof_drops(&self) -> u64 {
        let (ok, out) = cmd(
            "nft",
            &["list", "chain", "bridge", &self.cfg.table, "prerouting"],
        );
        assert!(ok, "{out}");
        out.lines()
            .find(|l| l.contains("drop"))
            .and_then(|l| l.split("packets ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap()
    }

    fn nft_has(&self, what: &str) -> bool {
        let (_, out) = cmd("nft", &["list", "table", "inet", &self.cfg.table]);
        let (_, br) = cmd("nft", &["list", "table", "bridge", &self.cfg.table]);
        out.contains(what) || br.contains(what)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for id in self.rt.list().unwrap_or_default() {
            let _ = self.rt.destroy(&id);
        }
        if let Err(e) = self.rt.stop_netd() {
            eprintln!("{e}");
        }
        let _ = cmd("ip", &["netns", "del", &self.ns]);
        let _ = cmd("ip", &["link", "del", &self.uplink]);
        let _ = cmd("ip", &["link", "del", &self.cfg.bridge]);
        let _ = cmd("nft", &["delete", "table", "inet", &self.cfg.table]);
        let _ = cmd("nft", &["delete", "table", "bridge", &self.cfg.table]);
    }
}

fn net_rule(text: &str, ports: Option<(u16, u16)>) -> Rule {
    let (a, p) = text.split_once('/').unwrap_or((text, "32"));
    Rule {
        text: text.into(),
        target: Target::Net(Ipv4Net {
            addr: a.parse().unwrap(),
            prefix: p.parse().unwrap(),
        }),
        ports: ports.map(|(lo, hi)| PortRange { lo, hi }),
        sibling: false,
    }
}

fn stage(mode: EgressMode, allow: Vec<Rule>, deny: Vec<Rule>) -> EgressPlan {
    EgressPlan {
        stages: vec![Checked { mode, allow, deny }],
        limits: NetLimits::default(),
    }
}

#[test]
fn allowlist_admits_allowed_addresses_and_refuses_the_rest_at_once() {
    let net = Net::new(1);
    net.create("na1", &[]);
    // Before any plan: nothing.
    net.refused("na1", &net.internet_addr(1), PORT);
    let allowed = net.internet_addr(1);
    net.rt
        .set_egress(
            "na1",
            &stage(
                EgressMode::Allowlist,
                vec![net_rule(&allowed, Some((PORT, PORT)))],
                vec![],
            ),
        )
        .unwrap();
    net.reaches("na1", &allowed, PORT);
    net.refused("na1", &net.internet_addr(2), PORT);
    // The rule names one port: another is refused even on the allowed address.
    net.refused("na1", &allowed, PORT + 1);
    // Overlapping rules are fine (with and without ports).
    let n = net.n;
    net.rt
        .set_egress(
            "na1",
            &stage(
                EgressMode::Allowlist,
                vec![
                    net_rule(&allowed, Some((PORT, PORT))),
                    net_rule(&format!("198.18.{n}.0/24"), Some((PORT - 10, PORT + 1))),
                    net_rule(&format!("198.18.{n}.0/30"), None),
                    net_rule(&format!("198.18.{n}.2"), None),
                ],
                vec![net_rule(&format!("198.18.{n}.2"), Some((HOLD, HOLD)))],
            ),
        )
        .unwrap();
    net.reaches("na1", &net.internet_addr(2), PORT);
    net.refused("na1", &net.internet_addr(2), HOLD);
    net.reaches("na1", &allowed, HOLD);
    // The workspace's view: its address on eth0, the resolver on the gateway, no IPv6.
    let (att, counters) = net.rt.attachment("na1").unwrap().unwrap();
    assert!(counters.denied_connections >= 3, "{counters:?}");
    assert_eq!(att.address.octets()[..3], net.cfg.subnet.addr.octets()[..3]);
    let (_, out, _) = sh(
        &net.rt,
        "na1",
        "ip -4 addr show eth0; cat /etc/resolv.conf; ip -6 addr show dev eth0",
    );
    assert!(out.contains(&format!("{}/32", att.address)), "{out}");
    assert!(
        out.contains(&format!("nameserver {}", net.gateway())),
        "{out}"
    );
    assert!(!out.contains("inet6"), "{out}");
}

#[test]
fn deny_all_blocks_everything_and_set_egress_applies_to_the_next_connection() {
    let net = Net::new(2);
    net.create("nb1", &[]);
    let a = net.internet_addr(1);
    net.rt
        .set_egress("nb1", &stage(EgressMode::AllowAll, vec![], vec![]))
        .unwrap();
    net.reaches("nb1", &a, PORT);
    net.rt
        .set_egress("nb1", &stage(EgressMode::DenyAll, vec![], vec![]))
        .unwrap();
    net.refused("nb1", &a, PORT);
    net.rt
        .set_egress(
            "nb1",
            &stage(
                EgressMode::AllowAll,
                vec![],
                vec![net_rule(&format!("198.18.{}.0/24", net.n), None)],
            ),
        )
        .unwrap();
    net.refused("nb1", &a, PORT);
    // Two stages: the template's allows, the workspace's own denies; both must pass.
    let mut plan = stage(EgressMode::AllowAll, vec![], vec![]);
    plan.stages.push(Checked {
        mode: EgressMode::Allowlist,
        allow: vec![net_rule(&net.internet_addr(2), None)],
        deny: vec![],
    });
    net.rt.set_egress("nb1", &plan).unwrap();
    net.refused("nb1", &a, PORT);
    net.reaches("nb1", &net.internet_addr(2), PORT);
    // The plan survives a restart.
    net.rt.stop("nb1", Duration::from_secs(2)).unwrap();
    net.rt.start("nb1").unwrap();
    net.refused("nb1", &a, PORT);
    net.reaches("nb1", &net.internet_addr(2), PORT);
}

#[test]
fn allow_all_still_protects_private_ranges_and_the_host() {
    let net = Net::new(3);
    net.fake_gateway_services();
    net.create("nc1", &[]);
    net.rt
        .set_egress("nc1", &stage(EgressMode::AllowAll, vec![], vec![]))
        .unwrap();
    net.reaches("nc1", &net.internet_addr(1), PORT);
    let private = format!("10.251.{}.1", net.n);
    net.refused("nc1", &private, PORT);
    // Services of the host itself: on the gateway and on another of its addresses.
    let host = TcpListener::bind(("0.0.0.0", 0)).unwrap();
    let hport = host.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in host.incoming().flatten() {
            let mut c = c;
            let _ = c.write_all(b"hello\n");
        }
    });
    net.refused_by_host("nc1", &net.gateway().to_string(), hport);
    net.refused_by_host("nc1", &format!("198.19.{}.1", net.n), hport);
    // ...but the resolver's port on the gateway is open.
    net.reaches("nc1", &net.gateway().to_string(), 53);
    // An allow rule inside a protected range opens it (so the route was there all along).
    net.rt
        .set_egress(
            "nc1",
            &stage(EgressMode::AllowAll, vec![net_rule(&private, None)], vec![]),
        )
        .unwrap();
    net.reaches("nc1", &private, PORT);
    // Metadata: refused by the policy, whether or not the host has a route to it.
    net.refused("nc1", "169.254.169.254", 80);
}

#[test]
fn workspaces_cannot_reach_each_other_nor_escape_by_changing_their_address() {
    let net = Net::new(4);
    net.create("nd1", &[]);
    net.create("nd2", &["CAP_NET_ADMIN", "CAP_NET_RAW"]);
    let open = stage(EgressMode::AllowAll, vec![], vec![]);
    for id in ["nd1", "nd2"] {
        net.rt.set_egress(id, &open).unwrap();
        net.reaches(id, &net.internet_addr(1), PORT);
    }
    let (a1, _) = net.rt.attachment("nd1").unwrap().unwrap();
    let (a2, _) = net.rt.attachment("nd2").unwrap().unwrap();
    // Both listen (each reaches its own listener); neither can connect to the other.
    for id in ["nd1", "nd2"] {
        let (code, out, err) = sh(
            &net.rt,
            id,
            &format!("(nc -ll -p {PORT} -e echo hello >/dev/null 2>&1 &) ; sleep 0.2; nc -w 3 127.0.0.1 {PORT} </dev/null"),
        );
        assert_eq!((code, out.as_str()), (0, "hello\n"), "{err}");
    }
    net.refused("nd2", &a1.address.to_string(), PORT);
    net.refused("nd1", &a2.address.to_string(), PORT);
    // A sibling rule (what `workspace:NAME` becomes) opens exactly that workspace.
    let mut sibling = net_rule(&a1.address.to_string(), Some((PORT, PORT)));
    sibling.sibling = true;
    net.rt
        .set_egress("nd2", &stage(EgressMode::AllowAll, vec![sibling], vec![]))
        .unwrap();
    net.reaches("nd2", &a1.address.to_string(), PORT);
    net.refused("nd1", &a2.address.to_string(), PORT);
    // nd2 (with CAP_NET_ADMIN and CAP_NET_RAW) takes another address: nothing gets out any more, not even to the
    // resolver.
    let spoofed = Ipv4Addr::from(u32::from(a2.address) + 100);
    let (code, _, err) = sh(
        &net.rt,
        "nd2",
        &format!(
            "ip addr add {spoofed}/32 dev eth0 && ip addr del {}/32 dev eth0 && ip route replace default via {} dev eth0 onlink",
            a2.address,
            net.gateway()
        ),
    );
    assert_eq!(code, 0, "{err}");
    let dropped = net.spoof_drops();
    assert!(net.connect("nd2", &net.internet_addr(1), PORT).is_err());
    assert!(
        net.spoof_drops() > dropped,
        "the bridge did not drop the spoofed packets"
    );
    // ...nor with a changed MAC address and its own IP back.
    let (code, _, err) = sh(
        &net.rt,
        "nd2",
        &format!(
            "ip addr add {}/32 dev eth0 && ip addr del {spoofed}/32 dev eth0 && ip link set eth0 down && ip link set eth0 address 02:00:00:00:00:42 && ip link set eth0 up && ip route replace default via {} dev eth0 onlink",
            a2.address,
            net.gateway()
        ),
    );
    assert_eq!(code, 0, "{err}");
    let dropped = net.spoof_drops();
    assert!(net.connect("nd2", &net.internet_addr(1), PORT).is_err());
    assert!(
        net.spoof_drops() > dropped,
        "the bridge did not drop the spoofed frames"
    );
    net.reaches("nd1", &net.internet_addr(1), PORT);
}

#[test]
fn stop_crash_and_destroy_leave_nothing_and_leftovers_clean_up_after_a_killed_supervisor() {
    let net = Net::new(5);
    net.create("ne1", &[]);
    net.rt
        .set_egress("ne1", &stage(EgressMode::AllowAll, vec![], vec![]))
        .unwrap();
    let (att, _) = net.rt.attachment("ne1").unwrap().unwrap();
    let ipam = net.f.dir.join(format!("ws/.net/ipam/{}", att.address));
    assert!(ipam.exists());
    let link = |name: &str| std::path::Path::new("/sys/class/net").join(name).exists();
    assert!(link(&att.veth));
    assert!(net.nft_has("ws_ne1"));
    assert!(net.nft_has(&att.veth));
    net.rt.stop("ne1", Duration::from_secs(2)).unwrap();
    assert!(!link(&att.veth));
    assert!(!net.nft_has("ne1"), "rules left after stop");
    assert!(
        !net.nft_has(&att.veth),
        "anti-spoofing entry left after stop"
    );
    assert!(
        !net.nft_has(&att.address.to_string()),
        "map entry left after stop"
    );
    // Stopped, it keeps its address.
    assert!(ipam.exists());
    net.rt.start("ne1").unwrap();
    assert_eq!(net.rt.attachment("ne1").unwrap().unwrap().0, att);
    net.reaches("ne1", &net.internet_addr(1), PORT);
    // The init dies (killed from the host): the supervisor disconnects the workspace.
    let init = init_pid("ne1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(init),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for _ in 0..500 {
        if !matches!(
            net.rt.inspect("ne1").unwrap(),
            warren_runtime::Observed::Running { .. }
        ) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!link(&att.veth));
    assert!(!net.nft_has("ne1"), "rules left after the init crashed");
    net.rt.start("ne1").unwrap();
    net.reaches("ne1", &net.internet_addr(1), PORT);
    // The supervisor dies hard: its rules stay until the reconciler cleans up.
    let pid: i32 = std::fs::read_to_string(net.f.dir.join("ws/ne1/run/sup.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(net.nft_has("ws_ne1"));
    let gone = net.rt.gc_network_now(&["ne1".to_string()]).unwrap();
    assert_eq!(gone.chains, vec!["ne1".to_string()], "{gone:?}");
    assert!(!net.nft_has("ne1"));
    assert!(
        ipam.exists(),
        "the workspace still exists: it keeps its address"
    );
    net.rt.stop("ne1", Duration::from_secs(2)).unwrap();
    net.rt.destroy("ne1").unwrap();
    assert!(!ipam.exists());
    assert!(!link(&att.veth));
    assert!(!net.nft_has("ne1"));
    // An address whose workspace is gone is released by the reconciler.
    let stray = network::allocate(&net.f.dir.join("ws"), &net.cfg, "gone1").unwrap();
    let gone = net.rt.gc_network_now(&[]).unwrap();
    assert_eq!(gone.addresses, vec![stray]);
}

#[test]
fn denied_connections_are_counted_and_logged_to_the_nflog_group() {
    let net = Net::new(6);
    let mut listener = network::nflog::Listener::bind(net.cfg.log_group).unwrap();
    net.create("nf1", &[]);
    net.rt
        .set_egress(
            "nf1",
            &stage(
                EgressMode::AllowAll,
                vec![],
                vec![net_rule(&net.internet_addr(2), Some((PORT, PORT)))],
            ),
        )
        .unwrap();
    let before = net.rt.attachment("nf1").unwrap().unwrap().1;
    net.refused("nf1", &net.internet_addr(2), PORT);
    let (att, after) = net.rt.attachment("nf1").unwrap().unwrap();
    assert!(after.denied_connections > before.denied_connections);
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.extend(listener.recv(Some(Duration::from_millis(500))).unwrap());
        if !seen.is_empty() {
            break;
        }
    }
    let l = seen.first().expect("a logged packet");
    assert_eq!(l.workspace(), Some("nf1"));
    assert_eq!(l.saddr, att.address);
    assert_eq!(l.daddr.to_string(), net.internet_addr(2));
    assert_eq!(l.dport, Some(PORT));
    assert_eq!(l.protocol_name(), "tcp");
}

#[test]
fn connection_limit_refuses_connections_over_it() {
    let net = Net::new(7);
    net.create("ng1", &[]);
    let mut plan = stage(EgressMode::AllowAll, vec![], vec![]);
    plan.limits.max_connections = Some(2);
    net.rt.set_egress("ng1", &plan).unwrap();
    // Two connections held open (the listener keeps them), then a third.
    let a = net.internet_addr(1);
    let (code, out, err) = sh(
        &net.rt,
        "ng1",
        &format!(
            "(nc {a} {HOLD} >/dev/null </dev/null &); (nc {a} {HOLD} >/dev/null </dev/null &); sleep 0.5; nc -w 3 {a} {PORT} </dev/null"
        ),
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("refused"), "{out}{err}");
    // Once they are closed, connections are possible again.
    std::thread::sleep(Duration::from_secs(4));
    net.reaches("ng1", &a, PORT);
}

fn domain_rule(name: &str, ports: Option<(u16, u16)>) -> Rule {
    Rule {
        text: name.into(),
        target: Target::Domain(name.into()),
        ports: ports.map(|(lo, hi)| PortRange { lo, hi }),
        sibling: false,
    }
}

#[test]
fn domain_rules_admit_what_the_resolver_learned_and_send_web_traffic_to_the_proxy() {
    let net = Net::new(8);
    net.fake_gateway_services();
    net.create("nh1", &[]);
    let a1 = net.internet_addr(1);
    net.rt
        .set_egress(
            "nh1",
            &stage(
                EgressMode::Allowlist,
                vec![
                    domain_rule("one.example", None),
                    domain_rule("two.example", Some((PORT, PORT))),
                ],
                vec![],
            ),
        )
        .unwrap();
    // Nothing resolved yet: nothing reachable.
    net.refused("nh1", &a1, PORT);
    // The resolver learned one.example -> .1 (every port), two.example -> .2 (PORT only).
    let ttl = Duration::from_secs(30);
    network::learn(&net.cfg, "nh1", 0, &[(a1.parse().unwrap(), None, ttl)]).unwrap();
    network::learn(
        &net.cfg,
        "nh1",
        0,
        &[(
            net.internet_addr(2).parse().unwrap(),
            Some(PortRange { lo: PORT, hi: PORT }),
            ttl,
        )],
    )
    .unwrap();
    // Learning again (a renewed answer) is fine.
    network::learn(&net.cfg, "nh1", 0, &[(a1.parse().unwrap(), None, ttl)]).unwrap();
    net.reaches("nh1", &a1, PORT);
    net.reaches("nh1", &a1, HOLD);
    net.reaches("nh1", &net.internet_addr(2), PORT);
    net.refused("nh1", &net.internet_addr(2), HOLD);
    // Web ports go to the egress proxy on the gateway, whatever the destination.
    let got = net.connect("nh1", &net.internet_addr(2), 443).unwrap();
    assert!(
        got.contains(&format!("from {}", net.cfg.proxy_port)),
        "{got}"
    );
    // A plan without names sends nothing to the proxy (and drops what was learned).
    net.rt
        .set_egress(
            "nh1",
            &stage(EgressMode::Allowlist, vec![net_rule(&a1, None)], vec![]),
        )
        .unwrap();
    net.refused("nh1", &net.internet_addr(2), 443);
    net.refused("nh1", &net.internet_addr(2), PORT);
}

#[test]
fn bandwidth_limits_are_set_on_the_workspace_link_and_lifted() {
    let net = Net::new(9);
    net.create("ni1", &[]);
    let mut plan = stage(EgressMode::AllowAll, vec![], vec![]);
    plan.limits.egress_mbit = Some(5);
    plan.limits.ingress_mbit = Some(7);
    net.rt.set_egress("ni1", &plan).unwrap();
    let (att, _) = net.rt.attachment("ni1").unwrap().unwrap();
    let (_, qdisc) = cmd("tc", &["qdisc", "show", "dev", &att.veth]);
    assert!(qdisc.contains("tbf") && qdisc.contains("7Mbit"), "{qdisc}");
    let (_, rate) = cmd(
        "nft",
        &["list", "chain", "inet", &net.cfg.table, "ws_ni1_rate"],
    );
    assert!(rate.contains("limit rate over 625 kbytes/second"), "{rate}");
    let (_, map) = cmd("nft", &["list", "map", "inet", &net.cfg.table, "rate"]);
    assert!(map.contains(&att.address.to_string()), "{map}");
    net.reaches("ni1", &net.internet_addr(1), PORT);
    plan.limits = NetLimits::default();
    net.rt.set_egress("ni1", &plan).unwrap();
    let (_, qdisc) = cmd("tc", &["qdisc", "show", "dev", &att.veth]);
    assert!(!qdisc.contains("tbf"), "{qdisc}");
    let (_, map) = cmd("nft", &["list", "map", "inet", &net.cfg.table, "rate"]);
    assert!(!map.contains(&att.address.to_string()), "{map}");
    net.reaches("ni1", &net.internet_addr(1), PORT);
}

#[test]
fn a_plan_that_cannot_be_enforced_is_refused_and_the_workspace_does_not_run_without_its_network() {
    let net = Net::new(10);
    net.create("nj1", &[]);
    let unresolved = Rule {
        text: "workspace:db".into(),
        target: Target::Workspace("db".into()),
        ports: None,
        sibling: false,
    };
    let plan = stage(EgressMode::Allowlist, vec![unresolved], vec![]);
    let e = net.rt.set_egress("nj1", &plan).unwrap_err().to_string();
    assert!(
        e.contains("workspace:db") && e.contains("not resolved"),
        "{e}"
    );
    // Behind the runtime's back: the supervisor cannot connect it, so the workspace does not start.
    net.rt.stop("nj1", Duration::from_secs(2)).unwrap();
    std::fs::write(
        net.f.dir.join("ws/nj1/egress.json"),
        serde_json::to_vec(&plan).unwrap(),
    )
    .unwrap();
    let e = net.rt.start("nj1").unwrap_err().to_string();
    assert!(e.contains("not resolved"), "{e}");
    assert!(!matches!(
        net.rt.inspect("nj1").unwrap(),
        warren_runtime::Observed::Running { .. }
    ));
    assert!(!net.nft_has("nj1"), "rules left after a failed start");
    let (att, _) = net.rt.attachment("nj1").unwrap().unwrap();
    assert!(!std::path::Path::new("/sys/class/net")
        .join(&att.veth)
        .exists());
    // A workspace without a network of its own has no plan to set.
    let mut s = spec(&net.f, "nj2");
    s.network = Network::Isolated;
    net.rt.create(&s).unwrap();
    let e = net
        .rt
        .set_egress("nj2", &EgressPlan::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no network of its own"), "{e}");
    assert!(net.rt.attachment("nj2").unwrap().is_none());
}

#[test]
fn a_bridge_of_another_warren_instance_is_not_taken_over() {
    let net = Net::new(11);
    net.create("nk1", &[]);
    // A second runtime root configured with the same bridge.
    let other = fixture(Default::default());
    let rt = other.rt.clone().with_network(net.cfg.clone()).unwrap();
    let mut s = spec(&other, "nk2");
    s.network = Network::Egress;
    rt.create(&s).unwrap();
    let e = rt.start("nk2").unwrap_err().to_string();
    assert!(
        e.contains(&format!(
            "bridge {} belongs to something else",
            net.cfg.bridge
        )),
        "{e}"
    );
    // Nor does it clean up what it takes for leftovers there.
    let e = rt.gc_network_now(&[]).unwrap_err().to_string();
    assert!(e.contains("belongs to something else"), "{e}");
    rt.destroy("nk2").unwrap();
    // The first instance is untouched.
    net.rt
        .set_egress("nk1", &stage(EgressMode::AllowAll, vec![], vec![]))
        .unwrap();
    net.reaches("nk1", &net.internet_addr(1), PORT);
}

/// The host pid of a workspace's init: the process of its cgroup that is pid 1 in its namespace.
fn init_pid(id: &str) -> i32 {
    warren_runtime::cgroup::pids(&warren_runtime::spec::cgroup_path(id))
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("NSpid:"))
                    .and_then(|l| l.split_whitespace().last())
                    == Some("1")
            })
        })
        .expect("the init in the cgroup")
}

#[test]
fn host_setup_is_idempotent_and_safe_from_several_callers_at_once() {
    let net = Net::new(12);
    let root = net.f.dir.join("ws");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| network::ensure_host(&root, &net.cfg).unwrap());
        }
    });
    network::ensure_host(&root, &net.cfg).unwrap();
    let br = &net.cfg.bridge;
    let alias = std::fs::read_to_string(format!("/sys/class/net/{br}/ifalias")).unwrap();
    assert_eq!(
        alias.trim(),
        format!("warren:{}", std::fs::canonicalize(&root).unwrap().display())
    );
    let (_, addrs) = cmd("ip", &["-4", "addr", "show", "dev", br]);
    assert_eq!(
        addrs.matches(&format!("{}/24", net.gateway())).count(),
        1,
        "{addrs}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim(),
        "1"
    );
    let (_, table) = cmd("nft", &["list", "chain", "inet", &net.cfg.table, "forward"]);
    assert_eq!(table.matches("vmap @ws").count(), 1, "{table}");
    // And workspaces work after it.
    net.create("nl1", &[]);
    net.rt
        .set_egress("nl1", &stage(EgressMode::AllowAll, vec![], vec![]))
        .unwrap();
    net.reaches("nl1", &net.internet_addr(1), PORT);
}

#[test]
fn link_local_multicast_frames_do_not_reach_the_host_around_the_bridge() {
    let net = Net::new(13);
    net.create("nm1", &[]);
    net.rt
        .set_egress("nm1", &stage(EgressMode::AllowAll, vec![], vec![]))
        .unwrap();
    // A host service on every address of the host.
    let l = std::net::UdpSocket::bind(("0.0.0.0", 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let host_addr = format!("198.19.{}.1", net.n);
    // What the workspace sent (Warren's rules of another instance on this host may be the ones
    // that drop it: bridge tables see every bridge, and the guard every port).
    let sent_frames = || -> u64 {
        let (_, out, _) = sh(
            &net.rt,
            "nm1",
            "cat /sys/class/net/eth0/statistics/tx_packets",
        );
        out.trim().parse().unwrap()
    };
    let before = sent_frames();
    // The workspace sends its IP packets to an 802.1D reserved group address (frames a bridge
    // does not forward but hands to the host's IP stack as received on the port), with its own
    // addresses, carrying UDP to the gateway and to another address of the host.
    // (Sent from the workspace's network namespace by the test: busybox's `ip` cannot set a
    // neighbour, its `nc` has no UDP.)
    let gw = net.gateway().to_string();
    let pid = init_pid("nm1").to_string();
    let mut sent = 0;
    for last in ["00", "03", "0e"] {
        let mac = format!("01:80:c2:00:00:{last}");
        must(
            "nsenter",
            &[
                "-t",
                &pid,
                "-n",
                "ip",
                "neigh",
                "replace",
                &gw,
                "lladdr",
                &mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
        let ns = format!("/proc/{pid}/ns/net");
        let to = [format!("{gw}:{port}"), format!("{host_addr}:{port}")];
        std::thread::spawn(move || {
            let f = std::fs::File::open(ns).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let u = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            for a in to {
                u.send_to(b"side door", a.as_str()).unwrap();
            }
        })
        .join()
        .unwrap();
        sent += 2;
    }
    let mut buf = [0u8; 512];
    if let Ok((n, from)) = l.recv_from(&mut buf) {
        panic!(
            "the host received {:?} from {from}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    let after = sent_frames();
    assert!(
        after >= before + sent,
        "{sent} frames sent, {} left the workspace",
        after - before
    );
    // Its traffic through the bridge still flows.
    must(
        "nsenter",
        &["-t", &pid, "-n", "ip", "neigh", "del", &gw, "dev", "eth0"],
    );
    net.reaches("nm1", &net.internet_addr(1), PORT);
}

/// Sends `word N` lines to `addr:port` from workspace `id` over one connection, in the
/// background.
fn talk(net: &Net, id: &str, addr: &str, port: u16, word: &str) {
    let rt = net.rt.clone();
    let (id, script) = (
        id.to_string(),
        format!(
            "i=0; while true; do i=$((i+1)); echo {word} $i; sleep 0.1; done | nc {addr} {port}"
        ),
    );
    std::thread::spawn(move || sh(&rt, &id, &script));
}

/// Takes what `rx` receives during `time` (what was in flight).
fn drain(rx: &std::sync::mpsc::Receiver<String>, time: Duration) {
    let end = std::time::Instant::now() + time;
    while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
        if rx.recv_timeout(left).is_err() {
            break;
        }
    }
}

#[test]
fn a_tightened_plan_stops_connections_opened_under_the_old_one() {
    let net = Net::new(14);
    net.create("nn1", &[]);
    net.rt
        .set_egress("nn1", &stage(EgressMode::AllowAll, vec![], vec![]))
        .unwrap();
    // A listener in the fake internet that passes on every line it receives.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let path = format!("/run/netns/{}", net.ns);
    let port = PORT + 3;
    std::thread::spawn(move || {
        use std::io::BufRead;
        let f = std::fs::File::open(path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = TcpListener::bind(("0.0.0.0", port)).unwrap();
        for c in l.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(c).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let a = net.internet_addr(1);
    talk(&net, "nn1", &a, port, "tick");
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the long-lived connection passes data");
    // The plan no longer allows the destination: the open connection stops passing data.
    net.rt
        .set_egress("nn1", &stage(EgressMode::DenyAll, vec![], vec![]))
        .unwrap();
    drain(&rx, Duration::from_secs(1));
    if let Ok(line) = rx.recv_timeout(Duration::from_secs(2)) {
        panic!("the connection still passes data after the plan denied it: {line}");
    }
    // A plan that still allows it leaves connections alone.
    net.rt
        .set_egress("nn1", &stage(EgressMode::AllowAll, vec![], vec![]))
        .unwrap();
    talk(&net, "nn1", &a, port, "again");
    let first = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a new connection passes data");
        if l.starts_with("again") {
            break l;
        }
    };
    let mut plan = stage(EgressMode::AllowAll, vec![], vec![]);
    plan.stages.push(Checked {
        mode: EgressMode::AllowAll,
        allow: vec![],
        deny: vec![],
    });
    net.rt.set_egress("nn1", &plan).unwrap();
    drain(&rx, Duration::from_millis(500));
    // (The first connection, stalled while denied, may go on too now: skip its lines.)
    let later = loop {
        let l = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a connection the new plan allows goes on");
        if l.starts_with("again") {
            break l;
        }
    };
    assert_ne!(later, first);
}

#[test]
fn the_reconciler_keeps_a_workspace_that_started_after_it_looked() {
    let net = Net::new(15);
    net.create("no1", &[]);
    net.rt
        .set_egress("no1", &stage(EgressMode::AllowAll, vec![], vec![]))
        .unwrap();
    let root = net.f.dir.join("ws");
    let ids = ["no1".to_string()];
    // The caller saw it not running (it was starting); under its lock it runs: kept.
    let done = network::leftovers(&root, &net.cfg, &[], &ids, &|_| true).unwrap();
    assert!(done.chains.is_empty() && done.veths.is_empty(), "{done:?}");
    net.reaches("no1", &net.internet_addr(1), PORT);
    // While its supervisor holds the workspace's network lock (installing its rules), the
    // reconciler waits.
    let lock = network::workspace_lock(&root.join("no1")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (r, c) = (root.clone(), net.cfg.clone());
    std::thread::spawn(move || {
        let ids = ["no1".to_string()];
        let _ = tx.send(network::leftovers(&r, &c, &[], &ids, &|_| true).map(|d| d.chains));
    });
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
    drop(lock);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        Ok(vec![])
    );
    net.reaches("no1", &net.internet_addr(1), PORT);
}

#[test]
fn the_connection_limit_counts_connections_sent_to_the_proxy() {
    let net = Net::new(17);
    // A "proxy" on the gateway that holds each connection for 3 s.
    network::ensure_host(&net.f.dir.join("ws"), &net.cfg).unwrap();
    let l = TcpListener::bind((net.gateway(), net.cfg.proxy_port)).unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut c = c;
                let _ = c.write_all(b"hello\n");
                std::thread::sleep(Duration::from_secs(3));
            });
        }
    });
    net.create("nq1", &[]);
    let a = net.internet_addr(1);
    let mut plan = stage(
        EgressMode::Allowlist,
        vec![domain_rule("one.example", None), net_rule(&a, None)],
        vec![],
    );
    plan.limits.max_connections = Some(2);
    net.rt.set_egress("nq1", &plan).unwrap();
    net.reaches("nq1", &a, PORT);
    // Two web connections (to the proxy) held open, then a forwarded one: over the limit.
    let (code, out, err) = sh(
        &net.rt,
        "nq1",
        &format!(
            "(nc {a} 443 >/dev/null </dev/null &); (nc {a} 443 >/dev/null </dev/null &); sleep 0.5; nc -w 3 {a} {PORT} </dev/null"
        ),
    );
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("refused"), "{out}{err}");
    std::thread::sleep(Duration::from_secs(4));
    net.reaches("nq1", &a, PORT);
}

/// `warren bench --net --quick` runs end to end: a workspace under an allowlist reaches the
/// benchmark's remote, its resolver answers, and every figure is there (no timing is asserted).
#[test]
fn the_network_benchmark_runs() {
    let o = Command::new(crate::util::warren_exe())
        .args(["bench", "--net", "--quick", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for (k, f) in [
        ("throughput_mib_s", "warren"),
        ("throughput_mib_s", "loopback"),
        ("throughput_mib_s", "host_veth"),
        ("connections_per_s", "warren"),
        ("connections_per_s", "loopback"),
        ("dns_ms", "warren_p50"),
        ("dns_ms", "warren_allow_all_p50"),
        ("dns_ms", "direct_p50"),
    ] {
        assert!(v[k][f].as_f64().is_some_and(|x| x > 0.0), "{k}.{f}: {v}");
    }
    // Its remote namespace is gone.
    let netns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!netns.contains("wbench-"), "{netns}");
}
