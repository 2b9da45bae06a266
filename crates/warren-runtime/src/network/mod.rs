//! Workspace networks: Warren's bridge, address pool (IPAM), each workspace's veth and network
//! namespace, NAT, and the nftables rules that enforce egress policies. Warren's resolver and egress
//! proxy (`warren __netd`, crate `warren-netd`) run beside them and use `learn` and `nflog`.
//!
//! Layout under the runtime root (`STATE/workspaces`): `.net/config.json` (the `NetConfig` in use),
//! `.net/ipam/<address>` (one file per allocated address, holding the workspace id),
//! `.net/host.lock` (held while the bridge and base tables are set up), `.net/netd.lock` (held by the
//! running netd), `.net/netd.sock` (the resolver's control socket), `.net/denials.jsonl` (the denial
//! journal), and per workspace `<id>/net.json` (`Attachment`), `<id>/egress.json` (`EgressPlan`),
//! `<id>/net.lock` (serializes changes to its rules) and `<id>/etc/resolv.conf`.
//!
//! Host requirements: iproute2 (`ip`, `tc`), libnftables (`libnftables.so.1`, Debian package
//! `nftables`), and the kernel's nftables (inet, bridge, nat, connlimit, log) and veth support.
//! `ensure_host` sets `net.ipv4.ip_forward=1`. A host firewall whose forward policy drops (Docker's
//! iptables rules, for one) must let the bridge's traffic through.
//!
//! Submodules: `host` (bridge, veths, tc), `rules` (nftables compilation and replacement), `nft`
//! (libnftables), `nflog` (the log group reader).

use std::fs;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use warren_api::net::{Checked, Ipv4Net, NetLimits};

mod host;
pub mod nflog;
pub mod nft;
mod rules;

pub(crate) use host::check_config;
pub use host::{attach, ensure_host};
pub use rules::{apply, check_plan, counters, detach, learn, relearn};

/// A host's Warren network. One per runtime root; two Warren instances on a host need different
/// bridges, subnets and tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// The bridge's name (default `warren0`).
    pub bridge: String,
    /// The address pool; the bridge (gateway, resolver, proxy) takes its first host address.
    pub subnet: Ipv4Net,
    /// The nftables tables' name (`inet NAME` and `bridge NAME`).
    pub table: String,
    /// Upstream resolvers; empty means the host's `/etc/resolv.conf`.
    pub dns_upstream: Vec<SocketAddr>,
    /// Port of the egress proxy on the gateway address.
    pub proxy_port: u16,
    /// nflog group of denied connection attempts.
    pub log_group: u16,
}

impl Default for NetConfig {
    fn default() -> NetConfig {
        NetConfig {
            bridge: "warren0".into(),
            subnet: Ipv4Net {
                addr: Ipv4Addr::new(10, 213, 0, 0),
                prefix: 16,
            },
            table: "warren".into(),
            dns_upstream: Vec::new(),
            proxy_port: 15001,
            log_group: 2113,
        }
    }
}

impl NetConfig {
    /// The bridge's address: the gateway, resolver and proxy of every workspace.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.addr) + 1)
    }
}

/// What the control plane decides a workspace may reach: its stages (template's, then its own; a
/// connection or name must pass each) and the limits in force. Stored as `<id>/egress.json`; a
/// workspace without one reaches nothing but the resolver, which answers nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressPlan {
    /// The stages, in order.
    pub stages: Vec<Checked>,
    /// Bandwidth and connection limits.
    pub limits: NetLimits,
}

/// A workspace's place on the bridge (`<id>/net.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The workspace id.
    pub id: String,
    /// Its address (a /32 inside the workspace, routed through the gateway).
    pub address: Ipv4Addr,
    /// The host end of its veth pair.
    pub veth: String,
}

