//! The servers end to end on loopback addresses: real UDP/TCP DNS clients against a fake upstream
//! resolver, real TCP clients through the proxy to a local listener, the control socket. Only the
//! nftables sets (recorded) and the redirect's original destination (supplied) are stand-ins.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket, UnixStream};
use warren_runtime::network::{Attachment, Denial, NetConfig};

use crate::dns::tests::{query, response};
use crate::dns::{self, TYPE_A, TYPE_AAAA};
use crate::host::{Learned, Plumbing, Sets};
use crate::sniff::tests::{client_hello, records};
use crate::{serve, Listeners, Netd};

const GATEWAY: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 1);
const WS: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 9);
const WEB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// What the upstream answers for `late.allowed.test`, after 500 ms.
const LATE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);

#[derive(Default)]
struct FakeSets {
    learned: Mutex<Vec<(String, usize, Vec<Learned>)>>,
}

impl Sets for FakeSets {
    fn learn(&self, _: &NetConfig, id: &str, stage: usize, e: &[Learned]) -> anyhow::Result<()> {
        self.learned
            .lock()
            .unwrap()
            .push((id.to_string(), stage, e.to_vec()));
        Ok(())
    }
}

/// The "redirect": every connection was going to `dst`; dialing anything reaches `real`. `web`
/// (a listener on this host) stands for the internet; any other local address is the host, as
/// the real check says.
struct FakePlumbing {
    dst: Mutex<SocketAddrV4>,
    real: Mutex<SocketAddr>,
    web: SocketAddr,
}

impl FakePlumbing {
    fn new(dst: SocketAddrV4, web: SocketAddr) -> FakePlumbing {
        FakePlumbing {
            dst: Mutex::new(dst),
            real: Mutex::new(web),
            web,
        }
    }
}

impl Plumbing for FakePlumbing {
    fn original_dst(&self, _: &TcpStream) -> std::io::Result<SocketAddrV4> {
        Ok(*self.dst.lock().unwrap())
    }
    fn dial(&self, _: SocketAddrV4) -> SocketAddr {
        *self.real.lock().unwrap()
    }
    fn reached_host(&self, up: &TcpStream) -> bool {
        up.peer_addr().ok() != Some(self.web) && crate::host::reached_host(up)
    }
}

/// The fake upstream's answer to a query.
fn upstream_answer(q: &[u8]) -> Vec<u8> {
    let p = dns::parse_query(q).unwrap();
    match p.name().as_deref() {
        Some("www.allowed.test") => response(
            q,
            &[("www.allowed.test", "edge.cdn.test")],
            &[
                ("edge.cdn.test", WEB, 5),
                // DNS rebinding: never learned.
                ("edge.cdn.test", Ipv4Addr::new(10, 0, 0, 9), 5),
            ],
        ),
        Some("late.allowed.test") => response(q, &[], &[("late.allowed.test", LATE, 600)]),
        Some("other.allowed.test") => response(
            q,
            &[],
            &[("other.allowed.test", Ipv4Addr::new(198, 51, 100, 3), 600)],
        ),
        _ => {
            let mut r = response(q, &[], &[]);
            r[3] = (r[3] & 0xF0) | dns::NXDOMAIN;
            r
        }
    }
}

/// A UDP socket and a TCP listener on one ephemeral port of `ip`. The
/// kernel picks the UDP port; TCP may already have it taken by another test,
/// so pick again until both are free.
async fn udp_and_tcp(ip: Ipv4Addr) -> (UdpSocket, TcpListener) {
    for _ in 0..100 {
        let udp = UdpSocket::bind((ip, 0)).await.unwrap();
        if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()).await {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP on {ip}");
}

/// A fake upstream resolver on UDP and TCP; returns its address and the names it was asked.
async fn fake_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let (udp, tcp) = udp_and_tcp(Ipv4Addr::LOCALHOST).await;
    let udp = Arc::new(udp);
    let addr = udp.local_addr().unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let a = asked.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
            let q = &buf[..n];
            let name = dns::parse_query(q).unwrap().name().unwrap();
            a.lock().unwrap().push(name.clone());
            // A resolver that never answers these.
            if name.starts_with("slow.") {
                continue;
            }
            if name.starts_with("late.") {
                let (u, answer) = (udp.clone(), upstream_answer(q));
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = u.send_to(&answer, peer).await;
                });
                continue;
            }
            udp.send_to(&upstream_answer(q), peer).await.unwrap();
        }
    });
    let a = asked.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tcp.accept().await.unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).await.unwrap();
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut q).await.unwrap();
            a.lock()
                .unwrap()
                .push(dns::parse_query(&q).unwrap().name().unwrap());
            let r = upstream_answer(&q);
            let mut out = (r.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&r);
            s.write_all(&out).await.unwrap();
        }
    });
    (addr, asked)
}

