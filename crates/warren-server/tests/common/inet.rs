//! A fake internet for network tests: a network namespace the host routes 203.0.113.10,
//! 198.51.100.10 and 169.254.169.254 to, with servers the tests start in it, and a DNS server
//! on the host's loopback that answers `*.test` names. Nothing leaves the machine.
//!
//! One per test binary (tests share it): the namespace is `winet-<pid>`; namespaces of test
//! binaries that are gone are removed when the next one starts.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

/// The "public" web server's address (HTTP on 80, a recorder on 443, echo on 9000).
pub const WEB: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Another public server (HTTP on 80), in another range.
pub const OTHER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The cloud metadata address, served in the fake internet (HTTP on 80).
pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The running fake internet.
pub struct Inet {
    /// The fake upstream DNS server (host loopback).
    pub dns: SocketAddr,
    /// What the recorder on WEB:443 received, one entry per connection (first bytes).
    pub tls_seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

fn must(args: &[&str]) {
    let o = run(args);
    assert!(
        o.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The fake internet of this test binary (made on first use).
pub fn inet() -> &'static Inet {
    static INET: OnceLock<Inet> = OnceLock::new();
    INET.get_or_init(make)
}

/// Removes the namespaces (and so their veths and the host's routes through them) of test
/// binaries that are gone.
fn remove_stale() {
    let o = run(&["ip", "netns", "list"]);
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix("winet-") else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .map(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .unwrap_or(false);
        if !alive {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
}

fn make() -> Inet {
    remove_stale();
    let pid = std::process::id();
    let netns = format!("winet-{pid}");
    let host_if = format!("wi{}", pid % 100_000_000);
    must(&["ip", "netns", "add", &netns]);
    must(&[
        "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &netns,
    ]);
    must(&["ip", "addr", "add", "198.18.0.1/30", "dev", &host_if]);
    must(&["ip", "link", "set", &host_if, "up"]);
    let inside = |args: &[&str]| {
        let mut v = vec!["ip", "netns", "exec", &netns];
        v.extend_from_slice(args);
        must(&v);
    };
    inside(&["ip", "link", "set", "lo", "up"]);
    inside(&["ip", "addr", "add", "198.18.0.2/30", "dev", "eth0"]);
    inside(&["ip", "link", "set", "eth0", "up"]);
    inside(&["ip", "route", "add", "default", "via", "198.18.0.1"]);
    for a in ["203.0.113.10/24", "198.51.100.10/24", "169.254.169.254/32"] {
        inside(&["ip", "addr", "add", a, "dev", "lo"]);
    }
    // Host routes for the servers' addresses only: the rest of those ranges may be real here (this
    // machine's package mirror answers on a 203.0.113.x address).
    for net in ["203.0.113.10/32", "198.51.100.10/32", "169.254.169.254/32"] {
        // `replace`: a route left by a test binary that was killed is taken over.
        must(&[
            "ip",
            "route",
            "replace",
            net,
            "via",
            "198.18.0.2",
            "dev",
            &host_if,
        ]);
    }
    let tls_seen = Arc::new(Mutex::new(Vec::new()));
    let ns = std::fs::File::open(format!("/run/netns/{netns}")).unwrap();
    let listeners: Vec<(TcpListener, &str)> = std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            vec![
                (TcpListener::bind((WEB, 80)).unwrap(), "web"),
                (TcpListener::bind((WEB, 443)).unwrap(), "tls"),
                (TcpListener::bind((WEB, 9000)).unwrap(), "echo"),
                (TcpListener::bind((OTHER, 80)).unwrap(), "other"),
                (TcpListener::bind((METADATA, 80)).unwrap(), "metadata"),
            ]
        })
        .join()
        .unwrap()
    });
    for (l, kind) in listeners {
        let seen = tls_seen.clone();
        std::thread::spawn(move || serve(l, kind, seen));
    }
    let dns = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dns_addr = dns.local_addr().unwrap();
    std::thread::spawn(move || serve_dns(dns, &records()));
    Inet {
        dns: dns_addr,
        tls_seen,
    }
}

