//! Attacks on a workspace's isolation, made from inside real workspaces.
//!
//! Every test starts workspaces through [`LinuxRuntime`] (with the real `warren` binary as supervisor),
//! attacks one isolation property from inside, asserts that the attack fails, and asserts that a
//! legitimate action of the same kind works, so a test fails if the isolation breaks *and* if the attack
//! is blocked only because nothing works at all. The namespace, privilege, cross-workspace and limit tests
//! run once per OCI runtime: youki's libcontainer and runc.
//!
//! Conventions: an attack's shell command exits 0 exactly when the attack *succeeded*; a control's exits
//! 0 when the legitimate action worked. Attacks that would harm the host if they succeeded are written so
//! that success changes nothing (writing a sysctl's current value back, opening a file without writing).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_runtime::spec::{cgroup_path, DEFAULT_CAPS, MASKED_PATHS};
use warren_runtime::{
    cgroup, ExecProcess, LinuxRuntime, Observed, OciRuntime, Runtime, RuntimeError, Stdio,
    WorkspaceSpec,
};

use crate::runtime::{fixture, run, sh, spec, Fixture};

// ---------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------

fn libcontainer() -> OciRuntime {
    OciRuntime::Libcontainer
}

fn runc() -> OciRuntime {
    OciRuntime::parse("runc")
}

/// The shared fixture, with the image's /tmp world-writable as in real images (runc gives the /tmp
/// tmpfs the mode of the directory it covers, whatever `mode=` says).
fn iso_fixture(oci: OciRuntime) -> Fixture {
    use std::os::unix::fs::PermissionsExt;
    let f = fixture(oci);
    std::fs::set_permissions(
        f.dir.join("layer/tmp"),
        std::fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    f
}

/// A started workspace; destroyed when dropped, so a failed assertion leaves no cgroup or mount behind.
struct Ws<'a> {
    rt: &'a LinuxRuntime,
    id: String,
    destroyed: bool,
}

impl<'a> Ws<'a> {
    /// Creates and starts workspace `iso<test pid>-<name>` (cgroup paths are host-global, so ids must not
    /// collide with other test processes), letting `edit` adjust the fixture's spec first.
    fn start(f: &'a Fixture, name: &str, edit: impl FnOnce(&mut WorkspaceSpec)) -> Ws<'a> {
        let id = format!("iso{}-{name}", std::process::id());
        let mut s = spec(f, &id);
        edit(&mut s);
        let ws = Ws {
            rt: &f.rt,
            id,
            destroyed: false,
        };
        f.rt.create(&s)
            .unwrap_or_else(|e| panic!("create {}: {e}", ws.id));
        f.rt.start(&ws.id)
            .unwrap_or_else(|e| panic!("start {} with {:?}: {e}", ws.id, f.rt.oci()));
        ws
    }

    fn sh(&self, script: &str) -> (i32, String, String) {
        sh(self.rt, &self.id, script)
    }

    /// Destroys the workspace and checks that nothing of it is left: no supervisor, no cgroup.
    fn destroy(mut self) {
        self.destroyed = true;
        self.rt
            .destroy(&self.id)
            .unwrap_or_else(|e| panic!("destroy {}: {e}", self.id));
        assert_eq!(
            self.rt.inspect(&self.id).unwrap(),
            Observed::Absent,
            "{} left traces",
            self.id
        );
        assert!(
            cgroup::dirs(&cgroup_path(&self.id)).is_empty(),
            "{} left its cgroup",
            self.id
        );
    }
}

impl Drop for Ws<'_> {
    fn drop(&mut self) {
        if !self.destroyed {
            let _ = self.rt.destroy(&self.id);
        }
    }
}

/// A host process killed when dropped.
struct HostChild(Child);

impl Drop for HostChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `run` that returns exec errors instead of panicking, and gives up after `limit`.
fn try_sh(
    rt: &LinuxRuntime,
    id: &str,
    script: &str,
    limit: Duration,
) -> Result<(i32, String), String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let (rt, id, script) = (rt.clone(), id.to_string(), script.to_string());
    std::thread::spawn(move || {
        let r = (|| -> Result<(i32, String), RuntimeError> {
            let (out_r, out_w) =
                nix::unistd::pipe().map_err(|e| RuntimeError::Exec(e.to_string()))?;
            let (err_r, err_w) =
                nix::unistd::pipe().map_err(|e| RuntimeError::Exec(e.to_string()))?;
            let stdin: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
            let p = ExecProcess {
                argv: vec!["sh".into(), "-c".into(), script],
                ..Default::default()
            };
            let s = rt.exec(
                &id,
                &p,
                Some(Stdio {
                    stdin,
                    stdout: out_w,
                    stderr: err_w,
                }),
            )?;
            let mut out = String::new();
            let _ = std::fs::File::from(out_r).read_to_string(&mut out);
            let code = s.wait()?;
            drop(err_r);
            Ok((code, out))
        })();
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| Err(format!("no answer within {limit:?}")))
}

/// What a check expects.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Want {
    /// An attack: its command must fail.
    Blocked,
    /// A control: its command must succeed.
    Works,
}

#[derive(Clone)]
struct Check {
    name: String,
    want: Want,
    cmd: String,
}

fn attack(name: &str, cmd: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        want: Want::Blocked,
        cmd: cmd.into(),
    }
}

