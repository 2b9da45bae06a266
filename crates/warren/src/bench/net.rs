//! `warren bench --net`: Warren's egress path against the host's plain loopback, and Warren's
//! resolver against a direct query.
//!
//! Brings up a busybox workspace with the embedded engine (its own network namespace, veth, bridge,
//! nftables rules and NAT, as every workspace has), under an allowlist policy naming the benchmark
//! server's address and `*.bench.test`. A "remote" network namespace made for the run holds the
//! servers (198.18.250.1, routed from the host). The clients are threads of this process that
//! entered the workspace's network namespace, so the packets take the workspace's path:
//! workspace veth → bridge → nftables forward and NAT → the remote namespace's veth.
//! The baseline runs the same clients and servers on the host's loopback, in the same run,
//! alternating rounds:
//! - throughput: one TCP connection sending N MiB to a sink that acknowledges the end;
//! - connection rate: connect + close, one after another, for a fixed count;
//! - DNS: one UDP query and its answer, through Warren's resolver on the workspace's gateway
//!   (policy check, upstream query, nftables set update) vs straight to the upstream server.
//!
//! Reported: medians, and Warren/baseline ratios (targets: throughput and connection rate ≥ 0.8×).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use warren_engine::{Config, Engine, Quiet, UpOptions, WsRef};
use warren_runtime::OciRuntime;

use super::{make_project, percentile, progress, r3, Dirs, IMAGE};

/// The remote server's address.
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 18, 250, 1);
const NAME: &str = "netbench";

/// The remote network namespace and its route; removed on drop.
struct Remote {
    netns: String,
    host_if: String,
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
    }
}

fn must(args: &[&str]) -> Result<()> {
    let o = Command::new(args[0]).args(&args[1..]).output()?;
    if !o.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

fn remote() -> Result<Remote> {
    let pid = std::process::id();
    let r = Remote {
        netns: format!("wbench-{pid}"),
        host_if: format!("wb{}", pid % 100_000_000),
    };
    must(&["ip", "netns", "add", &r.netns])?;
    must(&[
        "ip", "link", "add", &r.host_if, "type", "veth", "peer", "name", "eth0", "netns", &r.netns,
    ])?;
    must(&["ip", "addr", "add", "198.18.0.5/30", "dev", &r.host_if])?;
    must(&["ip", "link", "set", &r.host_if, "up"])?;
    let ns = |args: &[&str]| {
        let mut v = vec!["ip", "netns", "exec", r.netns.as_str()];
        v.extend_from_slice(args);
        must(&v)
    };
    ns(&["ip", "link", "set", "lo", "up"])?;
    ns(&["ip", "addr", "add", "198.18.0.6/30", "dev", "eth0"])?;
    ns(&["ip", "link", "set", "eth0", "up"])?;
    ns(&["ip", "route", "add", "default", "via", "198.18.0.5"])?;
    ns(&["ip", "addr", "add", "198.18.250.1/32", "dev", "lo"])?;
    must(&[
        "ip",
        "route",
        "replace",
        "198.18.250.1/32",
        "via",
        "198.18.0.6",
        "dev",
        &r.host_if,
    ])?;
    Ok(r)
}

/// Runs `f` on a thread that entered the network namespace `ns` (a `/proc/PID/ns/net` or
/// `/run/netns/NAME` path): sockets it makes belong there, wherever they are used later.
fn in_netns<T: Send>(ns: &Path, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let file = std::fs::File::open(ns).with_context(|| format!("open {}", ns.display()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .context("enter the network namespace")?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("benchmark thread panicked"))?
    })
}

/// Serves a sink (reads to EOF, answers one byte) and an accept-and-close listener; returns
/// their addresses.
fn servers(ip: Ipv4Addr) -> Result<(SocketAddr, SocketAddr)> {
    let sink = listener(ip)?;
    let closer = listener(ip)?;
    let addrs = (sink.local_addr()?, closer.local_addr()?);
    std::thread::spawn(move || {
        for c in sink.incoming().flatten() {
            std::thread::spawn(move || {
                let mut c = c;
                let mut buf = vec![0u8; 1 << 17];
                while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                let _ = c.write_all(b"k");
            });
        }
    });
    std::thread::spawn(move || {
        for c in closer.incoming() {
            drop(c);
        }
    });
    Ok(addrs)
}

/// A TCP listener on `ip` (any port) with a deep accept queue: std's 128 overflows while the
/// accepting thread waits for a core, and a SYN dropped on a full queue costs its client a second.
fn listener(ip: Ipv4Addr) -> Result<TcpListener> {
    use nix::sys::socket::{
        bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
        SockaddrIn,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(std::net::SocketAddrV4::new(ip, 0)),
    )?;
    listen(&fd, Backlog::MAXCONN)?;
    Ok(TcpListener::from(fd))
}