/// A "web server": answers each connection with 200 and echoes what it read first.
async fn fake_web() -> (SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                // Read until the client's first message is complete (a request head or a whole
                // ClientHello) or it pauses.
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await
                {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                seen.lock().unwrap().push(got);
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
                    )
                    .await;
            });
        }
    });
    (addr, seen)
}

fn write_root(root: &Path, upstream: SocketAddr, allow: &[&str]) {
    std::fs::create_dir_all(root.join(".net")).unwrap();
    let cfg = NetConfig {
        subnet: warren_api::net::Ipv4Net {
            addr: Ipv4Addr::new(127, 77, 0, 0),
            prefix: 16,
        },
        dns_upstream: vec![upstream],
        ..NetConfig::default()
    };
    std::fs::write(
        root.join(".net/config.json"),
        serde_json::to_vec(&cfg).unwrap(),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("ws1")).unwrap();
    let att = Attachment {
        id: "ws1".into(),
        address: WS,
        veth: "wvws1".into(),
    };
    std::fs::write(root.join("ws1/net.json"), serde_json::to_vec(&att).unwrap()).unwrap();
    let policy: warren_api::net::NetworkPolicy = serde_json::from_value(serde_json::json!({
        "egress": "allowlist", "allow": allow, "deny": ["bad.allowed.test"]
    }))
    .unwrap();
    let plan = warren_runtime::network::EgressPlan {
        stages: vec![policy.check().unwrap().0],
        limits: Default::default(),
    };
    std::fs::write(
        root.join("ws1/egress.json"),
        serde_json::to_vec(&plan).unwrap(),
    )
    .unwrap();
}

async fn ask_udp(from: Ipv4Addr, server: SocketAddr, id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let s = UdpSocket::bind((from, 0)).await.unwrap();
    s.send_to(&query(id, name, qtype), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), s.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    buf.truncate(n);
    buf
}

async fn ask_tcp(server: SocketAddr, id: u16, name: &str) -> Vec<u8> {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(WS.into(), 0)).unwrap();
    let mut s = sock.connect(server).await.unwrap();
    let q = query(id, name, TYPE_A);
    let mut out = (q.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&q);
    s.write_all(&out).await.unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.unwrap();
    let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut r).await.unwrap();
    r
}

/// Connects to the proxy from the workspace's address, sends `chunks` (pausing between them) and
/// returns all it reads back.
async fn through_proxy(proxy: SocketAddr, chunks: &[&[u8]]) -> Vec<u8> {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(WS.into(), 0)).unwrap();
    let mut s = sock.connect(proxy).await.unwrap();
    for c in chunks {
        s.write_all(c).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut back = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back)).await;
    back
}