fn control(name: &str, cmd: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        want: Want::Works,
        cmd: cmd.into(),
    }
}

/// Runs every check in one exec (as `user`) and panics with the list of every attack that succeeded and
/// every control that failed, with the command's output.
fn verify(rt: &LinuxRuntime, id: &str, user: Option<&str>, what: &str, checks: &[Check]) {
    // Each check's output goes to a file; if that file cannot be written every check would fail, and
    // attacks would look blocked, so the script refuses to start without it.
    let mut script = String::from(
        "P=$HOME/.probe.$$; : > $P || { echo '@@FATAL cannot write the probe file'; exit 99; }\n",
    );
    for c in checks {
        script.push_str(&format!(
            "( {} ) >$P 2>&1 </dev/null; rc=$?\necho \"@@ {} $rc\"\nhead -c 300 $P | tr '\\n' ' '; echo\n",
            c.cmd, c.name
        ));
    }
    script.push_str("rm -f $P\n");
    let p = ExecProcess {
        argv: vec!["sh".into(), "-c".into(), script],
        user: user.map(str::to_string),
        ..Default::default()
    };
    let (code, out, err) = run(rt, id, &p);
    assert!(
        code != 99 && !out.contains("@@FATAL"),
        "{what}: the probe script could not run: {out} {err}"
    );
    let mut results: BTreeMap<String, (i32, String)> = BTreeMap::new();
    let mut lines = out.lines();
    while let Some(l) = lines.next() {
        if let Some(rest) = l.strip_prefix("@@ ") {
            let (name, rc) = rest.rsplit_once(' ').expect("@@ name rc");
            let output = lines.next().unwrap_or_default().trim().to_string();
            results.insert(name.to_string(), (rc.parse().expect("exit code"), output));
        }
    }
    let mut bad = Vec::new();
    for c in checks {
        match results.get(&c.name) {
            None => bad.push(format!("{}: never ran (stderr: {err})", c.name)),
            Some((rc, output)) => {
                let ok = match c.want {
                    Want::Blocked => *rc != 0,
                    Want::Works => *rc == 0,
                };
                if !ok {
                    let verdict = match c.want {
                        Want::Blocked => "ATTACK SUCCEEDED",
                        Want::Works => "control failed",
                    };
                    bad.push(format!(
                        "{}: {verdict} (exit {rc}) `{}` -> {output}",
                        c.name, c.cmd
                    ));
                }
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{what} as {}:\n  {}",
        user.unwrap_or("root"),
        bad.join("\n  ")
    );
}

/// Capability numbers (linux/capability.h) of the names `spec::DEFAULT_CAPS` uses.
const CAP_BITS: &[(&str, u32)] = &[
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_LINUX_IMMUTABLE", 9),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_BROADCAST", 11),
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
    ("CAP_IPC_LOCK", 14),
    ("CAP_IPC_OWNER", 15),
    ("CAP_SYS_MODULE", 16),
    ("CAP_SYS_RAWIO", 17),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SYS_PACCT", 20),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_BOOT", 22),
    ("CAP_SYS_NICE", 23),
    ("CAP_SYS_RESOURCE", 24),
    ("CAP_SYS_TIME", 25),
    ("CAP_SYS_TTY_CONFIG", 26),
    ("CAP_MKNOD", 27),
    ("CAP_LEASE", 28),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_AUDIT_CONTROL", 30),
    ("CAP_SETFCAP", 31),
];

fn cap_bit(name: &str) -> u32 {
    CAP_BITS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("unknown capability {name}"))
        .1
}

fn default_caps_mask() -> u64 {
    DEFAULT_CAPS
        .iter()
        .fold(0u64, |m, c| m | (1u64 << cap_bit(c)))
}

/// The value of `key:` in a /proc/<pid>/status text.
fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in status:\n{status}"))
        .trim()
        .to_string()
}

fn hex_field(status: &str, key: &str) -> u64 {
    u64::from_str_radix(&status_field(status, key), 16).unwrap()
}

/// The content of `file` in the workspace's cgroup directories (whichever hierarchy has it).
fn cgroup_file(id: &str, file: &str) -> Option<String> {
    cgroup::dirs(&cgroup_path(id))
        .into_iter()
        .find_map(|d| std::fs::read_to_string(d.join(file)).ok())
}

/// `key N` from a flat-keyed cgroup file.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        l.strip_prefix(&format!("{key} "))
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Host processes in the workspace's cgroup whose command line is exactly `argv`.
fn host_pids_in_workspace(id: &str, argv: &[&str]) -> Vec<i32> {
    let want: String = argv.iter().map(|a| format!("{a}\0")).collect();
    let mut pids = Vec::new();
    for d in cgroup::dirs(&cgroup_path(id)) {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        for p in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            if std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .ok()
                .as_deref()
                == Some(want.as_str())
                && !pids.contains(&p)
            {
                pids.push(p);
            }
        }
    }
    pids
}

fn unique_token(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-{}-{nanos}", std::process::id())
}

/// Non-loopback IPv4 addresses of the host (from the kernel's local routing table).
fn host_ipv4_addresses() -> Vec<String> {
    let trie = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
    let lines: Vec<&str> = trie.lines().collect();
    let mut out = Vec::new();
    for w in lines.windows(2) {
        if let Some(ip) = w[0].trim().strip_prefix("|-- ") {
            if w[1].contains("/32 host LOCAL")
                && !ip.starts_with("127.")
                && !out.contains(&ip.to_string())
            {
                out.push(ip.to_string());
            }
        }
    }
    out
}