/// Seconds to send `mib` MiB over one connection and see it acknowledged.
fn throughput_once(sock: TcpStream, mib: u64) -> Result<f64> {
    let mut sock = sock;
    let chunk = vec![0x5au8; 1 << 17];
    let t = Instant::now();
    for _ in 0..mib * 8 {
        sock.write_all(&chunk)?;
    }
    sock.shutdown(std::net::Shutdown::Write)?;
    let mut ack = [0u8; 1];
    sock.read_exact(&mut ack)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Connections per second over `n` connect + close.
fn conn_rate(to: SocketAddr, n: usize) -> Result<f64> {
    let t = Instant::now();
    let mut worst = (Duration::ZERO, 0);
    for i in 0..n {
        let c = Instant::now();
        drop(TcpStream::connect_timeout(&to, Duration::from_secs(5))?);
        if c.elapsed() > worst.0 {
            worst = (c.elapsed(), i);
        }
    }
    if worst.0 > Duration::from_millis(100) {
        // A lost SYN costs a second: say so, it is not the path's per-connection cost.
        progress(&format!(
            "slowest connection to {to}: #{} took {:?}",
            worst.1, worst.0
        ));
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// A DNS query for `name` (type A).
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    m
}

/// Milliseconds of each of `n` queries to `server` (each answered with NOERROR and one record).
fn dns_latencies(server: SocketAddr, n: usize) -> Result<Vec<f64>> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = Vec::with_capacity(n);
    let mut buf = [0u8; 1500];
    for i in 0..n {
        let q = query(i as u16, "www.bench.test");
        let t = Instant::now();
        sock.send_to(&q, server)?;
        let (len, _) = sock.recv_from(&mut buf).context("no DNS answer")?;
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        if len < 12 || buf[..2] != q[..2] || buf[3] & 0x0f != 0 || buf[7] == 0 {
            bail!("bad DNS answer from {server}");
        }
    }
    Ok(out)
}

/// The upstream DNS server of the run: every name gets one A record (`REMOTE`, TTL 300).
fn dns_server() -> Result<SocketAddr> {
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    let addr = sock.local_addr()?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            if n < 17 {
                continue;
            }
            let q = &buf[..n];
            let mut r = q[..2].to_vec();
            r.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
            r.extend_from_slice(&q[12..]);
            r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4]);
            r.extend_from_slice(&REMOTE.octets());
            let _ = sock.send_to(&r, peer);
        }
    });
    Ok(addr)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, 50.0)
}

/// `warren bench --net`.
pub(super) async fn run(
    dirs: &Dirs,
    busybox: &Path,
    mib: u64,
    rounds: usize,
    json_out: bool,
) -> Result<u8> {
    let exe = std::env::current_exe()?;
    super::build_rootfs(busybox, &dirs.rootfs)?;
    let dns = dns_server()?;
    let engine = Engine::open(Config {
        state_dir: dirs.state.clone(),
        oci: OciRuntime::parse("libcontainer"),
        exe,
        owned_may_have_privileges: false,
        network: warren_runtime::network::NetRequest {
            dns_upstream: vec![dns],
            ..Default::default()
        },
        default_egress: warren_engine::network::allow_all(),
    })
    .await?;
    let images = engine.images().clone();
    let rootfs = dirs.rootfs.clone();
    tokio::task::spawn_blocking(move || images.import_rootfs(&rootfs, IMAGE, None)).await??;
    let remote = remote()?;
    progress("starting the workspace");
    let project = make_project(&dirs.projects, NAME)?;
    let opts = UpOptions {
        name: Some(NAME.into()),
        ..Default::default()
    };
    let rec = engine.up(&project, &opts, &Quiet).await?;
    // The workspace and the host network go whatever happened.
    let res = measure(&engine, &rec, dirs, &remote, dns, mib, rounds).await;
    let _ = engine.delete(WsRef::Id(rec.id.clone()), true).await;
    warren_runtime::network::teardown(&dirs.state.join("workspaces"));
    let report = res?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(0)
}