/// One record of the denial journal (`.net/denials.jsonl`), rate-limited by the resolver: the first
/// denial of a kind per workspace, destination and port in a minute is written at once, the rest of
/// that minute as one record with their `count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// When (RFC 3339, UTC): the first denial the record covers.
    pub time: String,
    /// Workspace id.
    pub workspace: String,
    /// `connect` (nftables refused a connection), `dns` (the resolver refused a name) or `proxy`
    /// (the egress proxy refused a Host header or TLS server name).
    pub kind: String,
    /// Destination address, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// Destination port, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `tcp`, `udp`, `icmp`... when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The name asked for (`dns`) or sent (`proxy`: Host or SNI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Why: the deny rule, `protected:<range>`, `not allowed`, ...
    pub why: String,
    /// How many denials this record stands for.
    pub count: u64,
}

/// Counters of a workspace's network (from nftables and the resolver).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetCounters {
    /// Connection attempts nftables refused.
    pub denied_connections: u64,
}

/// Errors of the host network: one line saying what failed, with a hint where one helps.
pub type NetResult<T> = Result<T, String>;

/// `ROOT/.net`.
pub fn net_dir(root: &Path) -> PathBuf {
    root.join(".net")
}

/// `ROOT/.net/ipam`.
fn ipam_dir(root: &Path) -> PathBuf {
    net_dir(root).join("ipam")
}

/// The host end of workspace `id`'s veth pair: `wv` and 8 hex digits of a hash of the id (interface
/// names have at most 15 characters).
pub fn veth_name(id: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("wv{}", &hex::encode(Sha256::digest(id.as_bytes()))[..8])
}

/// The workspace's MAC address, derived from its address (locally administered, unicast), so that
/// anti-spoofing can pin a port to both.
pub(crate) fn mac_of(addr: Ipv4Addr) -> String {
    let o = addr.octets();
    format!("02:77:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

/// The workspace's part of nftables object names: its id when that is a plain word, else a hash.
pub(crate) fn tag(id: &str) -> String {
    if !id.is_empty()
        && id.len() <= 40
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        id.to_string()
    } else {
        use sha2::{Digest, Sha256};
        format!("h{}", &hex::encode(Sha256::digest(id.as_bytes()))[..16])
    }
}

/// Checks that `id` can name a workspace on the network (it appears in log prefixes and file names).
pub(crate) fn check_id(id: &str) -> NetResult<()> {
    if !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !id.starts_with('.')
    {
        Ok(())
    } else {
        Err(format!("workspace id `{id}` cannot be used on the network: use letters, digits, `-`, `_` and `.`"))
    }
}

/// Reserves an address of `cfg.subnet` for workspace `id` (`ROOT/.net/ipam/<address>`, created
/// exclusively); the one it already has if any. The gateway, the network and broadcast addresses
/// are never handed out.
pub fn allocate(root: &Path, cfg: &NetConfig, id: &str) -> NetResult<Ipv4Addr> {
    check_id(id)?;
    let dir = ipam_dir(root);
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    if let Some(a) = allocated(root, id) {
        if cfg.subnet.contains(a) {
            return Ok(a);
        }
    }
    let base = u32::from(cfg.subnet.addr);
    let size = 1u64 << (32 - cfg.subnet.prefix.min(32));
    if size < 4 {
        return Err(format!(
            "subnet {} is too small: use a /30 or larger",
            cfg.subnet
        ));
    }
    let gw = u32::from(cfg.gateway());
    // Round robin from the last address handed out: a released address is the last to be given
    // again, so a rule or a cache that still names it has time to go before another workspace
    // answers there.
    let cursor = dir.join(".next");
    let start: u32 = fs::read_to_string(&cursor)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|o| (1..(size - 1) as u32).contains(o))
        .unwrap_or(1);
    let usable = (size - 2) as u32;
    for i in 0..usable {
        let off = 1 + (start - 1 + i) % usable;
        let a = base + off;
        if a == gw {
            continue;
        }
        let addr = Ipv4Addr::from(a);
        let path = dir.join(addr.to_string());
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(mut f) => {
                f.write_all(id.as_bytes())
                    .map_err(|e| format!("write {}: {e}", path.display()))?;
                let _ = fs::write(&cursor, (off % usable + 1).to_string());
                return Ok(addr);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("create {}: {e}", path.display())),
        }
    }
    Err(format!(
        "no free address left in {}: destroy workspaces or configure a larger subnet",
        cfg.subnet
    ))
}

