//! Builds the OCI runtime bundle (`config.json`) and exec `process.json` documents for a workspace.
//!
//! Everything security-relevant about a workspace's sandbox is decided here: namespaces, capabilities,
//! seccomp, masked and read-only paths, device access and cgroup limits. The defaults follow the intent
//! of Docker's defaults, narrowed where a development workspace does not need more.

use std::path::Path;

use serde_json::{json, Value};

use crate::{seccomp, Limits, MountKind, Security, WorkspaceSpec};

/// Capabilities every workspace process gets: Docker's default set without `CAP_NET_RAW`.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// /proc and /sys paths hidden from workspaces (as Docker does).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// /proc paths made read-only inside workspaces.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The workspace's init: a shell that sleeps until it is asked to stop. Exec'd processes do the work.
pub const INIT_ARGS: &[&str] = &[
    "/bin/sh",
    "-c",
    "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done",
];

/// Default pids limit: enough for builds, small enough that a fork bomb stops quickly.
pub const DEFAULT_PIDS: i64 = 4096;

/// Sets `key=value` in a `KEY=VALUE` environment list, replacing any earlier value of `key`.
pub fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let prefix = format!("{key}=");
    env.retain(|e| !e.starts_with(&prefix));
    env.push(format!("{key}={value}"));
}

/// A resolved user inside the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub additional_gids: Vec<u32>,
    /// Home directory.
    pub home: String,
    /// Login name, if known.
    pub name: Option<String>,
    /// Login shell from `/etc/passwd`, if it names one.
    pub shell: Option<String>,
}

impl User {
    /// The root user.
    pub fn root() -> User {
        User {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            home: "/root".into(),
            name: Some("root".into()),
            shell: None,
        }
    }
}

/// Every capability Linux defines (as of 6.x), for privileged workspaces and to validate `capAdd`.
pub const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The canonical name of a capability as Docker and devcontainer.json spell them (`SYS_PTRACE`,
/// `cap_sys_ptrace`, `CAP_SYS_PTRACE`), or `None` for a name Linux does not define. `ALL` is not a
/// capability here: asking for everything is `privileged`.
pub fn capability(name: &str) -> Option<&'static str> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    ALL_CAPS.iter().copied().find(|c| *c == full)
}

/// Whether `cap` is in the default set every workspace has anyway.
pub fn is_default_capability(cap: &str) -> bool {
    DEFAULT_CAPS.contains(&cap)
}

/// The capabilities this host can hand out: the bounding set of the current process (a host that
/// itself runs in a container may lack some), as a mask indexed like [`ALL_CAPS`].
pub fn host_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// Whether the host can hand out `cap` (a canonical name).
pub fn host_has_capability(cap: &str) -> bool {
    ALL_CAPS
        .iter()
        .position(|c| *c == cap)
        .is_some_and(|bit| host_bounding_set() & (1 << bit) != 0)
}

fn caps(security: &Security) -> Value {
    let bounding = host_bounding_set();
    let mut set: Vec<&str> = if security.privileged {
        ALL_CAPS
            .iter()
            .enumerate()
            .filter(|(bit, _)| bounding & (1 << bit) != 0)
            .map(|(_, c)| *c)
            .collect()
    } else {
        DEFAULT_CAPS.to_vec()
    };
    for c in &security.cap_add {
        if let Some(c) = capability(c) {
            if !set.contains(&c) && host_has_capability(c) {
                set.push(c);
            }
        }
    }
    json!(set)
}