/// The measurements, on the running workspace `rec`.
async fn measure(
    engine: &Engine,
    rec: &warren_store::WorkspaceRecord,
    dirs: &Dirs,
    remote: &Remote,
    dns: SocketAddr,
    mib: u64,
    rounds: usize,
) -> Result<Value> {
    let ws_ns = super::ssh::workspace_netns(&dirs.state)?;
    let ws_ns = Path::new(&ws_ns);
    let gateway = resolver_of(&dirs.state).context("the runtime recorded no network")?;
    // DNS under `allow-all`: the resolver's policy check and the upstream query, nothing learned.
    let queries = 200;
    let mut d_open = vec![];
    for _ in 0..rounds {
        d_open.extend(in_netns(ws_ns, || dns_latencies(gateway, queries))?);
    }
    let policy = warren_api::net::NetworkPolicy {
        egress: warren_api::net::EgressMode::Allowlist,
        allow: vec!["198.18.250.1".into(), "*.bench.test".into()],
        ..Default::default()
    };
    let plan = warren_engine::network::plan_of(&policy).map_err(|e| anyhow::anyhow!("{e}"))?;
    engine.set_network(rec, None, &plan).await?;
    let address = engine
        .address(WsRef::Id(rec.id.clone()))
        .await?
        .context("the workspace has no address")?;
    progress(&format!("workspace address {address}"));
    let remote_ns = std::path::PathBuf::from(format!("/run/netns/{}", remote.netns));

    let (r_sink, r_closer) = in_netns(&remote_ns, || servers(REMOTE))?;
    // The host's own connections leave from the address the workspace's are masqueraded to: a
    // listener of their own, so that neither meets the other's TIME_WAIT (a stalled SYN).
    let (h_sink, h_closer) = in_netns(&remote_ns, || servers(REMOTE))?;
    let (l_sink, l_closer) = servers(Ipv4Addr::LOCALHOST)?;
    let conns = 500;
    let (mut tw, mut tb, mut cw, mut cb) = (vec![], vec![], vec![], vec![]);
    let (mut th, mut ch) = (vec![], vec![]);
    let (mut dw, mut db) = (vec![], vec![]);
    progress(&format!(
        "{rounds} rounds: {mib} MiB, {conns} connections, {queries} DNS queries each"
    ));
    for _ in 0..rounds {
        let s = in_netns(ws_ns, || Ok(TcpStream::connect(r_sink)?))?;
        tw.push(mib as f64 / throughput_once(s, mib)?);
        tb.push(mib as f64 / throughput_once(TcpStream::connect(l_sink)?, mib)?);
        cw.push(in_netns(ws_ns, || conn_rate(r_closer, conns))?);
        cb.push(conn_rate(l_closer, conns)?);
        // The same remote reached from the host: one veth and routing, no bridge, rules or NAT.
        ch.push(conn_rate(h_closer, conns)?);
        th.push(mib as f64 / throughput_once(TcpStream::connect(h_sink)?, mib)?);
        dw.extend(in_netns(ws_ns, || dns_latencies(gateway, queries))?);
        db.extend(dns_latencies(dns, queries)?);
    }
    Ok(json!({
        "throughput_mib_s": {"warren": r3(median(&tw)), "loopback": r3(median(&tb)), "ratio": r3(median(&tw) / median(&tb)), "host_veth": r3(median(&th)), "ratio_host_veth": r3(median(&tw) / median(&th))},
        "connections_per_s": {"warren": r3(median(&cw)), "loopback": r3(median(&cb)), "ratio": r3(median(&cw) / median(&cb)), "host_veth": r3(median(&ch)), "ratio_host_veth": r3(median(&cw) / median(&ch))},
        "dns_ms": {"warren_p50": r3(median(&dw)), "warren_allow_all_p50": r3(median(&d_open)), "direct_p50": r3(median(&db)), "ratio": r3(median(&dw) / median(&db))},
        "rounds": rounds, "mib": mib,
    }))
}

/// The resolver address written into the workspace's `/etc/resolv.conf` (its gateway).
fn resolver_of(state: &Path) -> Option<SocketAddr> {
    let cfg: warren_runtime::network::NetConfig =
        serde_json::from_slice(&std::fs::read(state.join("workspaces/.net/config.json")).ok()?)
            .ok()?;
    Some(SocketAddr::from((cfg.gateway(), 53)))
}

fn text(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let row = |name: &str, w: f64, b: f64, note: &str| {
        format!("{name:<34} {w:>12.3} {b:>12.3} {:>8.3} {note}\n", w / b)
    };
    let target = |w: f64, b: f64| {
        if w / b >= 0.8 {
            "(target >= 0.8: met)"
        } else {
            "(target >= 0.8: MISSED)"
        }
    };
    let (t, c, d) = (
        &r["throughput_mib_s"],
        &r["connections_per_s"],
        &r["dns_ms"],
    );
    let mut out = format!(
        "{:<34} {:>12} {:>12} {:>8}\n",
        "median", "warren", "baseline", "ratio"
    );
    let (tw, tb, th) = (f(&t["warren"]), f(&t["loopback"]), f(&t["host_veth"]));
    out.push_str(&row("throughput MiB/s vs loopback", tw, tb, target(tw, tb)));
    out.push_str(&row("throughput MiB/s vs host veth", tw, th, ""));
    let (cw, cb, ch) = (f(&c["warren"]), f(&c["loopback"]), f(&c["host_veth"]));
    out.push_str(&row("connections/s vs loopback", cw, cb, target(cw, cb)));
    out.push_str(&row("connections/s vs host veth", cw, ch, ""));
    let (dw, da, db) = (
        f(&d["warren_p50"]),
        f(&d["warren_allow_all_p50"]),
        f(&d["direct_p50"]),
    );
    out.push_str(&row(
        "DNS ms, allowlist (learns)",
        dw,
        db,
        "(vs a direct query)",
    ));
    out.push_str(&row("DNS ms, allow-all", da, db, "(vs a direct query)"));
    out
}
