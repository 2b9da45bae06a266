//! A workspace's network namespace as seen from the host: sockets made inside it (for port
//! forwarding and preview URLs) and the TCP ports its processes listen on.
//!
//! Both run in the supervisor, which knows its workspace's init for sure (it reaps it), so a pid can
//! never name another process's namespace.

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;

use nix::sched::{setns, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use serde::{Deserialize, Serialize};

/// A TCP port a workspace process listens on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListeningPort {
    /// The port.
    pub port: u16,
    /// The address it is bound to (`0.0.0.0`, `::`, `127.0.0.1`, ...).
    pub address: IpAddr,
    /// Host pid of a process holding the socket, when one was found.
    pub pid: Option<i32>,
    /// That process's name (`/proc/PID/comm`).
    pub process: Option<String>,
}

/// Makes an unconnected TCP socket (non-blocking, close-on-exec) in the network namespace of
/// process `pid`, then returns this process to the namespace it was in.
///
/// Changes the calling process's network namespace for the duration, so only a single-threaded
/// process (the supervisor) may call it.
pub(crate) fn socket_in(pid: i32, ipv6: bool) -> Result<OwnedFd, String> {
    let theirs =
        File::open(format!("/proc/{pid}/ns/net")).map_err(|e| format!("open netns: {e}"))?;
    let ours = File::open("/proc/self/ns/net").map_err(|e| format!("open own netns: {e}"))?;
    setns(&theirs, CloneFlags::CLONE_NEWNET).map_err(|e| format!("enter netns: {e}"))?;
    let made = socket(
        if ipv6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        },
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    );
    if let Err(e) = setns(&ours, CloneFlags::CLONE_NEWNET) {
        // The supervisor makes no other network sockets and its control socket is a path, so staying
        // in the workspace's namespace breaks nothing but the next request; say so loudly.
        eprintln!("warren supervisor: could not return to its own network namespace: {e}");
    }
    made.map_err(|e| format!("socket: {e}"))
}

/// The TCP ports listened on in the network namespace of `pid`, each with a process of `pids`
/// holding the socket where one does. Sorted by port, then address.
pub(crate) fn listening_ports(pid: i32, pids: &[i32]) -> Result<Vec<ListeningPort>, String> {
    let mut found = Vec::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        match std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
            Ok(text) => found.extend(parse_proc_net_tcp(&text, v6)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && v6 => {}
            Err(e) => return Err(format!("read /proc/{pid}/net/{file}: {e}")),
        }
    }
    let owners = socket_owners(pids);
    let mut ports: Vec<ListeningPort> = found
        .into_iter()
        .map(|(address, port, inode)| {
            let pid = owners.get(&inode).copied();
            ListeningPort {
                port,
                address,
                pid,
                process: pid.and_then(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .ok()
                        .map(|s| s.trim_end().to_string())
                }),
            }
        })
        .collect();
    ports.sort_by_key(|p| (p.port, p.address));
    ports.dedup_by(|a, b| a.port == b.port && a.address == b.address);
    Ok(ports)
}

/// Socket inode → the first of `pids` with a descriptor on it.
fn socket_owners(pids: &[i32]) -> HashMap<u64, i32> {
    let mut owners = HashMap::new();
    for &p in pids {
        let Ok(rd) = std::fs::read_dir(format!("/proc/{p}/fd")) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(inode) = t
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse().ok())
            {
                owners.entry(inode).or_insert(p);
            }
        }
    }
    owners
}

/// The listening sockets of a `/proc/net/tcp` or `tcp6` table: (address, port, inode).
fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<(IpAddr, u16, u64)> {
    const LISTEN: &str = "0A";
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != LISTEN {
            continue;
        }
        let Some((addr, port)) = f[1].split_once(':') else {
            continue;
        };
        let (Some(address), Ok(port), Ok(inode)) = (
            parse_hex_addr(addr, v6),
            u16::from_str_radix(port, 16),
            f[9].parse::<u64>(),
        ) else {
            continue;
        };
        out.push((address, port, inode));
    }
    out
}

/// The kernel prints addresses as 32-bit words in host byte order, in hex.
fn parse_hex_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    match (v6, words.as_slice()) {
        (false, [w]) => Some(IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes()))),
        (true, [a, b, c, d]) => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_listening_sockets_of_both_tables() {
        // Taken from a real /proc/net/tcp and tcp6: one listener on 127.0.0.1:8080, one established
        // connection (ignored), one listener on [::]:22.
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 81234 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 81240 1 0000000000000000 20 4 30 10 -1\n";
        let v6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0\n   1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1000 1 0000000000000000 100 0 0 10 0\n";
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_proc_net_tcp(v4, false),
                vec![("127.0.0.1".parse().unwrap(), 8080, 81234)]
            );
            assert_eq!(
                parse_proc_net_tcp(v6, true),
                vec![
                    ("::".parse().unwrap(), 22, 999),
                    ("::1".parse().unwrap(), 80, 1000)
                ]
            );
        }
    }

    #[test]
    fn damaged_lines_are_skipped() {
        let t = "header\n0: zz:1F90 0 0A a b c d e f\n1: 0100007F 0 0A\n\n2: 0100007F:XXXX 0 0A 0 0 0 0 0 1\n";
        assert!(parse_proc_net_tcp(t, false).is_empty());
    }
}