fn denials(root: &Path) -> Vec<Denial> {
    std::fs::read_to_string(root.join(".net/denials.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn control(root: &Path, line: &str) -> String {
    let mut s = UnixStream::connect(root.join(".net/netd.sock"))
        .await
        .unwrap();
    s.write_all(line.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_and_proxy_enforce_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (upstream, asked) = fake_upstream().await;
    let (web, seen) = fake_web().await;
    write_root(root, upstream, &["*.allowed.test"]);

    let sets = Arc::new(FakeSets::default());
    let plumbing = Arc::new(FakePlumbing::new(SocketAddrV4::new(WEB, 80), web));
    let netd = Netd::new(root.to_path_buf(), sets.clone(), plumbing.clone()).unwrap();
    let (dns_udp, dns_tcp) = udp_and_tcp(GATEWAY).await;
    let dns_addr = dns_udp.local_addr().unwrap();
    let proxy = TcpListener::bind((GATEWAY, 0)).await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let control_l = tokio::net::UnixListener::bind(root.join(".net/netd.sock")).unwrap();
    let (nflog, rx) = tokio::sync::mpsc::channel(8);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        netd,
        Listeners {
            dns_udp,
            dns_tcp,
            proxy,
            control: control_l,
        },
        rx,
        async move {
            let _ = stop_rx.await;
        },
    ));

    // An allowed name resolves (with the client's id), and its addresses are learned first,
    // following the CNAME, without the private one, for twice the answer's TTL (at least 30 s).
    let r = ask_udp(WS, dns_addr, 0xBEEF, "www.allowed.test", TYPE_A).await;
    let p = dns::parse_response(&r).unwrap();
    assert_eq!(p.id, 0xBEEF);
    assert_eq!(p.rcode, dns::NOERROR);
    assert_eq!(dns::chain_addresses("www.allowed.test", &p)[0].0, WEB);
    assert_eq!(
        sets.learned.lock().unwrap().clone(),
        vec![(
            "ws1".to_string(),
            0,
            vec![(WEB, None, Duration::from_secs(60))]
        )]
    );

    // Denied names are NXDOMAIN and never asked upstream.
    for name in ["bad.allowed.test", "evil.test", "allowed.test"] {
        let r = ask_udp(WS, dns_addr, 7, name, TYPE_A).await;
        assert_eq!(
            dns::parse_response(&r).unwrap().rcode,
            dns::NXDOMAIN,
            "{name}"
        );
    }
    assert_eq!(
        asked.lock().unwrap().clone(),
        vec!["www.allowed.test".to_string()]
    );
    // The journal is written by its own thread: wait for it.
    assert!(
        wait_for(|| {
            let d = denials(root);
            d.iter().any(|d| {
                d.kind == "dns"
                    && d.name.as_deref() == Some("bad.allowed.test")
                    && d.why == "bad.allowed.test"
            }) && d
                .iter()
                .any(|d| d.kind == "dns" && d.name.as_deref() == Some("evil.test"))
        })
        .await
    );

    // AAAA: empty, NOERROR.
    let r = ask_udp(WS, dns_addr, 8, "www.allowed.test", TYPE_AAAA).await;
    let p = dns::parse_response(&r).unwrap();
    assert_eq!((p.rcode, p.a.len(), r[7]), (dns::NOERROR, 0, 0));

    // Not a workspace: REFUSED.
    let r = ask_udp(STRANGER, dns_addr, 9, "www.allowed.test", TYPE_A).await;
    assert_eq!(dns::parse_response(&r).unwrap().rcode, dns::REFUSED);

    // Garbage: FORMERR, and the server lives on.
    let s = UdpSocket::bind((WS, 0)).await.unwrap();
    s.send_to(
        &[0x12, 0x34, 0x01, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0xff],
        dns_addr,
    )
    .await
    .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), s.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dns::parse_response(&buf[..n]).unwrap().rcode, dns::FORMERR);

    // DNS over TCP.
    let r = ask_tcp(dns_addr, 0x4242, "other.allowed.test").await;
    let p = dns::parse_response(&r).unwrap();
    assert_eq!((p.id, p.rcode), (0x4242, dns::NOERROR));

    // The proxy: an allowed, resolved name goes through, request intact.
    let req = b"GET /x HTTP/1.1\r\nHost: www.allowed.test\r\n\r\n";
    let back = through_proxy(proxy_addr, &[&req[..10], &req[10..]]).await;
    assert!(
        back.starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&back)
    );
    assert_eq!(seen.lock().unwrap().last().unwrap(), &req.to_vec());

    // A Host not allowed, or allowed but never resolved to this address: 403, journaled.
    for host in ["evil.test", "other.allowed.test"] {
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let back = through_proxy(proxy_addr, &[req.as_bytes()]).await;
        let text = String::from_utf8_lossy(&back);
        assert!(text.starts_with("HTTP/1.1 403 Forbidden"), "{host}: {text}");
        assert!(text.contains(host), "{text}");
    }
    assert!(
        wait_for(|| denials(root).iter().any(|d| d.kind == "proxy"
            && d.name.as_deref() == Some("evil.test")
            && d.address == Some(WEB)
            && d.port == Some(80)))
        .await
    );
    let forwarded = seen.lock().unwrap().len();

    // TLS: a ClientHello split over records and segments, with an allowed SNI, goes through as is.
    *plumbing.dst.lock().unwrap() = SocketAddrV4::new(WEB, 443);
    let hello = records(&client_hello(Some("www.allowed.test")), 60);
    let back = through_proxy(proxy_addr, &[&hello[..3], &hello[3..100], &hello[100..]]).await;
    assert!(back.starts_with(b"HTTP/1.1 200"));
    assert_eq!(seen.lock().unwrap().last().unwrap(), &hello);
    // A refused SNI, or none: closed without a byte, nothing forwarded.
    for sni in [Some("evil.test"), None] {
        let hello = records(&client_hello(sni), 16384);
        assert!(
            through_proxy(proxy_addr, &[&hello]).await.is_empty(),
            "{sni:?}"
        );
    }
    assert_eq!(seen.lock().unwrap().len(), forwarded + 1);

    // Reload re-learns the names still allowed...
    sets.learned.lock().unwrap().clear();
    assert_eq!(control(root, "reload\n").await, "ok\n");
    let learned = sets.learned.lock().unwrap().clone();
    assert!(learned
        .iter()
        .any(|(id, stage, e)| id == "ws1" && *stage == 0 && e.iter().any(|x| x.0 == WEB)));
    assert!(control(root, "what\n").await.starts_with("error:"));
    // ...and once the policy no longer allows them, forgets them: the proxy refuses.
    write_root(root, upstream, &["*.other.test"]);
    assert_eq!(control(root, "reload\n").await, "ok\n");
    *plumbing.dst.lock().unwrap() = SocketAddrV4::new(WEB, 80);
    let back = through_proxy(proxy_addr, &[req]).await;
    assert!(back.starts_with(b"HTTP/1.1 403"));

    // Refused packets the NFLOG listener reports land in the journal as `connect` denials.
    nflog
        .send(crate::host::connect_denial(
            "ws1".into(),
            Ipv4Addr::new(192, 0, 2, 1),
            Some(22),
            "tcp".into(),
        ))
        .await
        .unwrap();
    let mut found = false;
    for _ in 0..200 {
        if denials(root)
            .iter()
            .any(|d| d.kind == "connect" && d.port == Some(22))
        {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(found, "the connect denial was journaled");

    let _ = stop_tx.send(());
    server.await.unwrap();
}

#[test]
fn run_steps_aside_for_a_running_netd_and_needs_a_config() {
    use nix::fcntl::{Flock, FlockArg};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    // No config: a clear error.
    let e = crate::run(root).unwrap_err();
    assert!(
        format!("{e:#}").contains("config.json does not exist"),
        "{e:#}"
    );
    // Another netd holds the lock: quietly done.
    let f = std::fs::File::create(root.join(".net/netd.lock")).unwrap();
    let _held = Flock::lock(f, FlockArg::LockExclusiveNonblock).unwrap();
    crate::run(root).unwrap();
}

const WS2: Ipv4Addr = Ipv4Addr::new(127, 77, 0, 3);

/// Adds workspace `id` at `addr` with one stage of `policy` and `max_connections`.
fn write_ws(
    root: &Path,
    id: &str,
    addr: Ipv4Addr,
    policy: serde_json::Value,
    max_connections: Option<u32>,
) {
    std::fs::create_dir_all(root.join(id)).unwrap();
    let att = Attachment {
        id: id.into(),
        address: addr,
        veth: format!("wv{id}"),
    };
    std::fs::write(
        root.join(id).join("net.json"),
        serde_json::to_vec(&att).unwrap(),
    )
    .unwrap();
    let policy: warren_api::net::NetworkPolicy = serde_json::from_value(policy).unwrap();
    let plan = warren_runtime::network::EgressPlan {
        stages: vec![policy.check().unwrap().0],
        limits: warren_api::net::NetLimits {
            max_connections,
            ..Default::default()
        },
    };
    std::fs::write(
        root.join(id).join("egress.json"),
        serde_json::to_vec(&plan).unwrap(),
    )
    .unwrap();
}

struct Running {
    dns: SocketAddr,
    proxy: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap();
    }
}