/// A TCP listener on every host address that answers each connection with a token and counts them.
struct HostListener {
    port: u16,
    token: String,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl HostListener {
    fn open() -> HostListener {
        let l = TcpListener::bind("0.0.0.0:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let token = unique_token("host-listener");
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, h, s) = (token.clone(), hits.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        h.fetch_add(1, Ordering::SeqCst);
                        let _ = c.write_all(format!("{t}\n").as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        HostListener {
            port,
            token,
            hits,
            stop,
        }
    }
}

impl Drop for HostListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A System V shared memory segment on the host, removed when dropped.
struct HostShm(i32);

impl HostShm {
    #[allow(unsafe_code)]
    fn create() -> HostShm {
        // SAFETY: shmget takes plain integers and only creates a kernel object; no memory is touched.
        let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
        HostShm(id)
    }
}

impl Drop for HostShm {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: IPC_RMID takes no buffer (null is allowed) and only removes the segment we created.
        unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

fn ns_links(pid: &str) -> BTreeMap<String, String> {
    ["pid", "net", "ipc", "uts", "mnt", "cgroup"]
        .iter()
        .map(|n| {
            let link = std::fs::read_link(format!("/proc/{pid}/ns/{n}")).unwrap();
            (n.to_string(), link.display().to_string())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// 1. Namespaces
// ---------------------------------------------------------------------------------------------------

/// Attacks every namespace of one workspace from inside: PID (see and kill host processes), mount (read a
/// host file through its path, /proc/*/root and `..` out of a bind mount), UTS (change the hostname), IPC
/// (see the host's SysV objects), network (reach a host TCP listener, see host interfaces) and cgroup (see
/// the host's cgroup paths). Fails if any namespace is shared with the host.
fn namespaces_hide_the_host(oci: OciRuntime, tag: &str) {
    let f = iso_fixture(oci);
    // Host-side bait, created before the workspace starts.
    let secret = unique_token("host-secret");
    let secret_path = f.dir.join("secret.txt");
    std::fs::write(&secret_path, &secret).unwrap();
    let mut host_sleep = HostChild(Command::new("sleep").arg("120").spawn().unwrap());
    let host_sleep_pid = host_sleep.0.id();
    let my_pid = std::process::id();
    let listener = HostListener::open();
    let shm = HostShm::create();
    let host_hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();

    let ws = Ws::start(&f, &format!("ns-{tag}"), |_| {});
    let id = ws.id.clone();
    let hostname = format!("host-{id}");

    // Controls on the host side: the bait is real.
    let mut c = TcpStream::connect(("127.0.0.1", listener.port)).unwrap();
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    assert_eq!(
        got.trim(),
        listener.token,
        "the host listener answers the host"
    );
    assert_eq!(listener.hits.load(Ordering::SeqCst), 1);
    let host_shm = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    assert!(
        host_shm
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some(&shm.0.to_string())),
        "the host sees its own shm segment {}:\n{host_shm}",
        shm.0
    );

    // PID namespace: the workspace's init is pid 1 and only workspace processes are visible.
    let (code, out, _) = ws.sh(
        "for p in /proc/[0-9]*; do printf '%s %s\\n' \"${p#/proc/}\" \"$(cat $p/comm 2>/dev/null)\"; done; \
         echo; tr '\\0' ' ' </proc/1/cmdline",
    );
    assert_eq!(code, 0);
    let (procs, init_cmdline) = out.split_once("\n\n").unwrap();
    assert!(
        init_cmdline.contains("trap 'exit 0' TERM INT"),
        "pid 1 is not the workspace init: {init_cmdline}"
    );
    let procs: Vec<(u32, String)> = procs
        .lines()
        .filter_map(|l| {
            l.split_once(' ')
                .map(|(p, c)| (p.parse().unwrap(), c.to_string()))
        })
        .collect();
    assert!(
        procs.len() <= 8,
        "too many processes visible in the workspace: {procs:?}"
    );
    for (pid, comm) in &procs {
        assert!(
            ["sh", "sleep", "cat", ""].contains(&comm.as_str()),
            "a process that is not the workspace's is visible: {pid} {comm} (all: {procs:?})"
        );
    }

    let mut checks = vec![
        // PID
        control("kill_own_init_probe", "kill -0 1"),
        control("kill_own_process", "sleep 30 & p=$!; kill -9 $p && wait $p; [ $? -eq 137 ]"),
        attack("kill_host_process", format!("kill -9 {host_sleep_pid}")),
        attack("signal_host_process", format!("kill -0 {host_sleep_pid}")),
        // mount
        control("read_mounted_project", "grep -q 'project file' /workspaces/project/README"),
        control("read_own_root_via_proc", "[ -x /proc/1/root/bin/busybox ]"),
        attack("read_host_file", format!("grep -q {secret} {}", secret_path.display())),
        attack("read_host_file_via_proc_root", format!("grep -qs {secret} /proc/*/root{}", secret_path.display())),
        attack("read_host_file_via_bind_parent", format!("grep -qs {secret} /workspaces/project/../secret.txt")),
        attack("search_workspaces_dir", format!("grep -rqs {secret} /workspaces")),
        attack("see_supervisor_state", format!("ls {}", f.dir.join("ws").display())),
        // UTS
        control("hostname_is_the_workspaces", format!("[ \"$(hostname)\" = {hostname} ]")),
        control("proc_hostname_is_the_workspaces", format!("grep -qx {hostname} /proc/sys/kernel/hostname")),
        attack("set_hostname", "hostname evil"),
        attack("set_hostname_via_proc", "echo evil > /proc/sys/kernel/hostname"),
        control("hostname_unchanged", format!("[ \"$(hostname)\" = {hostname} ]")),
        // IPC
        control("read_sysvipc", "head -1 /proc/sysvipc/shm | grep -q shmid"),
        attack("see_host_shm", "tail -n +2 /proc/sysvipc/shm | grep -q ."),
        // network
        control("loopback_works", "nc -l -p 7070 -e echo inside & sleep 0.3; timeout 5 nc 127.0.0.1 7070 </dev/null | grep -q inside"),
        attack("see_host_interfaces", "tail -n +3 /proc/net/dev | grep -vq '^ *lo:'"),
        attack("see_host_interfaces_sysfs", "ls /sys/class/net | grep -vqx lo"),
        attack(
            "reach_host_loopback_listener",
            format!("timeout 5 nc -w 2 127.0.0.1 {} </dev/null | grep -q {}", listener.port, listener.token),
        ),
        // cgroup
        attack("see_host_cgroup_paths", "grep -v ':/$' /proc/self/cgroup"),
        attack("see_host_cgroup_paths_of_init", "grep -v ':/$' /proc/1/cgroup"),
    ];
    for ip in host_ipv4_addresses() {
        checks.push(attack(
            &format!("reach_host_listener_on_{ip}"),
            format!(
                "timeout 5 nc -w 2 {ip} {} </dev/null | grep -q {}",
                listener.port, listener.token
            ),
        ));
    }
    if my_pid > 1000 && host_sleep_pid > 1000 {
        checks.push(attack(
            "see_host_sleep_in_proc",
            format!("[ -e /proc/{host_sleep_pid} ]"),
        ));
        checks.push(attack(
            "see_test_process_in_proc",
            format!("[ -e /proc/{my_pid} ]"),
        ));
    }
    verify(&f.rt, &id, None, "namespaces", &checks);

    // The host is untouched: its sleep lives, nobody connected, its hostname is the same.
    assert!(
        host_sleep.0.try_wait().unwrap().is_none(),
        "the workspace killed a host process"
    );
    assert_eq!(
        listener.hits.load(Ordering::SeqCst),
        1,
        "the workspace reached a host TCP listener"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_hostname
    );

    // Every namespace of the init and of exec'd processes differs from the host's, and exec'd processes
    // share the init's.
    let (code, out, _) = ws.sh(
        "for n in pid net ipc uts mnt cgroup; do echo \"$n $(readlink /proc/1/ns/$n) $(readlink /proc/self/ns/$n)\"; done",
    );
    assert_eq!(code, 0);
    let host = ns_links("self");
    for l in out.lines() {
        let v: Vec<&str> = l.split_whitespace().collect();
        let (ns, init, exec) = (v[0], v[1], v[2]);
        assert_ne!(
            init, host[ns],
            "the workspace init shares the host's {ns} namespace"
        );
        assert_eq!(
            init, exec,
            "an exec'd process is not in the init's {ns} namespace"
        );
    }
    assert_eq!(out.lines().count(), 6);

    // cgroup namespace: every hierarchy shows `/` for the init and exec'd processes.
    let (_, out, _) = ws.sh("cat /proc/self/cgroup; echo; cat /proc/1/cgroup");
    for l in out.lines().filter(|l| !l.is_empty()) {
        assert!(
            l.ends_with(":/"),
            "cgroup path outside the namespace root is visible: {l}\n{out}"
        );
    }

    // The overlay root filesystem is not mounted in the host's mount namespace.
    let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !host_mounts.contains(&f.dir.join("ws").join(&id).display().to_string()),
        "the workspace's mounts leaked into the host's mount namespace"
    );
    drop(shm);
    ws.destroy();
}

#[test]
fn namespaces_hide_the_host_libcontainer() {
    namespaces_hide_the_host(libcontainer(), "lc");
}

#[test]
fn namespaces_hide_the_host_runc() {
    namespaces_hide_the_host(runc(), "runc");
}

// ---------------------------------------------------------------------------------------------------
// 2. Two workspaces
// ---------------------------------------------------------------------------------------------------

/// Workspace A attacks workspace B (same runtime, same image layer): B's files (in its overlay upper
/// directory, its /tmp and its home volume, by in-workspace paths, /proc/*/root and the host paths of B's
/// directories), B's processes (see them, kill B's process by its host pid) and B's network (a listener on
/// B's loopback). Fails if A reaches any of them; the same probes run in B must find them.
fn workspaces_cannot_see_each_other(oci: OciRuntime, tag: &str, sleep_secs: u32) {
    let f = iso_fixture(oci);
    let a = Ws::start(&f, &format!("a-{tag}"), |_| {});
    let b = Ws::start(&f, &format!("b-{tag}"), |_| {});
    let secret = unique_token("b-secret");
    let (code, _, err) = b.sh(&format!(
        "echo {secret} > /etc/b-secret && echo {secret} > /tmp/b-secret && echo {secret} > /root/b-secret && \
         (sleep {sleep_secs} </dev/null >/dev/null 2>&1 &) && \
         (nc -l -p 7171 -e echo {secret} </dev/null >/dev/null 2>&1 &) && sleep 0.3"
    ));
    assert_eq!(code, 0, "{err}");
    // B's writes are where the host keeps them, and B's sleep has a host pid.
    let b_dir = f.dir.join("ws").join(&b.id);
    let b_upper = b_dir.join("upper/etc/b-secret");
    let b_home = b_dir.join("volumes/home/b-secret");
    assert!(
        b_upper.exists() && b_home.exists(),
        "B's files are not where the test looks for them"
    );
    let sleep_arg = sleep_secs.to_string();
    let b_sleep = host_pids_in_workspace(&b.id, &["sleep", &sleep_arg]);
    assert_eq!(b_sleep.len(), 1, "B's sleep on the host: {b_sleep:?}");
    let b_sleep = b_sleep[0];

    let files = "/etc/b-secret /tmp/b-secret /root/b-secret";
    let see_sleep =
        format!("for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline; echo; done 2>/dev/null | grep -qx 'sleep {sleep_secs} '");
    let reach_b = format!("timeout 5 nc -w 2 127.0.0.1 7171 </dev/null | grep -q {secret}");
    verify(
        &f.rt,
        &a.id,
        None,
        "workspace A against B",
        &[
            control("a_reads_its_root", "[ -f /etc/passwd ]"),
            attack(
                "read_b_files_same_paths",
                format!("grep -qs {secret} {files}"),
            ),
            attack(
                "read_b_files_via_proc_root",
                format!(
                    "for f in {files}; do grep -qs {secret} /proc/*/root$f && exit 0; done; exit 1"
                ),
            ),
            attack(
                "read_b_upper_dir_host_path",
                format!("grep -qs {secret} {}", b_upper.display()),
            ),
            attack(
                "read_b_home_volume_host_path",
                format!("grep -qs {secret} {}", b_home.display()),
            ),
            attack(
                "list_b_workspace_dir_host_path",
                format!("ls {}", b_dir.display()),
            ),
            attack("see_b_process", see_sleep.clone()),
            attack("signal_b_process_by_host_pid", format!("kill -0 {b_sleep}")),
            attack("kill_b_process_by_host_pid", format!("kill -9 {b_sleep}")),
            attack("reach_b_listener", reach_b.clone()),
        ],
    );
    // The same probes from B itself succeed: they are able to find what A must not.
    verify(
        &f.rt,
        &b.id,
        None,
        "workspace B (controls)",
        &[
            control("b_reads_its_files", format!("grep -qs {secret} {files}")),
            control("b_sees_its_process", see_sleep),
            control("b_reaches_its_listener", reach_b),
        ],
    );
    assert!(
        Path::new(&format!("/proc/{b_sleep}")).exists(),
        "A killed B's process"
    );
    a.destroy();
    b.destroy();
}

#[test]
fn workspaces_cannot_see_each_other_libcontainer() {
    workspaces_cannot_see_each_other(libcontainer(), "lc", 4321);
}

#[test]
fn workspaces_cannot_see_each_other_runc() {
    workspaces_cannot_see_each_other(runc(), "runc", 4322);
}

// ---------------------------------------------------------------------------------------------------
// 3. cgroup limits
// ---------------------------------------------------------------------------------------------------

/// A process allocating 256 MiB in a workspace limited to 64 MiB: the OOM killer must kill it inside the
/// workspace (exit 137), while the init survives and later execs work. Fails if the exec'd process is not
/// charged to the workspace's memory cgroup (dd would finish) or if the OOM kill takes the workspace down.
fn memory_hog_is_oom_killed_inside_the_workspace(oci: OciRuntime, tag: &str) {
    let f = iso_fixture(oci);
    let ws = Ws::start(&f, &format!("mem-{tag}"), |s| {
        s.limits.memory_bytes = Some(64 << 20)
    });
    assert_eq!(
        f.rt.stats(&ws.id).unwrap().memory_limit_bytes,
        Some(64 << 20)
    );
    let init_start = ws.sh("cut -d' ' -f22 /proc/1/stat").1;

    // Control: a small allocation works.
    let (code, _, err) = ws.sh("dd if=/dev/zero of=/dev/null bs=8M count=1");
    assert_eq!(code, 0, "an 8 MiB allocation must work: {err}");
    // Attack: 256 MiB in one buffer.
    let (_, out, err) = ws.sh("dd if=/dev/zero of=/dev/null bs=256M count=1; echo dd=$?");
    assert_eq!(
        out.trim(),
        "dd=137",
        "the memory hog was not OOM-killed (stderr: {err})"
    );
    let events =
        cgroup_file(&ws.id, "memory.oom_control").or_else(|| cgroup_file(&ws.id, "memory.events"));
    if let Some(oom_kills) = events.as_deref().and_then(|e| keyed(e, "oom_kill")) {
        assert!(
            oom_kills >= 1,
            "the kill was not the workspace cgroup's OOM killer: {events:?}"
        );
    }

    // The workspace and its init survive; execs work.
    assert!(matches!(
        f.rt.inspect(&ws.id).unwrap(),
        Observed::Running { .. }
    ));
    let (code, out, _) = ws.sh("echo alive; cut -d' ' -f22 /proc/1/stat");
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!("alive\n{init_start}"),
        "the workspace init did not survive the OOM kill"
    );
    ws.destroy();
}

#[test]
fn memory_hog_is_oom_killed_inside_the_workspace_libcontainer() {
    memory_hog_is_oom_killed_inside_the_workspace(libcontainer(), "lc");
}

#[test]
fn memory_hog_is_oom_killed_inside_the_workspace_runc() {
    memory_hog_is_oom_killed_inside_the_workspace(runc(), "runc");
}

/// A fork flood (200 background processes) in a workspace limited to 64 tasks: forks must fail at the
/// limit, the task count must stay within it, the host must stay able to spawn processes, another
/// workspace must keep working, and the flooded workspace must recover once the flood ends. Fails if the
/// exec'd processes are not in the workspace's pids cgroup (all 200 forks would succeed).
fn fork_flood_hits_the_pids_limit(oci: OciRuntime, tag: &str) {
    let f = iso_fixture(oci);
    let ws = Ws::start(&f, &format!("pids-{tag}"), |s| s.limits.pids = Some(64));
    let other = Ws::start(&f, &format!("pids2-{tag}"), |_| {});

    let started = Instant::now();
    let (code, out, err) = ws.sh(
        "i=0; while [ $i -lt 200 ]; do sleep 4 </dev/null >/dev/null 2>&1 & i=$((i+1)); done; echo spawned=$i",
    );
    assert_ne!(code, 0, "the fork flood was not stopped (stdout {out:?})");
    assert!(
        !out.contains("spawned=200"),
        "all 200 forks succeeded under a limit of 64"
    );
    assert!(
        err.contains("can't fork"),
        "the flood did not fail on fork: {err}"
    );

    // While the flood's processes live: the limit holds, and the host and other workspaces are fine.
    let pids = f.rt.stats(&ws.id).unwrap().pids.expect("pids.current");
    assert!(
        (32..=64).contains(&pids),
        "tasks in the flooded workspace: {pids}"
    );
    if let Some(max) = cgroup_file(&ws.id, "pids.events")
        .as_deref()
        .and_then(|e| keyed(e, "max"))
    {
        assert!(max >= 1, "pids.events records no refused fork");
    }
    let t = Instant::now();
    assert!(
        Command::new("true").status().unwrap().success(),
        "the host cannot spawn a process"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "the host is slow to spawn a process"
    );
    let (code, out, _) = other.sh("echo fine");
    assert_eq!(
        (code, out.as_str()),
        (0, "fine\n"),
        "another workspace broke during the flood"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the checks ran after the flood ended"
    );

    // Once the flood's processes exit, the workspace runs commands again.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = Err(String::new());
    while Instant::now() < deadline {
        last = try_sh(&f.rt, &ws.id, "echo recovered", Duration::from_secs(10));
        if matches!(&last, Ok((0, o)) if o == "recovered\n") {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        matches!(&last, Ok((0, _))),
        "the workspace did not recover after the flood: {last:?}"
    );
    ws.destroy();
    other.destroy();
}

#[test]
fn fork_flood_hits_the_pids_limit_libcontainer() {
    fork_flood_hits_the_pids_limit(libcontainer(), "lc");
}

#[test]
fn fork_flood_hits_the_pids_limit_runc() {
    fork_flood_hits_the_pids_limit(runc(), "runc");
}

// ---------------------------------------------------------------------------------------------------
// 4. Privileges
// ---------------------------------------------------------------------------------------------------

/// Checks the capability sets, no_new_privs and seccomp mode of a /proc/<pid>/status text.
fn assert_confined(status: &str, who: &str, root: bool) {
    let mask = default_caps_mask();
    let sys_admin = 1u64 << cap_bit("CAP_SYS_ADMIN");
    assert_eq!(
        hex_field(status, "CapBnd"),
        mask,
        "{who}: bounding set is not DEFAULT_CAPS"
    );
    let want = if root { mask } else { 0 };
    assert_eq!(
        hex_field(status, "CapEff"),
        want,
        "{who}: effective capabilities"
    );
    assert_eq!(
        hex_field(status, "CapPrm"),
        want,
        "{who}: permitted capabilities"
    );
    assert_eq!(
        hex_field(status, "CapInh"),
        0,
        "{who}: inheritable capabilities"
    );
    assert_eq!(
        hex_field(status, "CapAmb"),
        0,
        "{who}: ambient capabilities"
    );
    assert_eq!(
        hex_field(status, "CapEff") & sys_admin,
        0,
        "{who}: has CAP_SYS_ADMIN"
    );
    assert_eq!(
        status_field(status, "NoNewPrivs"),
        "1",
        "{who}: no_new_privs is not set"
    );
    assert_eq!(
        status_field(status, "Seccomp"),
        "2",
        "{who}: not under a seccomp filter"
    );
    let uid = if root { "0" } else { "1000" };
    let uids: Vec<String> = status_field(status, "Uid")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(uids, vec![uid; 4], "{who}: uids");
}

/// Root and non-root processes in a workspace try to get out of their confinement: mount, create
/// namespaces, enter namespaces, write sysctls and sysrq-trigger, read masked /proc and /sys paths, write
/// /sys, open block and memory devices, read the kernel log, change the hostname and network devices.
/// Every attack must fail, while the matching ordinary actions work. Also checks the capability sets,
/// no_new_privs and seccomp mode of the init and of exec'd processes.
fn privileges_are_dropped(oci: OciRuntime, tag: &str) {
    let f = iso_fixture(oci);
    let ws = Ws::start(&f, &format!("priv-{tag}"), |_| {});
    let id = ws.id.clone();

    // Status of the init (read from inside), of an exec'd root process and of an exec'd `dev` process.
    let cat_status = |pid: &str, user: Option<&str>| {
        let p = ExecProcess {
            argv: vec!["cat".into(), format!("/proc/{pid}/status")],
            user: user.map(str::to_string),
            ..Default::default()
        };
        let (code, out, err) = run(&f.rt, &id, &p);
        assert_eq!(code, 0, "{err}");
        out
    };
    assert_confined(&cat_status("1", None), "init", true);
    assert_confined(&cat_status("self", None), "exec as root", true);
    assert_confined(&cat_status("self", Some("dev")), "exec as dev", false);

    let host_masked: Vec<&str> = MASKED_PATHS
        .iter()
        .copied()
        .filter(|p| {
            let p = Path::new(p);
            if p.is_dir() {
                std::fs::read_dir(p)
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false)
            } else {
                let mut buf = [0u8; 16];
                std::fs::File::open(p)
                    .and_then(|mut f| f.read(&mut buf))
                    .map(|n| n > 0)
                    .unwrap_or(false)
            }
        })
        .collect();
    assert!(
        !host_masked.is_empty(),
        "no masked path has content on this host; nothing to attack"
    );
    let (blk_major, blk_minor) = std::fs::read_to_string("/proc/partitions")
        .unwrap()
        .lines()
        .skip(2)
        .find_map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            Some((v.first()?.to_string(), v.get(1)?.to_string()))
        })
        .unwrap_or(("8".into(), "0".into()));

    let mut common = vec![
        // Ordinary work still works.
        control("fork_exec", "sh -c true"),
        control("write_tmp", "echo x > /tmp/ok.$$"),
        control("write_home", "echo x > $HOME/ok.$$"),
        control("read_proc_sys", "grep -q Linux /proc/sys/kernel/ostype"),
        control("read_sys", "[ -n \"$(ls /sys/kernel)\" ]"),
        control("read_proc", "[ -n \"$(cat /proc/uptime)\" ]"),
        control("ip_link_show", "ip link show lo"),
        control(
            "sys_mounted_ro",
            "grep -q '^sysfs /sys sysfs ro' /proc/mounts",
        ),
        control(
            "proc_sys_mounted_ro",
            "grep -q ' /proc/sys proc ro' /proc/mounts",
        ),
        // mount(2)
        attack(
            "mount_tmpfs",
            "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m",
        ),
        attack("mount_proc", "mkdir -p /tmp/p && mount -t proc proc /tmp/p"),
        attack("remount_sys_rw", "mount -o remount,rw /sys"),
        attack("remount_proc_sys_rw", "mount -o remount,rw /proc/sys"),
        attack("unmask_proc_keys", "umount /proc/keys"),
        attack(
            "bind_mount",
            "mkdir -p /tmp/b && mount --bind /tmp/b /tmp/b",
        ),
        // new and existing namespaces
        attack("unshare_user", "unshare -U true"),
        attack("unshare_user_map_root", "unshare -r id -u"),
        attack("unshare_net", "unshare -n true"),
        attack("unshare_mount", "unshare -m true"),
        attack("unshare_pid", "unshare -p -f true"),
        attack("unshare_uts", "unshare -u true"),
        attack("unshare_ipc", "unshare -i true"),
        attack("nsenter_net", "nsenter -t 1 -n true"),
        attack("nsenter_mount", "nsenter -t 1 -m true"),
        // kernel tunables: write back the current value, so success would change nothing
        attack(
            "write_sysctl",
            "v=$(cat /proc/sys/kernel/sysrq) && echo \"$v\" > /proc/sys/kernel/sysrq",
        ),
        attack(
            "write_sysctl_net",
            "v=$(cat /proc/sys/net/ipv4/ip_forward) && echo \"$v\" > /proc/sys/net/ipv4/ip_forward",
        ),
        attack("sysctl_tool", "sysctl -w kernel.domainname=evil"),
        // opening without writing: success would trigger nothing
        attack("open_sysrq_trigger", ": > /proc/sysrq-trigger"),
        attack(
            "write_sys",
            ": > /sys/kernel/mm/transparent_hugepage/enabled",
        ),
        attack("create_in_sys", "touch /sys/kernel/evil"),
        // devices
        attack("see_host_disk", "ls /dev | grep -q '^vd\\|^sd\\|^nvme'"),
        // kernel log, hostname, network devices
        attack("read_kernel_log", "dmesg >/dev/null"),
        attack("set_hostname", "hostname evil"),
        attack("add_net_device", "ip link add evil0 type dummy"),
        // Sets the MTU lo already has: needs CAP_NET_ADMIN, changes nothing if it is wrongly granted.
        attack(
            "set_lo_mtu",
            "ip link set lo mtu $(cat /sys/class/net/lo/mtu)",
        ),
    ];
    for p in &host_masked {
        common.push(attack(
            &format!("read_masked_{}", p.trim_start_matches('/').replace('/', "_")),
            format!("if [ -d {p} ]; then [ -n \"$(ls -A {p})\" ]; else [ \"$(head -c 16 {p} | wc -c)\" -gt 0 ]; fi"),
        ));
    }

    let mut root_only = vec![
        // CAP_MKNOD is granted, so nodes can be created on the root filesystem; the device cgroup must
        // refuse to open anything but the allowed character devices.
        control("mknod_and_use_null", "rm -f /null2 && mknod /null2 c 1 3 && echo x > /null2"),
        attack(
            "open_host_disk",
            format!("rm -f /disk && mknod /disk b {blk_major} {blk_minor}; head -c 512 /disk >/dev/null"),
        ),
        attack("open_dev_mem", "rm -f /mem && mknod /mem c 1 1; head -c 1 /mem >/dev/null"),
        attack("open_dev_kmsg", "rm -f /kmsg && mknod /kmsg c 1 11; head -c 1 /kmsg >/dev/null"),
        attack("open_dev_port", "rm -f /port && mknod /port c 1 4; head -c 1 /port >/dev/null"),
    ];
    root_only.extend(common.iter().cloned());
    verify(&f.rt, &id, None, "privileges", &root_only);

    let mut dev_checks = common;
    dev_checks.extend([
        control("is_dev", "[ \"$(id -u)\" = 1000 ]"),
        attack(
            "mknod_block",
            format!("mknod $HOME/disk b {blk_major} {blk_minor}"),
        ),
        attack("signal_init", "kill -0 1"),
        attack("write_etc_passwd", "echo x >> /etc/passwd"),
    ]);
    verify(&f.rt, &id, Some("dev"), "privileges", &dev_checks);

    // The init shrugged all of this off.
    assert!(matches!(
        f.rt.inspect(&id).unwrap(),
        Observed::Running { .. }
    ));
    assert_eq!(ws.sh("hostname").1, format!("host-{id}\n"));
    ws.destroy();
}

#[test]
fn privileges_are_dropped_libcontainer() {
    privileges_are_dropped(libcontainer(), "lc");
}

#[test]
fn privileges_are_dropped_runc() {
    privileges_are_dropped(runc(), "runc");
}

// ---------------------------------------------------------------------------------------------------
// The tools mount (/.warren): Warren's helpers, read-only, on an image with no C library
// ---------------------------------------------------------------------------------------------------

fn the_tools_mount_is_read_only_and_runs_on_a_bare_image(oci: OciRuntime, tag: &str) {
    let f = iso_fixture(oci);
    let ws = Ws::start(&f, &format!("tools-{tag}"), |_| {});
    let argv = warren_runtime::tools::command(&crate::util::warren_exe(), &["__sftp-server"]);
    // An SFTP INIT; the answer is VERSION 3 with the extensions.
    let sftp = format!(
        "printf '\\000\\000\\000\\005\\001\\000\\000\\000\\003' | {} | grep -q posix-rename@openssh.com",
        argv.join(" ")
    );
    let checks = vec![
        control("the image has no C library", "! ls /lib /usr/lib /lib64"),
        control("the helper runs", sftp.clone()),
        control(
            "mounted ro, nosuid, nodev",
            "grep ' /.warren ' /proc/mounts | grep -E ' ro,.*nosuid.*nodev'",
        ),
        attack("write into it", "touch /.warren/x"),
        attack("replace the binary", "echo x > /.warren/bin/warren"),
        attack(
            "remove the binary",
            "rm -f /.warren/bin/warren && ! test -e /.warren/bin/warren",
        ),
        attack("setuid the binary", "chmod u+s /.warren/bin/warren"),
        attack("remount it writable", "mount -o remount,rw /.warren"),
        attack("unmount it", "umount /.warren"),
    ];
    verify(ws.rt, &ws.id, None, "tools mount", &checks);
    verify(
        ws.rt,
        &ws.id,
        Some("dev"),
        "tools mount",
        &[
            control("the helper runs as a user", sftp),
            attack("write into it", "touch /.warren/x"),
        ],
    );
    // A workspace made before the mount existed gets it when it starts again.
    ws.rt.stop(&ws.id, Duration::from_secs(5)).unwrap();
    let config = f.dir.join("ws").join(&ws.id).join("bundle/config.json");
    let mut c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert!(warren_runtime::tools::set_mount(&mut c, None));
    std::fs::write(&config, c.to_string()).unwrap();
    ws.rt.start(&ws.id).unwrap();
    verify(
        ws.rt,
        &ws.id,
        None,
        "tools mount after a restart",
        &[control("the mount is back", "test -x /.warren/bin/warren")],
    );
    ws.destroy();
}

#[test]
fn the_tools_mount_is_read_only_and_runs_on_a_bare_image_libcontainer() {
    the_tools_mount_is_read_only_and_runs_on_a_bare_image(libcontainer(), "lc");
}

#[test]
fn the_tools_mount_is_read_only_and_runs_on_a_bare_image_runc() {
    the_tools_mount_is_read_only_and_runs_on_a_bare_image(runc(), "runc");
}