/// Names the fake DNS server knows.
fn records() -> HashMap<String, Vec<Ipv4Addr>> {
    let mut m = HashMap::new();
    m.insert("ok.test".to_string(), vec![WEB]);
    m.insert("www.ok.test".to_string(), vec![WEB]);
    m.insert("cdn.test".to_string(), vec![WEB]);
    m.insert("other.test".to_string(), vec![OTHER]);
    m.insert("evil.test".to_string(), vec![OTHER]);
    m.insert("rebind.test".to_string(), vec![METADATA]);
    m
}

fn serve(l: TcpListener, kind: &'static str, seen: Arc<Mutex<Vec<Vec<u8>>>>) {
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        let seen = seen.clone();
        std::thread::spawn(move || {
            let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(10)));
            match kind {
                "echo" => {
                    let mut buf = vec![0u8; 1 << 16];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 || c.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
                "tls" => {
                    let mut buf = vec![0u8; 4096];
                    let n = c.read(&mut buf).unwrap_or(0);
                    seen.lock().unwrap().push(buf[..n].to_vec());
                    let _ = c.write_all(b"tls-reached\n");
                }
                _ => {
                    // HTTP: read the request head, answer with the server and the Host seen.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                        match c.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let host = text
                        .lines()
                        .find_map(|l| {
                            l.strip_prefix("Host:")
                                .or_else(|| l.strip_prefix("host:"))
                                .map(|h| h.trim().to_string())
                        })
                        .unwrap_or_default();
                    let body = format!("{kind} host={host}\n");
                    let _ = write!(
                        c,
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
            }
        });
    }
}

/// A small authoritative DNS server: A records for the known names (TTL 60), NXDOMAIN for
/// other names, no records for other types.
fn serve_dns(sock: UdpSocket, names: &HashMap<String, Vec<Ipv4Addr>>) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if let Some(reply) = dns_answer(&buf[..n], names) {
            let _ = sock.send_to(&reply, peer);
        }
    }
}

fn dns_answer(q: &[u8], names: &HashMap<String, Vec<Ipv4Addr>>) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    // The question: labels, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *q.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question_end = i + 4;
    let name = labels.join(".");
    let mut r = Vec::new();
    r.extend_from_slice(&q[0..2]);
    let found = names.get(&name);
    let rcode: u8 = if found.is_some() { 0 } else { 3 };
    r.extend_from_slice(&[0x84 | (q[2] & 0x01), 0x80 | rcode]);
    r.extend_from_slice(&[0, 1]);
    let answers: &[Ipv4Addr] = match (found, qtype) {
        (Some(a), 1) => a,
        _ => &[],
    };
    r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(q.get(12..question_end)?);
    for a in answers {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&a.octets());
    }
    Some(r)
}

/// A TLS ClientHello (TLS 1.2 record, one cipher suite) naming `sni`: enough for a server (or a
/// proxy) to read the name; the handshake goes no further.
pub fn client_hello(sni: &str) -> Vec<u8> {
    let name = sni.as_bytes();
    let mut sni_ext = Vec::new();
    sni_ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni_ext.push(0);
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);
    let mut exts = Vec::new();
    exts.extend_from_slice(&[0, 0]);
    exts.extend_from_slice(&(sni_ext.len() as u16).to_be_bytes());
    exts.extend_from_slice(&sni_ext);
    let mut body = Vec::new();
    body.extend_from_slice(&[3, 3]);
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 2, 0x13, 0x01]);
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[test]
fn the_fake_dns_server_answers_known_names_and_refuses_others() {
    let names = records();
    let q = |name: &str, qtype: u16| {
        let mut m = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        m
    };
    let r = dns_answer(&q("ok.test", 1), &names).unwrap();
    assert_eq!(&r[0..2], &[0x12, 0x34]);
    assert_eq!(r[3] & 0x0f, 0);
    assert_eq!(&r[r.len() - 4..], &WEB.octets());
    let r = dns_answer(&q("nope.test", 1), &names).unwrap();
    assert_eq!(r[3] & 0x0f, 3);
}