async fn start(root: &Path, plumbing: Arc<FakePlumbing>, limits: crate::server::Limits) -> Running {
    let netd = Netd::with_limits(
        root.to_path_buf(),
        Arc::new(FakeSets::default()),
        plumbing,
        limits,
    )
    .unwrap();
    let (dns_udp, dns_tcp) = udp_and_tcp(GATEWAY).await;
    let dns = dns_udp.local_addr().unwrap();
    let proxy = TcpListener::bind((GATEWAY, 0)).await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let control = tokio::net::UnixListener::bind(root.join(".net/netd.sock")).unwrap();
    let (_nflog, rx) = tokio::sync::mpsc::channel(8);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        netd,
        Listeners {
            dns_udp,
            dns_tcp,
            proxy,
            control,
        },
        rx,
        async move {
            let _ = stop_rx.await;
        },
    ));
    Running {
        dns,
        proxy: proxy_addr,
        stop,
        server,
    }
}

/// A server that accepts connections and keeps them, counting them and the bytes they sent.
async fn holder() -> (SocketAddr, Arc<Mutex<(usize, usize)>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new((0, 0)));
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            s2.lock().unwrap().0 += 1;
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    seen.lock().unwrap().1 += n;
                }
            });
        }
    });
    (addr, seen)
}