/// The address reserved for `id`, if any.
pub fn allocated(root: &Path, id: &str) -> Option<Ipv4Addr> {
    ipam_entries(root)
        .into_iter()
        .find(|(_, owner)| owner == id)
        .map(|(a, _)| a)
}

/// Every reservation: (address, workspace id).
pub fn ipam_entries(root: &Path) -> Vec<(Ipv4Addr, String)> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(ipam_dir(root)) {
        for e in rd.flatten() {
            let Some(addr) = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            if let Ok(owner) = fs::read_to_string(e.path()) {
                out.push((addr, owner.trim().to_string()));
            }
        }
    }
    out
}

/// Frees `id`'s address (idempotent).
pub fn release(root: &Path, id: &str) -> NetResult<()> {
    for (addr, owner) in ipam_entries(root) {
        if owner == id {
            let p = ipam_dir(root).join(addr.to_string());
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("remove {}: {e}", p.display())),
            }
        }
    }
    Ok(())
}

/// What [`leftovers`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    /// Workspaces (tags of their nftables objects) whose chains and sets were removed.
    pub chains: Vec<String>,
    /// Host veth ends removed.
    pub veths: Vec<String>,
    /// Addresses released (their workspace no longer exists on the host).
    pub addresses: Vec<Ipv4Addr>,
}

/// Reconciles the host network with the workspaces that should have one: removes the nftables
/// objects and host veths of every workspace not in `running` (gone, stopped, or whose supervisor
/// died), and releases the addresses of workspaces not in `existing` (no longer on the host).
///
/// A workspace may start between the caller's look and this cleanup: each workspace directory's
/// `net.lock` (which its supervisor holds while it installs its network) is taken, in a fixed
/// order, and held while the cleanup runs, and a workspace of `existing` whose supervisor `alive`
/// now says runs is kept.
pub fn leftovers(
    root: &Path,
    cfg: &NetConfig,
    running: &[String],
    existing: &[String],
    alive: &dyn Fn(&str) -> bool,
) -> NetResult<Leftovers> {
    // Another instance's bridge means another instance's tables: not ours to clean.
    host::check_owned(root, cfg)?;
    let mut dirs: Vec<String> = fs::read_dir(root)
        .map_err(|e| format!("read {}: {e}", root.display()))?
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && !running.contains(n))
        .collect();
    dirs.sort();
    let mut running = running.to_vec();
    let mut _locks = Vec::new();
    for id in dirs {
        // A directory going away (destroy) cannot start any more.
        let Ok(lock) = workspace_lock(&root.join(&id)) else {
            continue;
        };
        if existing.contains(&id) && alive(&id) {
            running.push(id);
        } else {
            _locks.push(lock);
        }
    }
    let mut done = Leftovers::default();
    let live_tags: Vec<String> = running.iter().map(|id| tag(id)).collect();
    done.chains = rules::remove_except(cfg, &live_tags)?;
    let live_veths: Vec<String> = running.iter().map(|id| veth_name(id)).collect();
    done.veths = host::remove_veths_except(cfg, &live_veths);
    rules::remove_ports(cfg, |i| !live_veths.iter().any(|v| v == i))?;
    for (addr, owner) in ipam_entries(root) {
        if !existing.contains(&owner) {
            let _ = fs::remove_file(ipam_dir(root).join(addr.to_string()));
            done.addresses.push(addr);
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_handed_out_once_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let cfg = NetConfig {
            subnet: Ipv4Net {
                addr: Ipv4Addr::new(10, 9, 0, 0),
                prefix: 29,
            },
            ..NetConfig::default()
        };
        let a = allocate(d.path(), &cfg, "a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(allocate(d.path(), &cfg, "a").unwrap(), a);
        let ids = ["b", "c", "d", "e"];
        for id in ids {
            allocate(d.path(), &cfg, id).unwrap();
        }
        let e = allocate(d.path(), &cfg, "f").unwrap_err();
        assert!(e.contains("no free address"), "{e}");
        release(d.path(), "c").unwrap();
        assert_eq!(
            allocate(d.path(), &cfg, "f").unwrap(),
            Ipv4Addr::new(10, 9, 0, 4)
        );
        assert!(allocate(d.path(), &cfg, "../x").is_err());
        // A released address is given again last.
        release(d.path(), "a").unwrap();
        release(d.path(), "b").unwrap();
        let g = allocate(d.path(), &cfg, "g").unwrap();
        let h = allocate(d.path(), &cfg, "h").unwrap();
        assert_eq!(
            (g, h),
            (Ipv4Addr::new(10, 9, 0, 2), Ipv4Addr::new(10, 9, 0, 3))
        );
        let d2 = tempfile::tempdir().unwrap();
        let a = allocate(d2.path(), &cfg, "a").unwrap();
        allocate(d2.path(), &cfg, "b").unwrap();
        release(d2.path(), "a").unwrap();
        assert_ne!(allocate(d2.path(), &cfg, "c").unwrap(), a);
        assert_ne!(veth_name("a"), veth_name("b"));
        assert_eq!(veth_name("a").len(), 10);
        assert_eq!(tag("0123abcd"), "0123abcd");
        assert!(tag("build-1-2").starts_with('h'));
    }
}

/// `ROOT/.net/config.json`.
pub fn config_path(root: &Path) -> PathBuf {
    net_dir(root).join("config.json")
}

/// `ROOT/.net/denials.jsonl`.
pub fn denials_path(root: &Path) -> PathBuf {
    net_dir(root).join("denials.jsonl")
}

/// Writes `value` as JSON to `path` atomically (a temporary file renamed over it).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> NetResult<()> {
    // A temporary name of this process and thread: several processes (concurrent `warren up`s)
    // write the same file, and a shared temporary would be renamed away under one of them.
    let tmp = path.with_extension(format!(
        "json.{}.{:?}.tmp",
        std::process::id(),
        std::thread::current().id()
    ));
    let data = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    fs::write(&tmp, data).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("write {}: {e}", path.display()))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> NetResult<T> {
    let b = fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_slice(&b).map_err(|e| format!("parse {}: {e}", path.display()))
}

