//! What netd knows: the network's config, the workspaces by address with their egress plans (read
//! from the runtime root, again on `reload`), the upstream resolvers, and the names each workspace
//! resolved (`Memory`), which the proxy checks destinations against.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use warren_runtime::network::{Attachment, EgressPlan, NetConfig};

use crate::decide::HostRanges;

/// Largest state file read.
const MAX_FILE: u64 = 4 * 1024 * 1024;

/// One workspace on the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// Its id.
    pub id: String,
    /// Its plan; `None` (no or unreadable `egress.json`): it reaches nothing.
    pub plan: Option<EgressPlan>,
}

/// Everything read from the root at one time.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The network's config.
    pub cfg: NetConfig,
    /// Workspaces by address.
    pub by_addr: HashMap<Ipv4Addr, Arc<Workspace>>,
    /// Upstream resolvers, in order.
    pub upstreams: Vec<SocketAddr>,
    /// Host-side protected addresses.
    pub host: HostRanges,
}

impl Snapshot {
    /// The workspace with this id.
    pub fn by_id(&self, id: &str) -> Option<&Arc<Workspace>> {
        self.by_addr.values().find(|w| w.id == id)
    }
}

fn read_small(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    f.take(MAX_FILE + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other("file too large"));
    }
    Ok(Some(buf))
}

/// Reads `ROOT/.net/config.json` and every `ROOT/<id>/net.json` and `egress.json`. A workspace
/// whose files do not parse is skipped (no attachment) or reaches nothing (no plan), with a line
/// on stderr.
pub fn load(root: &Path) -> anyhow::Result<Snapshot> {
    let cfg_path = root.join(".net/config.json");
    let cfg: NetConfig = match read_small(&cfg_path)? {
        Some(b) => serde_json::from_slice(&b)
            .with_context(|| format!("cannot parse {}", cfg_path.display()))?,
        None => anyhow::bail!(
            "{} does not exist (the runtime writes it when it sets up the network)",
            cfg_path.display()
        ),
    };
    let mut by_addr = HashMap::new();
    let entries =
        std::fs::read_dir(root).with_context(|| format!("cannot read {}", root.display()))?;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = e.path();
        let att: Attachment = match read_small(&dir.join("net.json")) {
            Ok(Some(b)) => match serde_json::from_slice(&b) {
                Ok(a) => a,
                Err(err) => {
                    eprintln!("warren netd: {name}/net.json: {err}");
                    continue;
                }
            },
            Ok(None) => continue,
            Err(err) => {
                eprintln!("warren netd: {name}/net.json: {err}");
                continue;
            }
        };
        let plan = match read_small(&dir.join("egress.json")) {
            Ok(Some(b)) => match serde_json::from_slice::<EgressPlan>(&b) {
                Ok(p) => Some(p),
                Err(err) => {
                    eprintln!("warren netd: {name}/egress.json: {err} (it reaches nothing)");
                    None
                }
            },
            Ok(None) => None,
            Err(err) => {
                eprintln!("warren netd: {name}/egress.json: {err} (it reaches nothing)");
                None
            }
        };
        by_addr.insert(att.address, Arc::new(Workspace { id: att.id, plan }));
    }
    let gateway = cfg.gateway();
    let upstreams = if cfg.dns_upstream.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        resolv_conf(&text)
    } else {
        cfg.dns_upstream.clone()
    };
    // Never forward to ourselves.
    let upstreams: Vec<SocketAddr> = upstreams
        .into_iter()
        .filter(|u| u.ip() != IpAddr::V4(gateway))
        .collect();
    let host = HostRanges {
        pool: Some(cfg.subnet),
        host: host_addresses(),
    };
    Ok(Snapshot {
        cfg,
        by_addr,
        upstreams,
        host,
    })
}

/// The `nameserver` lines of a resolv.conf, port 53.
pub fn resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            if w.next() != Some("nameserver") {
                return None;
            }
            let ip: IpAddr = w.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The host's own IPv4 addresses.