/// A connection to the proxy from `from` that sent `head`.
async fn proxied(from: Ipv4Addr, proxy: SocketAddr, head: &[u8]) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(from.into(), 0)).unwrap();
    let mut s = sock.connect(proxy).await.unwrap();
    s.write_all(head).await.unwrap();
    s
}

/// Whether `s` is closed (EOF or reset) within a few seconds rather than kept open.
async fn closed(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .is_ok()
}

async fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..400 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: 203.0.113.7\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refuses_a_destination_that_turns_out_to_be_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (upstream, _) = fake_upstream().await;
    let (web, _) = fake_web().await;
    write_root(root, upstream, &["*.allowed.test", "203.0.113.0/24"]);
    // A service of the host's: what the allowed address really lands on.
    let (service, got) = holder().await;
    let plumbing = Arc::new(FakePlumbing::new(SocketAddrV4::new(WEB, 80), web));
    *plumbing.real.lock().unwrap() = service;
    let r = start(root, plumbing.clone(), Default::default()).await;
    let back = through_proxy(r.proxy, &[HEAD]).await;
    let text = String::from_utf8_lossy(&back);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("protected:host"), "{text}");
    assert_eq!(got.lock().unwrap().1, 0, "the host's service got bytes");
    assert!(
        wait_for(|| denials(root)
            .iter()
            .any(|d| d.kind == "proxy" && d.why == "protected:host" && d.address == Some(WEB)))
        .await
    );
    // TLS: closed without a byte.
    *plumbing.dst.lock().unwrap() = SocketAddrV4::new(WEB, 443);
    let hello = records(&client_hello(Some("www.allowed.test")), 16384);
    assert!(through_proxy(r.proxy, &[&hello]).await.is_empty());
    assert_eq!(got.lock().unwrap().1, 0);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_workspace_cannot_starve_dns_for_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (upstream, _) = fake_upstream().await;
    let (web, _) = fake_web().await;
    write_root(root, upstream, &["*.allowed.test"]);
    write_ws(
        root,
        "ws2",
        WS2,
        serde_json::json!({"egress": "allowlist", "allow": ["*.allowed.test"]}),
        None,
    );
    let plumbing = Arc::new(FakePlumbing::new(SocketAddrV4::new(WEB, 80), web));
    let limits = crate::server::Limits {
        dns_per_source: 2,
        dns_tcp_per_source: 1,
        ..Default::default()
    };
    let r = start(root, plumbing, limits).await;

    // TCP: ws1 holds its one connection; its next is closed, ws2's is served.
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(WS.into(), 0)).unwrap();
    let held = sock.connect(r.dns).await.unwrap();
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(WS.into(), 0)).unwrap();
    let mut second = sock.connect(r.dns).await.unwrap();
    assert!(closed(&mut second).await, "ws1's second DNS connection");
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(WS2.into(), 0)).unwrap();
    let mut s = sock.connect(r.dns).await.unwrap();
    let q = query(5, "other.allowed.test", TYPE_A);
    let mut out = (q.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&q);
    s.write_all(&out).await.unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.unwrap();
    let mut a = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut a).await.unwrap();
    assert_eq!(dns::parse_response(&a).unwrap().rcode, dns::NOERROR);
    drop(held);

    // UDP: two queries ws1 is waiting on use its share...
    let slow = UdpSocket::bind((WS, 0)).await.unwrap();
    for id in [1, 2] {
        slow.send_to(&query(id, "slow.allowed.test", TYPE_A), r.dns)
            .await
            .unwrap();
    }
    // ...so its next is SERVFAIL at once, while ws2 is answered.
    let a = ask_udp(WS, r.dns, 3, "www.allowed.test", TYPE_A).await;
    assert_eq!(dns::parse_response(&a).unwrap().rcode, dns::SERVFAIL);
    let a = ask_udp(WS2, r.dns, 4, "www.allowed.test", TYPE_A).await;
    assert_eq!(dns::parse_response(&a).unwrap().rcode, dns::NOERROR);
    // Once its queries are done (the upstream timed out), ws1 is answered again.
    let mut buf = [0u8; 512];
    for _ in 0..2 {
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), slow.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(dns::parse_response(&buf[..n]).unwrap().rcode, dns::SERVFAIL);
    }
    let mut ok = false;
    for i in 0..50 {
        let a = ask_udp(WS, r.dns, 100 + i, "www.allowed.test", TYPE_A).await;
        if dns::parse_response(&a).unwrap().rcode == dns::NOERROR {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "ws1 got its share back");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_caps_each_workspace_and_closes_idle_connections() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (upstream, _) = fake_upstream().await;
    let (hold, seen) = holder().await;
    write_root(root, upstream, &[]);
    let open = serde_json::json!({"egress": "allowlist", "allow": ["203.0.113.0/24"]});
    write_ws(root, "ws1", WS, open.clone(), Some(2));
    write_ws(root, "ws2", WS2, open, None);
    let plumbing = Arc::new(FakePlumbing::new(SocketAddrV4::new(WEB, 80), hold));
    let limits = crate::server::Limits {
        proxy_idle: Duration::from_secs(3600),
        ..Default::default()
    };
    let r = start(root, plumbing.clone(), limits).await;
    // ws1 may hold two (its plan's max_connections); the third is closed, never forwarded.
    let a = proxied(WS, r.proxy, HEAD).await;
    let _b = proxied(WS, r.proxy, HEAD).await;
    assert!(wait_for(|| seen.lock().unwrap().0 == 2).await);
    let mut c = proxied(WS, r.proxy, HEAD).await;
    assert!(closed(&mut c).await, "ws1's third connection");
    // ws2 is not held back by it.
    let _d = proxied(WS2, r.proxy, HEAD).await;
    assert!(wait_for(|| seen.lock().unwrap().0 == 3).await);
    // A connection ws1 closes gives its slot back.
    drop(a);
    let mut ok = false;
    for _ in 0..50 {
        let mut e = proxied(WS, r.proxy, HEAD).await;
        let mut byte = [0u8; 1];
        if tokio::time::timeout(Duration::from_millis(300), e.read(&mut byte))
            .await
            .is_err()
        {
            ok = true;
            break;
        }
    }
    assert!(ok, "ws1 got a slot back");
    r.stop().await;

    // Idle connections are closed (both ends).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write_root(root, upstream, &[]);
    write_ws(
        root,
        "ws1",
        WS,
        serde_json::json!({"egress": "allowlist", "allow": ["203.0.113.0/24"]}),
        None,
    );
    let (hold, seen) = holder().await;
    let plumbing = Arc::new(FakePlumbing::new(SocketAddrV4::new(WEB, 80), hold));
    let limits = crate::server::Limits {
        proxy_idle: Duration::from_millis(500),
        ..Default::default()
    };
    let r = start(root, plumbing, limits).await;
    let mut s = proxied(WS, r.proxy, HEAD).await;
    assert!(wait_for(|| seen.lock().unwrap().0 == 1).await);
    assert!(
        closed(&mut s).await,
        "an idle proxied connection stays open"
    );
    assert_eq!(seen.lock().unwrap().1, HEAD.len());
    r.stop().await;
}