/// What the supervisor of the workspace in `dir` (`ROOT/<id>`) needs to connect it: the runtime
/// root, the network's configuration, its attachment and its egress plan (none yet: an empty plan,
/// which reaches nothing but the resolver).
pub fn load(dir: &Path) -> NetResult<(PathBuf, NetConfig, Attachment, EgressPlan)> {
    let root = dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", dir.display()))?
        .to_path_buf();
    let cfg: NetConfig = read_json(&config_path(&root))?;
    let att: Attachment = read_json(&dir.join("net.json"))?;
    let plan = load_plan(dir)?;
    Ok((root, cfg, att, plan))
}

/// The egress plan of the workspace in `dir` (`egress.json`; none: the empty plan).
pub fn load_plan(dir: &Path) -> NetResult<EgressPlan> {
    match dir.join("egress.json").exists() {
        true => read_json(&dir.join("egress.json")),
        false => Ok(EgressPlan::default()),
    }
}

/// Serializes changes to one workspace's network (`<dir>/net.lock`): its plan is written and
/// applied, installed by its supervisor, and removed, one at a time.
pub fn workspace_lock(dir: &Path) -> NetResult<nix::fcntl::Flock<fs::File>> {
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dir.join("net.lock"))
        .map_err(|e| format!("open {}: {e}", dir.join("net.lock").display()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("lock {}: {e}", dir.join("net.lock").display()))
}

