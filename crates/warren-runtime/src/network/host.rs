//! The host side of Warren's network: the bridge, IP forwarding, the base nftables tables, and each
//! workspace's veth pair, addresses, routes and bandwidth limits (iproute2's `ip` and `tc`).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};
use warren_api::net::NetLimits;

use super::{mac_of, net_dir, nft, rules, veth_name, Attachment, EgressPlan, NetConfig, NetResult};

/// Runs `ip`/`tc`/... with `args`; its stderr on failure.
pub(crate) fn run(program: &str, args: &[&str]) -> NetResult<()> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "run {program}: {e} (network isolation needs iproute2: apt-get install iproute2)"
            )
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip -batch -` with `script` on stdin.
fn ip_batch(script: &str) -> NetResult<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("run ip: {e} (network isolation needs iproute2: apt-get install iproute2)")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("write to ip: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub(crate) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn write_sysctl(path: &str, value: &str) -> NetResult<()> {
    match fs::write(path, value) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("write {path}: {e}")),
    }
}

/// The alias marking a bridge as this runtime root's.
fn alias(root: &Path) -> String {
    let root = fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    format!("warren:{}", root.display())
}

fn check_name(what: &str, name: &str, max: usize) -> NetResult<()> {
    if name.is_empty()
        || name.len() > max
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "network {what} `{name}`: use 1 to {max} letters, digits, `_` or `-`"
        ));
    }
    Ok(())
}

/// Checks a configuration before it touches the host.
pub(crate) fn check_config(cfg: &NetConfig) -> NetResult<()> {
    check_name("bridge", &cfg.bridge, 15)?;
    check_name("table", &cfg.table, 32)?;
    if cfg.subnet.prefix > 30 || cfg.subnet.prefix < 8 {
        return Err(format!(
            "network subnet {}: use a prefix between /8 and /30",
            cfg.subnet
        ));
    }
    let mask = if cfg.subnet.prefix == 0 {
        0
    } else {
        u32::MAX << (32 - cfg.subnet.prefix)
    };
    if u32::from(cfg.subnet.addr) & !mask != 0 {
        return Err(format!("network subnet {}: host bits are set", cfg.subnet));
    }
    Ok(())
}

/// Refuses a bridge named `cfg.bridge` that is not this root's (another Warren instance's, or not
/// Warren's at all); a missing bridge is fine.
pub(crate) fn check_owned(root: &Path, cfg: &NetConfig) -> NetResult<()> {
    let br = &cfg.bridge;
    if !link_exists(br) {
        return Ok(());
    }
    let have = fs::read_to_string(Path::new("/sys/class/net").join(br).join("ifalias"))
        .unwrap_or_default();
    if have.trim() != alias(root) {
        return Err(format!(
            "bridge {br} belongs to something else ({}): give this Warren instance another bridge, subnet and table",
            if have.trim().is_empty() { "no Warren alias" } else { have.trim() }
        ));
    }
    Ok(())
}

/// Makes the host ready for workspaces with a network: the bridge (with the gateway address, marked
/// as this root's), IP forwarding, and the base nftables tables. Idempotent and safe to call from
/// several processes at once (a lock on `ROOT/.net/host.lock` orders them).
pub fn ensure_host(root: &Path, cfg: &NetConfig) -> NetResult<()> {
    check_config(cfg)?;
    nft::available()?;
    let dir = net_dir(root);
    fs::create_dir_all(dir.join("ipam")).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(dir.join("host.lock"))
        .map_err(|e| format!("open host.lock: {e}"))?;
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("lock host.lock: {e}"))?;
    let br = &cfg.bridge;
    if !link_exists(br) {
        if let Err(e) = run("ip", &["link", "add", br, "type", "bridge"]) {
            if !link_exists(br) {
                return Err(e);
            }
        } else {
            run("ip", &["link", "set", "dev", br, "alias", &alias(root)])?;
        }
    }
    if !Path::new("/sys/class/net").join(br).join("bridge").exists() {
        return Err(format!(
            "network interface {br} exists and is not a bridge: configure another bridge name"
        ));
    }
    check_owned(root, cfg)?;
    // No IPv6 on Warren's network: workspaces have none, and the bridge must not offer link-local.
    write_sysctl(&format!("/proc/sys/net/ipv6/conf/{br}/disable_ipv6"), "1")?;
    let gw = format!("{}/{}", cfg.gateway(), cfg.subnet.prefix);
    run("ip", &["addr", "replace", &gw, "dev", br])?;
    run("ip", &["link", "set", "dev", br, "up"])?;
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    rules::ensure_base(cfg)
}

/// Runs `f` on a short-lived thread inside the network namespace of `pid` (`setns` moves only the
/// calling thread; processes it spawns start in that namespace).
fn in_netns<T: Send>(pid: i32, f: impl FnOnce() -> NetResult<T> + Send) -> NetResult<T> {
    let ns = fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| format!("open the workspace's network namespace: {e}"))?;
    std::thread::scope(|s| {
        s.spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("enter the workspace's network namespace: {e}"))?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err("configuring the workspace's network panicked".into()))
    })
}

/// Connects workspace `id` (its init is `init_pid`, created but not started) to the bridge, and
/// installs its rules: veth pair (host end `att.veth` on the bridge, isolated; `eth0` with
/// `ADDR/32` in the workspace), default route through the gateway, IPv6 off, loopback up, the
/// egress plan, anti-spoofing and bandwidth limits. On failure nothing of it stays.
pub fn attach(
    root: &Path,
    cfg: &NetConfig,
    id: &str,
    init_pid: i32,
    att: &Attachment,
    plan: &EgressPlan,
) -> NetResult<()> {
    let _ = root;
    let r = attach_inner(cfg, id, init_pid, att, plan);
    if r.is_err() {
        let _ = rules::detach(cfg, id);
        let _ = run("ip", &["link", "del", "dev", &att.veth]);
    }
    r
}

fn attach_inner(
    cfg: &NetConfig,
    id: &str,
    init_pid: i32,
    att: &Attachment,
    plan: &EgressPlan,
) -> NetResult<()> {
    super::check_id(id)?;
    if att.veth != veth_name(id) {
        return Err(format!(
            "attachment of {id} names veth {}, expected {}",
            att.veth,
            veth_name(id)
        ));
    }
    // A previous run's host end may survive if its namespace did (a crashed supervisor).
    if link_exists(&att.veth) {
        let _ = run("ip", &["link", "del", "dev", &att.veth]);
    }
    // The rules first: from the moment the link is up, its packets meet them.
    rules::apply(cfg, id, att, plan)?;
    let br = &cfg.bridge;
    let v = &att.veth;
    let mac = mac_of(att.address);
    let pid = init_pid.to_string();
    ip_batch(&format!(
        "link add {v} type veth peer name eth0 address {mac} netns {pid}\n\
         link set dev {v} master {br}\n\
         link set dev {v} type bridge_slave isolated on learning off\n\
         link set dev {v} up\n"
    ))?;
    write_sysctl(&format!("/proc/sys/net/ipv6/conf/{v}/disable_ipv6"), "1")?;
    let addr = att.address;
    let gw = cfg.gateway();
    in_netns(init_pid, move || {
        // No IPv6 on the way out (the bridge drops it anyway); loopback keeps `::1`, which
        // programs listening on `[::]` or `localhost` rely on.
        for p in ["default", "eth0"] {
            write_sysctl(&format!("/proc/sys/net/ipv6/conf/{p}/disable_ipv6"), "1")?;
        }
        ip_batch(&format!(
            "link set dev lo up\n\
             addr add {addr}/32 dev eth0\n\
             link set dev eth0 up\n\
             route add default via {gw} dev eth0 onlink\n"
        ))
    })?;
    set_limits(&att.veth, &plan.limits)
}

/// Sets (or lifts) the limit on what a workspace receives (`ingress_mbit`): a token bucket on its
/// host veth end. What it sends (`egress_mbit`) is policed by nftables (see `rules::apply`): this
/// host's kernel need not have tc's police action.
pub(crate) fn set_limits(veth: &str, limits: &NetLimits) -> NetResult<()> {
    if !link_exists(veth) {
        return Ok(());
    }
    let _ = run("tc", &["qdisc", "del", "dev", veth, "root"]);
    if let Some(mbit) = limits.ingress_mbit.filter(|m| *m > 0) {
        // Bursts of ~10 ms at the rate, at least 32 KiB: TCP gets going, the average holds.
        let burst = (u64::from(mbit) * 1_000_000 / 8 / 100)
            .max(32 * 1024)
            .to_string();
        let rate = format!("{mbit}mbit");
        run(
            "tc",
            &[
                "qdisc", "add", "dev", veth, "root", "tbf", "rate", &rate, "burst", &burst,
                "latency", "50ms",
            ],
        )?;
    }
    Ok(())
}

/// Removes the host veth end of a workspace (idempotent).
pub(crate) fn remove_veth(veth: &str) {
    if link_exists(veth) {
        let _ = run("ip", &["link", "del", "dev", veth]);
    }
}

/// Removes every veth on the bridge but `keep`; their names.
pub(crate) fn remove_veths_except(cfg: &NetConfig, keep: &[String]) -> Vec<String> {
    let mut gone = Vec::new();
    let dir = Path::new("/sys/class/net").join(&cfg.bridge).join("brif");
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("wv") && !keep.contains(&name) {
                remove_veth(&name);
                gone.push(name);
            }
        }
    }
    gone
}