#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard.min(1024), hard).unwrap();
    crate::raise_nofile();
    assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_decided_before_a_reload_is_not_learned_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (upstream, _) = fake_upstream().await;
    let (web, _) = fake_web().await;
    write_root(root, upstream, &["*.allowed.test"]);
    let sets = Arc::new(FakeSets::default());
    let plumbing = Arc::new(FakePlumbing::new(SocketAddrV4::new(WEB, 80), web));
    let netd = Netd::new(root.to_path_buf(), sets.clone(), plumbing).unwrap();
    // Allowed when asked; the upstream answers late; meanwhile the plan changes and netd reloads
    // (as `set_egress` has it before rebuilding the rules).
    let asked = tokio::spawn({
        let netd = netd.clone();
        async move {
            netd.answer(WS, &query(7, "late.allowed.test", dns::TYPE_A), false)
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    write_root(root, upstream, &["*.other.test"]);
    netd.reload().await.unwrap();
    let answer = asked.await.unwrap().expect("an answer");
    assert_eq!(answer[3] & 0x0f, dns::NXDOMAIN);
    assert!(
        sets.learned
            .lock()
            .unwrap()
            .iter()
            .all(|(_, _, e)| e.iter().all(|x| x.0 != LATE)),
        "the old plan's answer was learned"
    );
}
