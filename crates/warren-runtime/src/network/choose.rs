//! Which bridge, address pool, tables and log group a runtime root uses. Chosen once, on the first
//! start, and kept in `ROOT/.net/config.json`; several Warren instances on one host (a server and
//! tests, say) each get their own. The host-wide registry `/run/warren/nets/<bridge>` (one file per
//! instance: its root, then its tables' name) is what instances check each other against; an entry
//! whose root directory does not exist and whose resolver (`warren __netd ROOT`) is not running is
//! reclaimed along with its bridge and tables.

use std::fs::{self, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use warren_api::net::Ipv4Net;

use super::NetConfig;

/// The host-wide registry of Warren networks.
const REGISTRY: &str = "/run/warren/nets";

/// Where automatic pools come from: /20s of 10.208.0.0/12.
const AUTO_RANGE: Ipv4Net = Ipv4Net {
    addr: Ipv4Addr::new(10, 208, 0, 0),
    prefix: 12,
};
const AUTO_PREFIX: u8 = 20;

/// First nflog group of automatic choices (one group per instance: a group has one listener).
const LOG_GROUP_BASE: u16 = 2100;

/// A network as asked for (server settings); unset parts are chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetRequest {
    /// The bridge's name.
    pub bridge: Option<String>,
    /// The address pool.
    pub subnet: Option<Ipv4Net>,
    /// Upstream resolvers (empty: the host's).
    pub dns_upstream: Vec<SocketAddr>,
}

impl NetRequest {
    /// Parses settings as given (`--network-bridge`, `--network-subnet`, `--dns-upstream`), with a
    /// one-line error naming the setting.
    pub fn parse(
        bridge: Option<&str>,
        subnet: Option<&str>,
        dns: Option<&str>,
    ) -> Result<NetRequest, String> {
        let bridge = match bridge.map(str::trim).filter(|b| !b.is_empty()) {
            None => None,
            Some(b) => {
                let ok = b.len() <= 15
                    && b.bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                    && b.as_bytes()[0].is_ascii_alphabetic();
                if !ok {
                    return Err(format!(
                        "network_bridge `{b}`: an interface name of at most 15 letters, digits, \
                         `-` and `_`, starting with a letter"
                    ));
                }
                Some(b.to_string())
            }
        };
        let subnet = match subnet.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => {
                let net = Ipv4Net::parse(s).map_err(|e| format!("network_subnet `{s}`: {e}"))?;
                if !(8..=28).contains(&net.prefix) {
                    return Err(format!(
                        "network_subnet `{s}`: the prefix must be between /8 and /28"
                    ));
                }
                Some(net)
            }
        };
        let mut dns_upstream = Vec::new();
        for part in dns.unwrap_or("").split(',').map(str::trim) {
            if part.is_empty() {
                continue;
            }
            let addr = part
                .parse::<SocketAddr>()
                .or_else(|_| {
                    part.parse::<Ipv4Addr>()
                        .map(|ip| SocketAddr::from((ip, 53)))
                })
                .map_err(|_| {
                    format!("dns_upstream `{part}`: not IP or IP:PORT (e.g. 192.0.2.53:53)")
                })?;
            dns_upstream.push(addr);
        }
        Ok(NetRequest {
            bridge,
            subnet,
            dns_upstream,
        })
    }
}

fn config_path(root: &Path) -> PathBuf {
    root.join(".net").join("config.json")
}