pub(crate) fn host_addresses() -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if let Some(sin) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()) {
                if !out.contains(&sin.ip()) {
                    out.push(sin.ip());
                }
            }
        }
    }
    out
}

/// A remembered name: workspace id, name, addresses with the time they have left.
pub type Remembered = (String, String, Vec<(Ipv4Addr, Duration)>);

/// Most (workspace, name) pairs remembered, all workspaces together.
const MAX_NAMES: usize = 100_000;
/// Most names remembered per workspace: past it the workspace's oldest are forgotten, so one
/// workspace cannot crowd out the others' names.
pub const NAMES_PER_WORKSPACE: usize = 4096;
/// Most addresses remembered per pair.
const MAX_ADDRS: usize = 64;

#[derive(Debug)]
struct Entry {
    addrs: HashMap<Ipv4Addr, Instant>,
    /// When it was last remembered, as a sequence number (its key in `Memory::order`).
    seq: u64,
}

/// The names each workspace resolved, with the addresses and until when; at most
/// `NAMES_PER_WORKSPACE` per workspace (the least recently answered go first).
#[derive(Debug)]
pub struct Memory {
    map: HashMap<(String, String), Entry>,
    /// Per workspace: its names by when they were last remembered, oldest first.
    order: HashMap<String, BTreeMap<u64, String>>,
    next: u64,
    per_workspace: usize,
    max: usize,
}

impl Default for Memory {
    fn default() -> Memory {
        Memory::with_limits(NAMES_PER_WORKSPACE, MAX_NAMES)
    }
}

impl Memory {
    /// A memory holding at most `per_workspace` names per workspace and `max` in all.
    pub fn with_limits(per_workspace: usize, max: usize) -> Memory {
        Memory {
            map: HashMap::new(),
            order: HashMap::new(),
            next: 0,
            per_workspace: per_workspace.max(1),
            max: max.max(1),
        }
    }

    /// Remembers that `name` resolved to these addresses for `id`, each for its duration.
    pub fn remember(&mut self, id: &str, name: &str, addrs: &[(Ipv4Addr, Duration)], now: Instant) {
        if addrs.is_empty() {
            return;
        }
        let k = (id.to_string(), name.to_string());
        let seq = self.next;
        self.next += 1;
        if let Some(e) = self.map.get_mut(&k) {
            // Refreshed: now the workspace's newest.
            if let Some(o) = self.order.get_mut(id) {
                o.remove(&e.seq);
                o.insert(seq, name.to_string());
            }
            e.seq = seq;
        } else {
            let held = self.order.get(id).map_or(0, BTreeMap::len);
            if held >= self.per_workspace {
                self.prune_workspace(id, now);
                while self.order.get(id).map_or(0, BTreeMap::len) >= self.per_workspace {
                    self.evict_oldest(id);
                }
            }
            if self.map.len() >= self.max {
                self.prune(now);
                // Still full: the workspace holding the most gives up its oldest.
                while self.map.len() >= self.max {
                    let Some(biggest) = self
                        .order
                        .iter()
                        .max_by_key(|(_, o)| o.len())
                        .map(|(w, _)| w.clone())
                    else {
                        break;
                    };
                    self.evict_oldest(&biggest);
                }
            }
            self.order
                .entry(id.to_string())
                .or_default()
                .insert(seq, name.to_string());
            self.map.insert(
                k.clone(),
                Entry {
                    addrs: HashMap::new(),
                    seq,
                },
            );
        }
        let Some(e) = self.map.get_mut(&k) else {
            return;
        };
        e.addrs.retain(|_, until| *until > now);
        for (ip, d) in addrs {
            let until = now + *d;
            if e.addrs.len() >= MAX_ADDRS && !e.addrs.contains_key(ip) {
                continue;
            }
            let slot = e.addrs.entry(*ip).or_insert(until);
            *slot = (*slot).max(until);
        }
    }