/// The denial journal's records after byte position `after`, and the position to read from next.
/// A journal shorter than `after` was rotated (to `.1`): the rest of the old one is read from there,
/// then the new one from its start. Only complete lines are read; damaged lines are skipped.
pub fn read_denials(root: &Path, after: u64) -> NetResult<(Vec<Denial>, u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let path = denials_path(root);
    let read_from = |p: &Path, pos: u64| -> NetResult<(Vec<Denial>, u64)> {
        let mut f = match fs::File::open(p) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), pos)),
            Err(e) => return Err(format!("open {}: {e}", p.display())),
        };
        f.seek(SeekFrom::Start(pos))
            .map_err(|e| format!("seek {}: {e}", p.display()))?;
        let mut buf = Vec::new();
        f.take(16 << 20)
            .read_to_end(&mut buf)
            .map_err(|e| format!("read {}: {e}", p.display()))?;
        let complete = buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let records = buf[..complete]
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect();
        Ok((records, pos + complete as u64))
    };
    let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    if after <= len {
        return read_from(&path, after);
    }
    let mut rotated = path.clone().into_os_string();
    rotated.push(".1");
    let (mut old, _) = read_from(Path::new(&rotated), after)?;
    let (new, pos) = read_from(&path, 0)?;
    old.extend(new);
    Ok((old, pos))
}

#[cfg(test)]
mod journal_tests {
    use super::*;

    fn line(ws: &str) -> String {
        let d = Denial {
            time: "2026-01-01T00:00:00Z".into(),
            workspace: ws.into(),
            kind: "connect".into(),
            address: Some(Ipv4Addr::new(203, 0, 113, 1)),
            port: Some(443),
            protocol: Some("tcp".into()),
            name: None,
            why: "not allowed".into(),
            count: 1,
        };
        format!("{}\n", serde_json::to_string(&d).unwrap())
    }

    #[test]
    fn the_journal_is_read_from_a_position_in_whole_lines_across_a_rotation() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(net_dir(d.path())).unwrap();
        assert_eq!(read_denials(d.path(), 0).unwrap(), (vec![], 0));
        let path = denials_path(d.path());
        let half = line("b");
        fs::write(&path, format!("{}{}", line("a"), &half[..10])).unwrap();
        let (got, pos) = read_denials(d.path(), 0).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].workspace, "a");
        assert_eq!(pos, line("a").len() as u64);
        fs::write(&path, format!("{}{}not json\n", line("a"), half)).unwrap();
        let (got, pos2) = read_denials(d.path(), pos).unwrap();
        assert_eq!(
            got.iter().map(|d| d.workspace.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        // Rotated: the rest of the old journal, then the new one.
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        fs::write(
            &rotated,
            format!("{}{}not json\n{}", line("a"), half, line("c")),
        )
        .unwrap();
        fs::write(&path, line("d")).unwrap();
        let (got, pos3) = read_denials(d.path(), pos2).unwrap();
        let names: Vec<_> = got.iter().map(|d| d.workspace.as_str()).collect();
        assert_eq!(names, ["c", "d"]);
        assert_eq!(pos3, line("d").len() as u64);
    }
}

mod choose;
pub use choose::{for_root, teardown, NetRequest};

/// Whether process `pid` runs `warren __netd ROOT` for `root`.
pub(crate) fn is_netd_of(pid: i32, root: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
        args.get(1) == Some(&&b"__netd"[..]) && args.get(2) == Some(&root.as_os_str().as_bytes())
    })
}

/// The processes running `warren __netd ROOT` for `root`.
pub(crate) fn netd_pids(root: &Path) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&pid| is_netd_of(pid, root))
        .collect()
}

/// Removes a gone instance's resolver (`warren __netd ROOT`), bridge and nftables tables (best
/// effort).
pub(crate) fn remove_host_leftovers(bridge: &str, table: &str, root: &Path) {
    for pid in netd_pids(root) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    let _ = std::process::Command::new("ip")
        .args(["link", "del", bridge])
        .stderr(std::process::Stdio::null())
        .status();
    for family in ["inet", "bridge"] {
        let _ = nft::Nft::once(&format!("delete table {family} {table}"));
    }
}