/// The network of `root`: the one recorded there (with the request's explicit settings, which
/// may change only while no address is allocated, and its upstream resolvers when it names
/// any), or a new choice of a free bridge name, pool and log group, recorded.
pub fn for_root(root: &Path, req: &NetRequest) -> Result<NetConfig, String> {
    let net_dir = root.join(".net");
    fs::create_dir_all(&net_dir).map_err(|e| format!("create {}: {e}", net_dir.display()))?;
    fs::create_dir_all(REGISTRY).map_err(|e| format!("create {REGISTRY}: {e}"))?;
    let _lock = host_lock()?;
    let path = config_path(root);
    let mut cfg = match fs::read(&path) {
        Ok(bytes) => Some(
            serde_json::from_slice::<NetConfig>(&bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("read {}: {e}", path.display())),
    };
    if let Some(c) = &cfg {
        let changed = req.bridge.as_ref().is_some_and(|b| *b != c.bridge)
            || req.subnet.is_some_and(|s| s != c.subnet);
        if changed {
            if allocated(root) {
                return Err(format!(
                    "the network settings changed (bridge {}, pool {} in use): delete this \
                     host's workspaces first, or keep the settings",
                    c.bridge, c.subnet
                ));
            }
            cfg = None;
        }
    }
    let mut cfg = match cfg {
        Some(c) => c,
        None => choose(root, req)?,
    };
    // Upstreams given replace the recorded ones; a process that gives none (the embedded CLI on a
    // server's state directory, say) keeps them.
    if !req.dns_upstream.is_empty() {
        cfg.dns_upstream = req.dns_upstream.clone();
    }
    register(root, &cfg)?;
    super::write_json(&path, &cfg)?;
    Ok(cfg)
}

/// Removes `root`'s whole network from the host: its resolver, bridge, nftables tables and
/// registry entry (its workspaces must be gone; tests and benchmarks call this when they are
/// done with a state directory).
pub fn teardown(root: &Path) {
    let Ok(bytes) = fs::read(config_path(root)) else {
        return;
    };
    let Ok(cfg) = serde_json::from_slice::<NetConfig>(&bytes) else {
        return;
    };
    super::remove_host_leftovers(&cfg.bridge, &cfg.table, root);
    let _ = fs::remove_file(Path::new(REGISTRY).join(&cfg.bridge));
}

/// Whether any address of `root`'s pool is allocated.
fn allocated(root: &Path) -> bool {
    fs::read_dir(root.join(".net").join("ipam"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

fn host_lock() -> Result<Flock<fs::File>, String> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(REGISTRY).join(".lock"))
        .map_err(|e| format!("open {REGISTRY}/.lock: {e}"))?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| format!("lock {REGISTRY}: {e}"))
}

/// One instance in the registry.
struct Entry {
    bridge: String,
    root: PathBuf,
    /// Its nftables tables' name.
    table: String,
    cfg: Option<NetConfig>,
}

fn entries() -> Vec<Entry> {
    let Ok(rd) = fs::read_dir(REGISTRY) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let bridge = e.file_name().to_string_lossy().into_owned();
        if bridge.starts_with('.') {
            continue;
        }
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        let mut lines = text.lines().map(str::trim);
        let root = PathBuf::from(lines.next().unwrap_or(""));
        // Entries written before the table was recorded: the table was named after the bridge.
        let table = lines
            .next()
            .filter(|t| !t.is_empty())
            .unwrap_or(&bridge)
            .to_string();
        let cfg = fs::read(config_path(&root))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        out.push(Entry {
            bridge,
            root,
            table,
            cfg,
        });
    }
    out
}