    fn evict_oldest(&mut self, id: &str) {
        let Some(o) = self.order.get_mut(id) else {
            return;
        };
        if let Some((_, name)) = o.pop_first() {
            self.map.remove(&(id.to_string(), name));
        }
        if o.is_empty() {
            self.order.remove(id);
        }
    }

    fn prune_workspace(&mut self, id: &str, now: Instant) {
        let Some(o) = self.order.get_mut(id) else {
            return;
        };
        let map = &mut self.map;
        o.retain(|_, name| {
            let k = (id.to_string(), name.clone());
            let live = map.get_mut(&k).is_some_and(|e| {
                e.addrs.retain(|_, until| *until > now);
                !e.addrs.is_empty()
            });
            if !live {
                map.remove(&k);
            }
            live
        });
        if o.is_empty() {
            self.order.remove(id);
        }
    }

    /// Until when `name`'s answer `ip` is remembered for `id`, if it is.
    pub fn until(&self, id: &str, name: &str, ip: Ipv4Addr) -> Option<Instant> {
        self.map
            .get(&(id.to_string(), name.to_string()))
            .and_then(|e| e.addrs.get(&ip))
            .copied()
    }

    /// Whether `name` resolved to `ip` for `id` and that has not expired.
    pub fn resolved(&self, id: &str, name: &str, ip: Ipv4Addr, now: Instant) -> bool {
        self.map
            .get(&(id.to_string(), name.to_string()))
            .and_then(|e| e.addrs.get(&ip))
            .is_some_and(|until| *until > now)
    }

    /// Drops what expired.
    pub fn prune(&mut self, now: Instant) {
        let order = &mut self.order;
        self.map.retain(|(id, _), e| {
            e.addrs.retain(|_, until| *until > now);
            if e.addrs.is_empty() {
                if let Some(o) = order.get_mut(id) {
                    o.remove(&e.seq);
                    if o.is_empty() {
                        order.remove(id);
                    }
                }
                return false;
            }
            true
        });
    }

    /// Everything still remembered: (id, name, addresses with time left); at most
    /// `NAMES_PER_WORKSPACE` per workspace.
    pub fn live(&mut self, now: Instant) -> Vec<Remembered> {
        self.prune(now);
        self.map
            .iter()
            .map(|((id, name), e)| {
                let addrs = e
                    .addrs
                    .iter()
                    .map(|(ip, until)| (*ip, *until - now))
                    .collect();
                (id.clone(), name.clone(), addrs)
            })
            .collect()
    }

    /// Forgets a (workspace, name) pair.
    pub fn forget(&mut self, id: &str, name: &str) {
        if let Some(e) = self.map.remove(&(id.to_string(), name.to_string())) {
            if let Some(o) = self.order.get_mut(id) {
                o.remove(&e.seq);
                if o.is_empty() {
                    self.order.remove(id);
                }
            }
        }
    }