/// The init's argv: Warren's sleeping init, or the configured command, under a minimal reaping init
/// when asked for. The reaping init is a POSIX shell (every devcontainer image has one): it forwards
/// SIGTERM and SIGINT to the command and waits in a loop, which reaps every orphan reparented to it.
pub fn init_args(security: &Security) -> Vec<String> {
    match &security.command {
        None => INIT_ARGS.iter().map(|s| s.to_string()).collect(),
        Some(cmd) if !security.init => cmd.clone(),
        Some(cmd) => {
            let mut v: Vec<String> = [
                "/bin/sh",
                "-c",
                "\"$@\" & child=$!; trap 'kill -TERM $child 2>/dev/null' TERM INT; \
                 while :; do wait $child; code=$?; kill -0 $child 2>/dev/null || exit $code; done",
                "warren-init",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            v.extend(cmd.iter().cloned());
            v
        }
    }
}

/// The OCI `process` object for a process running as `user`.
pub fn process(
    args: &[String],
    env: &[String],
    cwd: &str,
    user: &User,
    terminal: bool,
    size: Option<(u16, u16)>,
    security: &Security,
) -> Value {
    let caps = caps(security);
    let mut p = json!({
        "terminal": terminal,
        "user": { "uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids },
        "args": args,
        "env": env,
        "cwd": cwd,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps
        },
        "noNewPrivileges": !security.privileged,
    });
    if let (true, Some((rows, cols))) = (terminal, size) {
        p["consoleSize"] = json!({ "height": rows, "width": cols });
    }
    p
}

fn resources(limits: &Limits, privileged: bool) -> Value {
    let mut r = json!({
        "devices": [
            { "allow": false, "access": "rwm" },
            { "allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm" },
            { "allow": true, "type": "c", "major": 1, "minor": 5, "access": "rwm" },
            { "allow": true, "type": "c", "major": 1, "minor": 7, "access": "rwm" },
            { "allow": true, "type": "c", "major": 1, "minor": 8, "access": "rwm" },
            { "allow": true, "type": "c", "major": 1, "minor": 9, "access": "rwm" },
            { "allow": true, "type": "c", "major": 5, "minor": 0, "access": "rwm" },
            { "allow": true, "type": "c", "major": 5, "minor": 1, "access": "rwm" },
            { "allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm" },
            { "allow": true, "type": "c", "major": 136, "access": "rwm" }
        ],
        "pids": { "limit": limits.pids.unwrap_or(DEFAULT_PIDS) },
    });
    if privileged {
        r["devices"] = json!([{ "allow": true, "access": "rwm" }]);
    }
    if let Some(mem) = limits.memory_bytes {
        let mem = i64::try_from(mem).unwrap_or(i64::MAX);
        // memory+swap equal to memory: a workspace cannot escape its limit into swap.
        r["memory"] = json!({ "limit": mem, "swap": mem });
    }
    if let Some(cpus) = limits.cpus {
        let period: u64 = 100_000;
        let quota = (cpus * period as f64).round() as i64;
        r["cpu"] = json!({ "quota": quota.max(1000), "period": period });
    }
    r
}

fn base_mounts(tmp_tmpfs: bool, privileged: bool) -> Vec<Value> {
    let sys = if privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        json!({ "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] }),
        json!({ "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] }),
        json!({ "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] }),
        json!({ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"] }),
        json!({ "destination": "/sys", "type": "sysfs", "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", sys] }),
    ];
    if tmp_tmpfs {
        mounts.push(
            json!({ "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"] }),
        );
    }
    mounts
}

/// Paths of one workspace's directories on the host.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<root>/<id>`.
    pub dir: std::path::PathBuf,
}

impl Layout {
    /// The layout of workspace `id` under `root`.
    pub fn new(root: &Path, id: &str) -> Layout {
        Layout { dir: root.join(id) }
    }
    /// The OCI bundle directory.
    pub fn bundle(&self) -> std::path::PathBuf {
        self.dir.join("bundle")
    }
    /// Where the overlay root filesystem is mounted (inside the supervisor's mount namespace).
    pub fn rootfs(&self) -> std::path::PathBuf {
        self.dir.join("bundle/rootfs")
    }
    /// Overlay upper directory: the workspace's writable layer.
    pub fn upper(&self) -> std::path::PathBuf {
        self.dir.join("upper")
    }
    /// Overlay work directory.
    pub fn work(&self) -> std::path::PathBuf {
        self.dir.join("work")
    }
    /// Named volumes and the home volume.
    pub fn volumes(&self) -> std::path::PathBuf {
        self.dir.join("volumes")
    }
    /// Runtime files: sockets, locks, pid files, OCI runtime state.
    pub fn run(&self) -> std::path::PathBuf {
        self.dir.join("run")
    }
    /// The supervisor's control socket.
    pub fn socket(&self) -> std::path::PathBuf {
        self.dir.join("run/sup.sock")
    }
    /// Held (flock) by a live supervisor for its whole life.
    pub fn lock(&self) -> std::path::PathBuf {
        self.dir.join("run/sup.lock")
    }
    /// The supervisor's description of the workspace (written by `create`).
    pub fn supervisor_config(&self) -> std::path::PathBuf {
        self.dir.join("supervisor.json")
    }
    /// Supervisor log (its stderr).
    pub fn log(&self) -> std::path::PathBuf {
        self.dir.join("run/supervisor.log")
    }
    /// The last exit status of the workspace init, written by the supervisor.
    pub fn exit_file(&self) -> std::path::PathBuf {
        self.dir.join("run/exit.json")
    }
    /// State directory handed to the OCI runtime (`--root`).
    pub fn oci_root(&self) -> std::path::PathBuf {
        self.dir.join("run/oci")
    }
    /// Generated /etc/hostname and /etc/hosts.
    pub fn etc(&self) -> std::path::PathBuf {
        self.dir.join("etc")
    }
}

/// The cgroup path (relative to each hierarchy's root) of workspace `id`.
pub fn cgroup_path(id: &str) -> String {
    format!("/warren/{id}")
}

/// The full OCI `config.json` of a workspace; `tools` is the host directory bind-mounted read-only
/// at `/.warren` (see [`crate::tools`]).
pub fn config(
    spec: &WorkspaceSpec,
    layout: &Layout,
    init_user: &User,
    home: Option<&str>,
    tools: Option<&Path>,
) -> Value {
    let mut mounts = base_mounts(spec.tmp_tmpfs, spec.security.privileged);
    let etc = layout.etc();
    if spec.network == crate::Network::Host {
        mounts.push(json!({ "destination": "/etc/resolv.conf", "type": "bind",
            "source": "/etc/resolv.conf", "options": ["rbind", "ro", "nosuid", "nodev", "noexec"] }));
    }
    if spec.network == crate::Network::Egress {
        // Warren's resolver on the gateway (written by `create` next to hostname and hosts).
        mounts.push(json!({ "destination": "/etc/resolv.conf", "type": "bind",
            "source": etc.join("resolv.conf"), "options": ["rbind", "ro", "nosuid", "nodev", "noexec"] }));
    }
    for (file, dest) in [("hostname", "/etc/hostname"), ("hosts", "/etc/hosts")] {
        mounts.push(json!({ "destination": dest, "type": "bind",
            "source": etc.join(file), "options": ["rbind", "ro", "nosuid", "nodev", "noexec"] }));
    }
    if let Some(home) = home {
        mounts.push(json!({ "destination": home, "type": "bind",
            "source": layout.volumes().join("home"), "options": ["rbind", "nosuid", "nodev"] }));
    }
    for m in &spec.mounts {
        let mut options: Vec<&str> = vec!["nosuid", "nodev"];
        if m.read_only {
            options.push("ro");
        }
        let v = match m.kind {
            MountKind::Bind => {
                options.insert(0, "rbind");
                json!({ "destination": m.target, "type": "bind",
                        "source": m.source.clone().unwrap_or_default(), "options": options })
            }
            MountKind::Volume => {
                options.insert(0, "rbind");
                json!({ "destination": m.target, "type": "bind",
                        "source": volume_dir(layout, m), "options": options })
            }
            MountKind::Tmpfs => {
                options.push("mode=1777");
                json!({ "destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": options })
            }
        };
        mounts.push(v);
    }
    let args = init_args(&spec.security);
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    if spec.network != crate::Network::Host {
        namespaces.insert(1, json!({"type": "network"}));
    }
    let mut linux = json!({
        "cgroupsPath": cgroup_path(&spec.id),
        "resources": resources(&spec.limits, spec.security.privileged),
        "seccomp": seccomp::profile(),
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": READONLY_PATHS,
        "rootfsPropagation": "private",
    });
    if spec.security.privileged || spec.security.seccomp_unconfined {
        if let Some(l) = linux.as_object_mut() {
            l.remove("seccomp");
        }
    }
    if spec.security.privileged {
        linux["maskedPaths"] = json!([]);
        linux["readonlyPaths"] = json!([]);
    }
    if let Some(map) = &spec.user_namespace {
        namespaces.push(json!({"type": "user"}));
        linux["uidMappings"] =
            json!([{ "containerID": 0, "hostID": map.host_uid, "size": map.size }]);
        linux["gidMappings"] =
            json!([{ "containerID": 0, "hostID": map.host_gid, "size": map.size }]);
    }
    linux["namespaces"] = json!(namespaces);
    let mut v = json!({
        "ociVersion": "1.0.2",
        "process": process(&args, &spec.env, "/", init_user, false, None, &spec.security),
        "root": { "path": "rootfs", "readonly": false },
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": linux,
    });
    crate::tools::set_mount(&mut v, tools);
    v
}

/// Where secret files live inside a workspace.
pub const SECRETS_DIR: &str = "/run/secrets";

/// Where the agent directory is mounted inside a workspace.
pub const AGENT_MOUNT: &str = "/run/warren";

/// The host directory mounted at [`AGENT_MOUNT`].
pub fn agent_dir(layout: &Layout) -> std::path::PathBuf {
    layout.dir.join("agent")
}

/// Adds the secrets tmpfs (0700, owned by `secrets_owner`) and the read-only agent directory,
/// last, so that no mount of the configuration covers them.
pub fn add_agent_mounts(config: &mut Value, secrets_owner: Option<&User>, agent: Option<&Path>) {
    let Some(mounts) = config["mounts"].as_array_mut() else {
        return;
    };
    mounts.retain(|m| m["destination"] != SECRETS_DIR && m["destination"] != AGENT_MOUNT);
    if let Some(u) = secrets_owner {
        mounts.push(
            json!({ "destination": SECRETS_DIR, "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "noexec", "mode=0700", format!("uid={}", u.uid),
                format!("gid={}", u.gid), "size=8m"] }),
        );
    }
    if let Some(dir) = agent {
        mounts.push(
            json!({ "destination": AGENT_MOUNT, "type": "bind", "source": dir,
            "options": ["rbind", "ro", "nosuid", "nodev", "noexec"] }),
        );
    }
}

/// Checks a named volume's name: a plain name, never a path (it becomes a directory name under the
/// workspace's `volumes/named/`).
pub fn check_volume_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        Ok(())
    } else {
        Err(format!(
            "invalid volume name `{name}`: use letters, digits, `_`, `.` and `-`, starting with a letter or digit"
        ))
    }
}

/// The host directory behind a volume mount: `volumes/named/<name>`, or for an anonymous volume
/// `volumes/anon/<target with every other character replaced by _>`. Names must have passed
/// [`check_volume_name`].
pub fn volume_dir(layout: &Layout, m: &crate::MountSpec) -> std::path::PathBuf {
    match &m.source {
        Some(name) => layout.volumes().join("named").join(name),
        None => {
            let s: String = m
                .target
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            layout.volumes().join("anon").join(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MountSpec, UserNamespace};

    fn spec() -> WorkspaceSpec {
        WorkspaceSpec {
            id: "abc".into(),
            hostname: "hello".into(),
            layers: vec!["/l1".into()],
            env: vec!["PATH=/bin".into()],
            mounts: vec![MountSpec {
                kind: MountKind::Bind,
                source: Some("/src".into()),
                target: "/workspaces/src".into(),
                read_only: false,
            }],
            home_user: Some("root".into()),
            container_user: None,
            limits: Limits {
                memory_bytes: Some(64 << 20),
                cpus: Some(0.5),
                pids: Some(100),
            },
            user_namespace: None,
            security: Security::default(),
            network: crate::Network::Isolated,
            tmp_tmpfs: true,
            secrets_user: None,
            agent_dir: false,
        }
    }

    #[test]
    fn config_is_a_valid_oci_spec_with_the_limits_asked_for() {
        let layout = Layout::new(Path::new("/state"), "abc");
        let v = config(&spec(), &layout, &User::root(), Some("/root"), None);
        let parsed: oci_spec::runtime::Spec =
            serde_json::from_value(v.clone()).expect("valid OCI spec");
        let linux = parsed.linux().as_ref().unwrap();
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.pids().as_ref().unwrap().limit(), 100);
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert_eq!(
            linux.cgroups_path().as_ref().unwrap(),
            Path::new("/warren/abc")
        );
        let ns: Vec<String> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap().to_string())
            .collect();
        for want in ["pid", "network", "ipc", "uts", "mount", "cgroup"] {
            assert!(ns.contains(&want.to_string()), "missing {want} namespace");
        }
        assert!(!ns.contains(&"user".to_string()));
        let p = parsed.process().as_ref().unwrap();
        assert_eq!(p.no_new_privileges(), Some(true));
        let caps = p
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap();
        assert!(!caps.contains(&oci_spec::runtime::Capability::SysAdmin));
        assert!(!caps.contains(&oci_spec::runtime::Capability::NetRaw));
        assert!(linux.seccomp().is_some());
    }

    #[test]
    fn user_namespace_is_added_with_mappings_when_configured() {
        let mut s = spec();
        s.user_namespace = Some(UserNamespace {
            host_uid: 100000,
            host_gid: 100000,
            size: 65536,
        });
        let v = config(
            &s,
            &Layout::new(Path::new("/s"), "abc"),
            &User::root(),
            Some("/root"),
            None,
        );
        let parsed: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
        let linux = parsed.linux().as_ref().unwrap();
        assert_eq!(linux.uid_mappings().as_ref().unwrap()[0].host_id(), 100000);
        assert!(linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User));
    }

    #[test]
    fn volume_names_cannot_be_paths() {
        for bad in ["../../etc", "/tmp/x", "..", "a/b", "", ".hidden", "-x"] {
            assert!(check_volume_name(bad).is_err(), "{bad:?} must be refused");
        }
        for good in ["cache", "node_modules", "my-vol.1", "home"] {
            assert!(check_volume_name(good).is_ok(), "{good:?} is fine");
        }
    }

    #[test]
    fn volumes_and_tmpfs_mounts_map_to_workspace_directories() {
        let mut s = spec();
        s.mounts = vec![
            MountSpec {
                kind: MountKind::Volume,
                source: Some("cache".into()),
                target: "/cache".into(),
                read_only: true,
            },
            MountSpec {
                kind: MountKind::Tmpfs,
                source: None,
                target: "/scratch".into(),
                read_only: false,
            },
        ];
        let layout = Layout::new(Path::new("/state"), "abc");
        let v = config(&s, &layout, &User::root(), Some("/root"), None);
        let mounts = v["mounts"].as_array().unwrap();
        let cache = mounts
            .iter()
            .find(|m| m["destination"] == "/cache")
            .unwrap();
        assert_eq!(cache["source"], "/state/abc/volumes/named/cache");
        assert!(cache["options"].as_array().unwrap().contains(&json!("ro")));
        let scratch = mounts
            .iter()
            .find(|m| m["destination"] == "/scratch")
            .unwrap();
        assert_eq!(scratch["type"], "tmpfs");
    }

    #[test]
    fn host_network_shares_the_host_netns_and_resolv_conf_and_only_when_asked() {
        let layout = Layout::new(Path::new("/state"), "abc");
        let has_netns = |v: &Value| {
            v["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n["type"] == "network")
        };
        let dest = |v: &Value, d: &str| {
            v["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["destination"] == d)
        };
        let isolated = config(&spec(), &layout, &User::root(), None, None);
        assert!(has_netns(&isolated));
        assert!(!dest(&isolated, "/etc/resolv.conf"));
        assert!(dest(&isolated, "/tmp"));
        let mut s = spec();
        s.network = crate::Network::Host;
        s.tmp_tmpfs = false;
        let host = config(&s, &layout, &User::root(), None, None);
        assert!(!has_netns(&host));
        assert!(dest(&host, "/etc/resolv.conf"));
        assert!(!dest(&host, "/tmp"));
    }
}