fn register(root: &Path, cfg: &NetConfig) -> Result<(), String> {
    let path = Path::new(REGISTRY).join(&cfg.bridge);
    if let Ok(text) = fs::read_to_string(&path) {
        let other = PathBuf::from(text.trim());
        if other != root && !gone(&other) {
            return Err(format!(
                "bridge {} belongs to the Warren state in {}: give this one another \
                 (network_bridge)",
                cfg.bridge,
                other.display()
            ));
        }
    }
    let mut text = root.as_os_str().as_encoded_bytes().to_vec();
    text.push(b'\n');
    text.extend_from_slice(cfg.table.as_bytes());
    text.push(b'\n');
    fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

/// Whether the instance of `root` is gone: its directory does not exist and no resolver of it
/// runs. A root that only this process cannot see (another mount namespace) keeps its resolver,
/// so it is not taken for gone.
fn gone(root: &Path) -> bool {
    !root.as_os_str().is_empty() && !root.exists() && super::netd_pids(root).is_empty()
}

/// Removes registry entries whose root is gone, with the bridge and tables they left.
fn reclaim(entries: Vec<Entry>) -> Vec<Entry> {
    let mut live = Vec::new();
    for e in entries {
        if !gone(&e.root) {
            live.push(e);
            continue;
        }
        super::remove_host_leftovers(&e.bridge, &e.table, &e.root);
        let _ = fs::remove_file(Path::new(REGISTRY).join(&e.bridge));
    }
    live
}

fn choose(root: &Path, req: &NetRequest) -> Result<NetConfig, String> {
    let live = reclaim(entries());
    let others: Vec<&Entry> = live.iter().filter(|e| e.root != root).collect();
    let routes = host_networks();
    let taken_net = |n: &Ipv4Net| {
        routes.iter().any(|r| overlaps(r, n))
            || others
                .iter()
                .any(|e| e.cfg.as_ref().is_some_and(|c| overlaps(&c.subnet, n)))
    };
    let subnet = match req.subnet {
        Some(s) => {
            if let Some(e) = others
                .iter()
                .find(|e| e.cfg.as_ref().is_some_and(|c| overlaps(&c.subnet, &s)))
            {
                return Err(format!(
                    "network_subnet {s} overlaps the pool of the Warren state in {}",
                    e.root.display()
                ));
            }
            s
        }
        None => {
            let count = 1u32 << (AUTO_PREFIX - AUTO_RANGE.prefix);
            let step = 1u32 << (32 - AUTO_PREFIX);
            (0..count)
                .map(|i| Ipv4Net {
                    addr: Ipv4Addr::from(u32::from(AUTO_RANGE.addr) + i * step),
                    prefix: AUTO_PREFIX,
                })
                .find(|n| !taken_net(n))
                .ok_or(
                    "no free /20 left in 10.208.0.0/12 for Warren's network: set network_subnet",
                )?
        }
    };
    let taken_bridge = |b: &str| {
        Path::new("/sys/class/net").join(b).exists() || others.iter().any(|e| e.bridge == b)
    };
    let bridge = match &req.bridge {
        Some(b) => {
            if others.iter().any(|e| e.bridge == *b) {
                return Err(format!(
                    "bridge {b} belongs to another Warren state: choose another network_bridge"
                ));
            }
            b.clone()
        }
        None => (0..1000)
            .map(|i| format!("warren{i}"))
            .find(|b| !taken_bridge(b))
            .ok_or("no free bridge name warren0..warren999")?,
    };
    let used_groups: Vec<u16> = others
        .iter()
        .filter_map(|e| e.cfg.as_ref().map(|c| c.log_group))
        .collect();
    let log_group = (LOG_GROUP_BASE..LOG_GROUP_BASE + 1000)
        .find(|g| !used_groups.contains(g))
        .ok_or("no free nflog group")?;
    Ok(NetConfig {
        table: bridge.clone(),
        bridge,
        subnet,
        dns_upstream: req.dns_upstream.clone(),
        log_group,
        ..NetConfig::default()
    })
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.covers(b) || b.covers(a)
}

/// The IPv4 networks the host routes in its main table (`/proc/net/route`), but the default route.
fn host_networks() -> Vec<Ipv4Net> {
    routes(false)
}

/// The IPv4 networks the host is directly connected to (routes without a gateway), but the default
/// route: its LANs, as well as other Warren instances' pools.
pub(crate) fn connected_networks() -> Vec<Ipv4Net> {
    routes(true)
}

fn routes(connected_only: bool) -> Vec<Ipv4Net> {
    let Ok(text) = fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            const RTF_GATEWAY: u32 = 0x2;
            if mask == 0 || (connected_only && flags & RTF_GATEWAY != 0) {
                return None;
            }
            // The kernel prints them in host byte order.
            let addr = Ipv4Addr::from(dest.to_ne_bytes());
            let prefix = u32::from_be_bytes(mask.to_ne_bytes()).leading_ones() as u8;
            Some(Ipv4Net { addr, prefix })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_with_the_setting_named() {
        assert!(NetRequest::parse(Some("bad name"), None, None)
            .unwrap_err()
            .starts_with("network_bridge `bad name`"));
        assert!(NetRequest::parse(None, None, Some("nope"))
            .unwrap_err()
            .starts_with("dns_upstream `nope`"));
        let r = NetRequest::parse(Some("wb1"), None, Some("192.0.2.1, 192.0.2.2:5353")).unwrap();
        assert_eq!(r.bridge.as_deref(), Some("wb1"));
        assert_eq!(
            r.dns_upstream,
            vec![
                "192.0.2.1:53".parse().unwrap(),
                "192.0.2.2:5353".parse().unwrap()
            ]
        );
    }

    #[test]
    fn an_instance_is_gone_only_when_its_root_is_missing_and_its_resolver_does_not_run() {
        let d = tempfile::tempdir().unwrap();
        assert!(!gone(d.path()), "an existing root is not gone");
        let missing = d.path().join("missing-root");
        assert!(gone(&missing));
        // A resolver of that root runs (its root in another mount namespace, say): not gone.
        std::fs::write(d.path().join("__netd"), "sleep 30\n").unwrap();
        let mut p = std::process::Command::new("sh")
            .arg("__netd")
            .arg(&missing)
            .current_dir(d.path())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!gone(&missing));
        p.kill().unwrap();
        p.wait().unwrap();
        assert!(gone(&missing));
    }

    #[test]
    fn the_host_routes_are_read() {
        // Every Linux host with a network has at least one non-default route (loopback's is in
        // another table, so allow none on a bare host).
        for n in host_networks() {
            assert!(n.prefix > 0 && n.prefix <= 32);
        }
    }
}