    /// How many names are remembered for `id`.
    pub fn count(&self, id: &str) -> usize {
        self.order.get(id).map_or(0, BTreeMap::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_resolv_conf() {
        let t = "# c\nnameserver 192.0.2.53\nsearch x\nnameserver fe80::1%eth0\nnameserver bad\n";
        assert_eq!(
            resolv_conf(t),
            vec![
                "192.0.2.53:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn memory_expires() {
        let mut m = Memory::default();
        let t = Instant::now();
        let ip = Ipv4Addr::new(203, 0, 113, 1);
        m.remember("w", "a.com", &[(ip, Duration::from_secs(30))], t);
        assert!(m.resolved("w", "a.com", ip, t + Duration::from_secs(29)));
        assert!(!m.resolved("w", "a.com", ip, t + Duration::from_secs(30)));
        assert!(!m.resolved("w2", "a.com", ip, t));
        assert!(!m.resolved("w", "b.com", ip, t));
        assert_eq!(m.live(t + Duration::from_secs(10)).len(), 1);
        assert!(m.live(t + Duration::from_secs(31)).is_empty());
    }

    #[test]
    fn one_workspace_cannot_crowd_out_the_others_names() {
        let mut m = Memory::with_limits(100, 250);
        let t = Instant::now();
        let ip = Ipv4Addr::new(203, 0, 113, 1);
        let day = Duration::from_secs(86400);
        m.remember("victim", "api.example.com", &[(ip, day)], t);
        m.remember("other", "a.example.com", &[(ip, day)], t);
        // One workspace resolves a flood of unique names.
        for i in 0..10_000 {
            m.remember("flood", &format!("n{i}.evil.test"), &[(ip, day)], t);
        }
        assert_eq!(m.count("flood"), 100, "its quota");
        // Its newest are kept, its oldest went.
        assert!(m.resolved("flood", "n9999.evil.test", ip, t));
        assert!(!m.resolved("flood", "n0.evil.test", ip, t));
        // The others' names are still there, and new ones are remembered.
        assert!(m.resolved("victim", "api.example.com", ip, t));
        assert!(m.resolved("other", "a.example.com", ip, t));
        m.remember("victim", "cdn.example.com", &[(ip, day)], t);
        assert!(m.resolved("victim", "cdn.example.com", ip, t));
        // Many workspaces at their quota fill the whole memory: the biggest gives way, and a
        // refreshed name counts as new.
        for w in 0..3 {
            for i in 0..100 {
                m.remember(&format!("w{w}"), &format!("n{i}.test"), &[(ip, day)], t);
            }
        }
        m.remember("victim", "api.example.com", &[(ip, day)], t);
        m.remember("late", "x.test", &[(ip, day)], t);
        assert!(m.resolved("late", "x.test", ip, t));
        assert!(m.resolved("victim", "api.example.com", ip, t));
        assert!(m.live(t).len() <= 250);
        m.forget("late", "x.test");
        assert_eq!(m.count("late"), 0);
    }

    #[test]
    fn loads_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(load(root).is_err(), "no config");
        std::fs::create_dir_all(root.join(".net")).unwrap();
        let cfg = NetConfig {
            dns_upstream: vec!["192.0.2.53:53".parse().unwrap()],
            ..NetConfig::default()
        };
        std::fs::write(
            root.join(".net/config.json"),
            serde_json::to_vec(&cfg).unwrap(),
        )
        .unwrap();
        for (id, ip, plan) in [
            (
                "aaaa",
                Ipv4Addr::new(10, 213, 0, 2),
                Some("{\"stages\":[],\"limits\":{}}"),
            ),
            ("bbbb", Ipv4Addr::new(10, 213, 0, 3), None),
            ("cccc", Ipv4Addr::new(10, 213, 0, 4), Some("{garbage")),
        ] {
            std::fs::create_dir_all(root.join(id)).unwrap();
            let att = Attachment {
                id: id.into(),
                address: ip,
                veth: format!("wv{id}"),
            };
            std::fs::write(
                root.join(id).join("net.json"),
                serde_json::to_vec(&att).unwrap(),
            )
            .unwrap();
            if let Some(p) = plan {
                std::fs::write(root.join(id).join("egress.json"), p).unwrap();
            }
        }
        std::fs::create_dir_all(root.join("dddd")).unwrap(); // no net.json: not on the bridge
        let s = load(root).unwrap();
        assert_eq!(s.by_addr.len(), 3);
        assert!(s.by_addr[&Ipv4Addr::new(10, 213, 0, 2)].plan.is_some());
        assert!(s.by_addr[&Ipv4Addr::new(10, 213, 0, 3)].plan.is_none());
        assert!(s.by_addr[&Ipv4Addr::new(10, 213, 0, 4)].plan.is_none());
        assert_eq!(s.upstreams, cfg.dns_upstream);
        assert_eq!(s.by_id("bbbb").map(|w| w.id.as_str()), Some("bbbb"));
    }
}
