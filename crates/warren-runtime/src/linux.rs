//! The native Linux runtime: one directory, one OCI bundle and one supervisor process per workspace.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as PStdio};
use std::time::Duration;

use nix::fcntl::{fcntl, FcntlArg, FdFlag, Flock, FlockArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::backend::{Backend, OciRuntime};
use crate::network::{self, Attachment, EgressPlan, NetConfig};
use crate::proto::{self, ExecProcess, Request, Response};
use crate::spec::{self, Layout};
use crate::supervisor::{ExitRecord, SupervisorConfig, READY_FD_ENV};
use crate::{cgroup, users, Observed, Runtime, RuntimeError, Stats, Stdio, WorkspaceSpec};

/// Runs workspaces on this host. Workspace directories live under `root`.
#[derive(Debug, Clone)]
pub struct LinuxRuntime {
    root: PathBuf,
    oci: OciRuntime,
    exe: PathBuf,
    /// Whether workspaces get the `/.warren` tools mount (build sandboxes do not need it).
    tools: bool,
    /// Warren's network, for workspaces with `Network::Egress`.
    net: Option<NetConfig>,
}

impl LinuxRuntime {
    /// A runtime keeping workspaces under `root`, running them with `oci`, and re-executing `exe`
    /// (the `warren` binary) as each workspace's supervisor.
    pub fn new(root: &Path, oci: OciRuntime, exe: &Path) -> LinuxRuntime {
        LinuxRuntime {
            root: root.to_path_buf(),
            oci,
            exe: exe.to_path_buf(),
            tools: true,
            net: None,
        }
    }

    /// The same runtime with Warren's network for `Network::Egress` workspaces, configured by `cfg`
    /// (written to `ROOT/.net/config.json`, where the supervisors and `warren __netd` read it).
    /// Nothing on the host changes until a workspace with a network starts.
    pub fn with_network(mut self, cfg: NetConfig) -> Result<LinuxRuntime, RuntimeError> {
        network::check_config(&cfg).map_err(RuntimeError::Start)?;
        let dir = network::net_dir(&self.root);
        fs::create_dir_all(&dir).map_err(RuntimeError::io(format!("create {}", dir.display())))?;
        network::write_json(&network::config_path(&self.root), &cfg)
            .map_err(RuntimeError::Start)?;
        self.net = Some(cfg);
        Ok(self)
    }

    /// The network configuration in use, if any.
    pub fn network(&self) -> Option<&NetConfig> {
        self.net.as_ref()
    }

    fn net_cfg(&self) -> Result<&NetConfig, RuntimeError> {
        self.net.as_ref().ok_or_else(|| {
            RuntimeError::Start(
                "this runtime has no network configured for workspaces with network access".into(),
            )
        })
    }

    /// The workspace's attachment (`<id>/net.json`), if it has one.
    fn read_attachment(&self, id: &str) -> Option<Attachment> {
        fs::read(self.layout(id).dir.join("net.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
    }

    /// Makes sure `warren __netd ROOT` (Warren's resolver and egress proxy) runs: spawns it,
    /// detached, unless a process holds `ROOT/.net/netd.lock`. netd takes the lock itself, so of two
    /// racing spawns one stays.
    fn ensure_netd(&self) -> Result<(), RuntimeError> {
        let dir = network::net_dir(&self.root);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("netd.lock"))
            .map_err(RuntimeError::io("open netd.lock"))?;
        match Flock::lock(lock, FlockArg::LockExclusiveNonblock) {
            Err(_) => return Ok(()),
            Ok(held) => drop(held),
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("netd.log"))
            .map_err(RuntimeError::io("open netd.log"))?;
        let log2 = log.try_clone().map_err(RuntimeError::io("open netd.log"))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("__netd")
            .arg(&self.root)
            .stdin(PStdio::null())
            .stdout(PStdio::from(log))
            .stderr(PStdio::from(log2));
        // SAFETY: the closure runs in the forked child before exec and calls only setsid(2), which is
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| RuntimeError::Start(format!("run {} __netd: {e}", self.exe.display())))?;
        let _ = fs::write(dir.join("netd.pid"), child.id().to_string());
        // Reaped by a thread so that it never lingers as a zombie of a long-lived server.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(())
    }

    /// Stops this root's netd (SIGTERM to the process `ROOT/.net/netd.pid` names, if it still
    /// holds `ROOT/.net/netd.lock`), waiting up to 5 s for it to let go of the lock. For shutting an
    /// instance down (and tests); the next start of a workspace with a network spawns it again.
    pub fn stop_netd(&self) -> Result<(), RuntimeError> {
        let dir = network::net_dir(&self.root);
        let held = || {
            OpenOptions::new()
                .read(true)
                .open(dir.join("netd.lock"))
                .ok()
                .is_some_and(|f| Flock::lock(f, FlockArg::LockSharedNonblock).is_err())
        };
        if !held() {
            return Ok(());
        }
        let pid: Option<i32> = fs::read_to_string(dir.join("netd.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        // Only a process that is this root's netd: a recycled pid is left alone.
        let ours = pid.filter(|&p| network::is_netd_of(p, &self.root));
        let Some(pid) = ours else {
            return Err(RuntimeError::Exec(
                "netd runs but its pid is unknown: stop it by hand".into(),
            ));
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while held() {
            if std::time::Instant::now() >= deadline {
                return Err(RuntimeError::Exec(format!("netd (pid {pid}) did not stop")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Asks netd to re-read the workspaces' plans (`reload` on `ROOT/.net/netd.sock`, answered
    /// `ok`), waiting a few seconds at most. Without netd there is nothing to tell.
    fn tell_netd_reload(&self) -> Result<(), RuntimeError> {
        use std::io::{BufRead, BufReader, Write};
        let path = network::net_dir(&self.root).join("netd.sock");
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(&path) else {
            return Ok(());
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        s.write_all(b"reload\n")
            .map_err(RuntimeError::io("tell netd to reload"))?;
        let mut line = String::new();
        BufReader::new(&s)
            .read_line(&mut line)
            .map_err(RuntimeError::io("wait for netd's reload"))?;
        if line.trim() == "ok" {
            Ok(())
        } else {
            Err(RuntimeError::Exec(format!(
                "netd did not reload: {}",
                line.trim()
            )))
        }
    }

    /// Removes what the network has for workspaces that are not running or gone: nftables objects
    /// and veths of every workspace not running, and the addresses of those not in `live` (the
    /// workspaces the control plane knows) or without a directory any more.
    pub fn gc_network_now(&self, live: &[String]) -> Result<network::Leftovers, RuntimeError> {
        let Some(cfg) = &self.net else {
            return Ok(network::Leftovers::default());
        };
        if !network::config_path(&self.root).exists() {
            return Ok(network::Leftovers::default());
        }
        let existing: Vec<String> = self
            .list()?
            .into_iter()
            .filter(|id| live.contains(id))
            .collect();
        let running: Vec<String> = existing
            .iter()
            .filter(|id| self.supervisor_alive(&self.layout(id)))
            .cloned()
            .collect();
        let alive = |id: &str| self.supervisor_alive(&self.layout(id));
        network::leftovers(&self.root, cfg, &running, &existing, &alive).map_err(RuntimeError::Exec)
    }

    /// The same runtime without the `/.warren` tools mount (for build sandboxes, which nobody
    /// reaches over SSH and whose writable layer must not gain a mount point).
    pub fn without_tools(mut self) -> LinuxRuntime {
        self.tools = false;
        self
    }

    /// The tools directory for workspaces (see [`crate::tools`]), made on first use. A failure is
    /// reported and leaves workspaces without the mount rather than unable to start: only
    /// Warren's helpers (SFTP) need it.
    fn tools_dir(&self) -> Option<PathBuf> {
        if !self.tools {
            return None;
        }
        match crate::tools::prepare(&self.root, &self.exe) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("warning: workspaces get no /.warren tools mount (no SFTP): {e}");
                None
            }
        }
    }

    /// Points the tools mount of an existing workspace's `config.json` at the current binary's
    /// tools: workspaces made before the mount existed get it, and after an upgrade the helpers
    /// match the server again. Best effort: the supervisor reports a config it cannot read.
    fn refresh_tools_mount(&self, l: &Layout) {
        if !self.tools {
            return;
        }
        let path = l.bundle().join("config.json");
        let Ok(mut config) = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .ok_or(())
        else {
            return;
        };
        let tools = self.tools_dir();
        if crate::tools::set_mount(&mut config, tools.as_deref()) {
            let tmp = path.with_extension("json.tmp");
            if fs::write(&tmp, config.to_string()).is_ok() {
                let _ = fs::rename(&tmp, &path);
            }
        }
    }

    /// Host-wide caches (compiled seccomp programs); a dot-directory so it is never taken for a workspace.
    fn cache_dir(&self) -> PathBuf {
        self.root.join(".cache")
    }

    fn layout(&self, id: &str) -> Layout {
        Layout::new(&self.root, id)
    }

    /// The OCI runtime in use.
    pub fn oci(&self) -> &OciRuntime {
        &self.oci
    }

    /// Whether a supervisor currently holds the workspace's lock.
    fn supervisor_alive(&self, l: &Layout) -> bool {
        let Ok(f) = OpenOptions::new().read(true).open(l.lock()) else {
            return false;
        };
        Flock::lock(f, FlockArg::LockSharedNonblock).is_err()
    }

    fn supervisor_pid(&self, l: &Layout) -> Option<i32> {
        fs::read_to_string(l.run().join("sup.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn spawn_supervisor(&self, l: &Layout) -> Result<(), RuntimeError> {
        let (r, w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| RuntimeError::Start(e.to_string()))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(l.log())
            .map_err(RuntimeError::io("open supervisor log"))?;
        let log2 = log
            .try_clone()
            .map_err(RuntimeError::io("open supervisor log"))?;
        let wfd = w.as_raw_fd();
        let mut cmd = Command::new(&self.exe);
        cmd.arg("__supervise")
            .arg(&l.dir)
            .env(READY_FD_ENV, wfd.to_string())
            .stdin(PStdio::null())
            .stdout(PStdio::from(log))
            .stderr(PStdio::from(log2));
        // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
        // functions (fcntl, setsid) on descriptors it owns.
        unsafe {
            cmd.pre_exec(move || {
                let flags = libc::fcntl(wfd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(wfd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let status = cmd.status().map_err(|e| {
            RuntimeError::Start(format!("run supervisor {}: {e}", self.exe.display()))
        })?;
        drop(w);
        if !status.success() {
            return Err(RuntimeError::Start(format!(
                "supervisor exited with {status}"
            )));
        }
        let line = read_ready(r, Duration::from_secs(120))?;
        match line.strip_prefix("ok ") {
            Some(_) => Ok(()),
            None => {
                let msg = line
                    .strip_prefix("error ")
                    .unwrap_or(&line)
                    .trim()
                    .to_string();
                Err(RuntimeError::Start(if msg.is_empty() {
                    format!(
                        "the supervisor died while starting; see {}",
                        l.log().display()
                    )
                } else {
                    msg
                }))
            }
        }
    }

    /// Waits up to `limit` for the supervisor to release its lock; true when it is gone.
    fn wait_supervisor_gone(&self, l: &Layout, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while self.supervisor_alive(l) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// SIGKILLs a live supervisor (one holding its lock) and waits for it to be gone.
    fn kill_supervisor(&self, l: &Layout) {
        if !self.supervisor_alive(l) {
            return;
        }
        if let Some(pid) = self.supervisor_pid(l) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        self.wait_supervisor_gone(l, Duration::from_secs(2));
    }

    /// Removes what a supervisor that died without cleaning up left: container processes (found through
    /// the cgroup, since nobody else knows them), OCI runtime state and the cgroup itself.
    fn clean_up_after_supervisor(&self, id: &str) -> Result<(), RuntimeError> {
        let l = self.layout(id);
        // The runtime that ran it, which may not be the one this process was configured with.
        let oci = fs::read(l.supervisor_config())
            .ok()
            .and_then(|b| serde_json::from_slice::<SupervisorConfig>(&b).ok())
            .map(|c| c.runtime)
            .unwrap_or_else(|| self.oci.clone());
        let backend = Backend::new(oci, id, &l.oci_root(), &l.bundle());
        let _ = backend.kill(libc::SIGKILL, true);
        let _ = backend.delete();
        if let (Some(cfg), Some(_)) = (&self.net, self.read_attachment(id)) {
            let _lock = network::workspace_lock(&l.dir).map_err(RuntimeError::Exec)?;
            network::detach(cfg, id).map_err(RuntimeError::Exec)?;
        }
        cgroup::remove(&spec::cgroup_path(id)).map_err(RuntimeError::io("remove cgroup"))
    }

    /// One request, one answer (with its descriptors), bounded in time.
    fn ask(&self, id: &str, req: &Request) -> Result<(Response, Vec<OwnedFd>), RuntimeError> {
        let sock = self.connect(&self.layout(id))?;
        proto::send(sock.as_fd(), req, &[]).map_err(RuntimeError::io("send request"))?;
        set_recv_timeout(&sock, Duration::from_secs(10));
        match proto::recv::<Response>(sock.as_fd()) {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err(RuntimeError::NotRunning),
            Err(e) => Err(RuntimeError::io("read the supervisor's answer")(e)),
        }
    }

    fn connect(&self, l: &Layout) -> Result<OwnedFd, RuntimeError> {
        if !self.supervisor_alive(l) {
            return Err(RuntimeError::NotRunning);
        }
        proto::connect_to(&l.socket()).map_err(|_| RuntimeError::NotRunning)
    }
}

/// Whether `path` looks like a user's home directory (`/root`, `/home/NAME`), not a system directory.
fn is_home_dir(path: &str) -> bool {
    let p = std::path::Path::new(path);
    p == std::path::Path::new("/root")
        || (p.starts_with("/home") && p.components().count() >= 3 && !path.contains(".."))
}

/// Bounds how long a receive on `sock` may block (zero: forever).
fn set_recv_timeout(sock: &OwnedFd, limit: Duration) {
    let tv = nix::sys::time::TimeVal::from(libc::timeval {
        tv_sec: limit.as_secs() as libc::time_t,
        tv_usec: 0,
    });
    let _ = nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv);
}

fn read_ready(r: OwnedFd, timeout: Duration) -> Result<String, RuntimeError> {
    let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
    let ms = PollTimeout::try_from(timeout.as_millis() as i32).unwrap_or(PollTimeout::NONE);
    match poll(&mut fds, ms) {
        Ok(0) => {
            return Err(RuntimeError::Start(
                "the supervisor did not report in time".into(),
            ))
        }
        Ok(_) => {}
        Err(e) => return Err(RuntimeError::Start(format!("poll: {e}"))),
    }
    let mut s = String::new();
    let _ = fcntl(r.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    File::from(r)
        .read_to_string(&mut s)
        .map_err(RuntimeError::io("read supervisor status"))?;
    Ok(s)
}

impl Runtime for LinuxRuntime {
    fn create(&self, spec: &WorkspaceSpec) -> Result<(), RuntimeError> {
        let l = self.layout(&spec.id);
        for d in [
            l.dir.clone(),
            l.run(),
            l.volumes(),
            l.etc(),
            l.bundle(),
            l.upper(),
        ] {
            fs::create_dir_all(&d).map_err(RuntimeError::io(format!("create {}", d.display())))?;
        }
        let init_user = match &spec.container_user {
            Some(u) => users::resolve_in_layers(&spec.layers, &l.upper(), u)
                .map_err(RuntimeError::Start)?,
            None => spec::User::root(),
        };
        let home = match &spec.home_user {
            Some(u) => Some(
                users::resolve_in_layers(&spec.layers, &l.upper(), u)
                    .map_err(RuntimeError::Start)?
                    .home,
            )
            // Only real home directories get a volume: a system account whose "home" is /usr/sbin or /
            // must not have image directories shadowed by a persistent copy.
            .filter(|h| is_home_dir(h)),
            None => None,
        };
        let write = |p: PathBuf, data: &[u8]| {
            fs::write(&p, data).map_err(RuntimeError::io(format!("write {}", p.display())))
        };
        write(
            l.etc().join("hostname"),
            format!("{}\n", spec.hostname).as_bytes(),
        )?;
        write(
            l.etc().join("hosts"),
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{}\n",
                spec.hostname
            )
            .as_bytes(),
        )?;
        if spec.network == crate::Network::Egress {
            if self.oci.is_sandboxed_kernel() {
                return Err(RuntimeError::Start(
                    "gVisor (runsc) workspaces cannot have a network of their own yet: use runc or libcontainer".into(),
                ));
            }
            let cfg = self.net_cfg()?;
            let address =
                network::allocate(&self.root, cfg, &spec.id).map_err(RuntimeError::Start)?;
            let att = Attachment {
                id: spec.id.clone(),
                address,
                veth: network::veth_name(&spec.id),
            };
            network::write_json(&l.dir.join("net.json"), &att).map_err(RuntimeError::Start)?;
            write(
                l.etc().join("resolv.conf"),
                format!("nameserver {}\n", cfg.gateway()).as_bytes(),
            )?;
            write(
                l.etc().join("hosts"),
                format!("127.0.0.1\tlocalhost\n{address}\t{}\n", spec.hostname).as_bytes(),
            )?;
        }
        if spec.network != crate::Network::Egress && self.read_attachment(&spec.id).is_some() {
            // Made again without a network of its own: its address goes back to the pool.
            let _ = fs::remove_file(l.dir.join("net.json"));
            if self.net.is_some() {
                network::release(&self.root, &spec.id).map_err(RuntimeError::Start)?;
            }
        }
        let tools = self.tools_dir();
        let mut config = spec::config(spec, &l, &init_user, home.as_deref(), tools.as_deref());
        let secrets_owner = match &spec.secrets_user {
            Some(u) => Some(
                users::resolve_in_layers(&spec.layers, &l.upper(), u)
                    .map_err(RuntimeError::Start)?,
            ),
            None => None,
        };
        let agent = if spec.agent_dir
            && spec.network != crate::Network::Host
            && !self.oci.is_sandboxed_kernel()
        {
            let dir = spec::agent_dir(&l);
            fs::create_dir_all(&dir).map_err(RuntimeError::io("create agent directory"))?;
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .map_err(RuntimeError::io("chmod agent directory"))?;
            }
            Some(dir)
        } else {
            None
        };
        spec::add_agent_mounts(&mut config, secrets_owner.as_ref(), agent.as_deref());
        // With libcontainer, Warren installs its precompiled filter itself (see backend.rs), for the
        // init and every exec'd process; an external runtime compiles the profile from config.json.
        let unconfined = spec.security.privileged || spec.security.seccomp_unconfined;
        let seccomp_bpf = match self.oci {
            OciRuntime::Libcontainer if unconfined => None,
            OciRuntime::Libcontainer => {
                if let Some(linux) = config["linux"].as_object_mut() {
                    linux.remove("seccomp");
                }
                Some(
                    crate::seccomp::compiled(&self.cache_dir())
                        .map_err(RuntimeError::io("compile seccomp profile"))?,
                )
            }
            OciRuntime::Binary { .. } => None,
        };
        for m in spec
            .mounts
            .iter()
            .filter(|m| m.kind == crate::MountKind::Volume)
        {
            if let Some(name) = &m.source {
                spec::check_volume_name(name).map_err(RuntimeError::Start)?;
            }
            fs::create_dir_all(spec::volume_dir(&l, m))
                .map_err(RuntimeError::io("create volume"))?;
        }
        fs::create_dir_all(l.volumes().join("home"))
            .map_err(RuntimeError::io("create home volume"))?;
        write(
            l.bundle().join("config.json"),
            config.to_string().as_bytes(),
        )?;
        let sup = SupervisorConfig {
            id: spec.id.clone(),
            layers: spec.layers.clone(),
            runtime: self.oci.clone(),
            home,
            default_user: spec.container_user.clone(),
            seccomp_bpf,
            security: spec.security.clone(),
            network: spec.network == crate::Network::Egress,
        };
        write(
            l.supervisor_config(),
            &serde_json::to_vec_pretty(&sup).expect("serializable"),
        )
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let l = self.layout(id);
        if !l.supervisor_config().exists() {
            return Err(RuntimeError::Start(format!(
                "workspace {id} was never created on this host"
            )));
        }
        if self.supervisor_alive(&l) {
            return Ok(());
        }
        self.refresh_tools_mount(&l);
        if self.read_attachment(id).is_some() {
            let cfg = self.net_cfg()?;
            network::ensure_host(&self.root, cfg).map_err(RuntimeError::Start)?;
            self.ensure_netd()?;
        }
        self.spawn_supervisor(&l)
    }

    fn exec(
        &self,
        id: &str,
        process: &ExecProcess,
        stdio: Option<Stdio>,
    ) -> Result<ExecSession, RuntimeError> {
        let l = self.layout(id);
        let sock = self.connect(&l)?;
        let fds: Vec<i32> = match (&stdio, process.tty) {
            (_, Some(_)) => vec![],
            (Some(s), None) => vec![
                s.stdin.as_raw_fd(),
                s.stdout.as_raw_fd(),
                s.stderr.as_raw_fd(),
            ],
            (None, None) => {
                return Err(RuntimeError::Exec("exec without a tty needs stdio".into()))
            }
        };
        proto::send(
            sock.as_fd(),
            &Request::Exec {
                process: process.clone(),
            },
            &fds,
        )
        .map_err(RuntimeError::io("send exec request"))?;
        drop(stdio);
        // Starting a process takes milliseconds; a supervisor that does not answer in a minute is wedged.
        set_recv_timeout(&sock, Duration::from_secs(60));
        let answer = proto::recv::<Response>(sock.as_fd()).map_err(RuntimeError::io("exec"))?;
        // The process itself may run for days.
        set_recv_timeout(&sock, Duration::ZERO);
        match answer {
            Some((Response::Started { pid }, fds)) => Ok(ExecSession {
                sock,
                pid,
                pty: fds.into_iter().next(),
            }),
            Some((Response::Error { message, command }, _)) => Err(if command {
                RuntimeError::Command(message)
            } else {
                RuntimeError::Exec(message)
            }),
            Some((other, _)) => Err(RuntimeError::Exec(format!("unexpected answer {other:?}"))),
            None => Err(RuntimeError::NotRunning),
        }
    }

    fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let l = self.layout(id);
        let sock = match self.connect(&l) {
            Ok(s) => s,
            Err(RuntimeError::NotRunning) => return self.clean_up_after_supervisor(id),
            Err(e) => return Err(e),
        };
        proto::send(
            sock.as_fd(),
            &Request::Stop {
                timeout_ms: grace.as_millis() as u64,
            },
            &[],
        )
        .map_err(RuntimeError::io("send stop request"))?;
        // The supervisor answers, then exits; its socket closes as it does. Wait for that hang-up
        // rather than polling, with a bound in case it is wedged.
        set_recv_timeout(&sock, grace + Duration::from_secs(10));
        while let Ok(Some(_)) = proto::recv::<Response>(sock.as_fd()) {}
        if self.wait_supervisor_gone(&l, Duration::from_secs(5)) {
            return Ok(());
        }
        // Wedged: kill it, then clean up after it like after any dead supervisor.
        self.kill_supervisor(&l);
        self.clean_up_after_supervisor(id)
    }

    fn destroy(&self, id: &str) -> Result<(), RuntimeError> {
        let l = self.layout(id);
        if self.supervisor_alive(&l) {
            let _ = self.stop(id, Duration::from_secs(2));
        }
        self.kill_supervisor(&l);
        self.clean_up_after_supervisor(id)?;
        if let Some(cfg) = &self.net {
            if self.read_attachment(id).is_some() {
                let _lock = network::workspace_lock(&l.dir).map_err(RuntimeError::Exec)?;
                network::detach(cfg, id).map_err(RuntimeError::Exec)?;
            }
            network::release(&self.root, id).map_err(RuntimeError::Exec)?;
        }
        match fs::remove_dir_all(&l.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(RuntimeError::Io {
                what: format!("remove {}", l.dir.display()),
                source: e,
            }),
        }
    }

    fn inspect(&self, id: &str) -> Result<Observed, RuntimeError> {
        let l = self.layout(id);
        if self.supervisor_alive(&l) {
            return Ok(Observed::Running {
                supervisor_pid: self.supervisor_pid(&l),
            });
        }
        if !l.dir.exists() && cgroup::dirs(&spec::cgroup_path(id)).is_empty() {
            return Ok(Observed::Absent);
        }
        let exit: Option<ExitRecord> = fs::read(l.exit_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        Ok(Observed::Stopped(exit))
    }

    fn stats(&self, id: &str) -> Result<Stats, RuntimeError> {
        Ok(cgroup::stats(&spec::cgroup_path(id)))
    }

    fn tcp_socket(&self, id: &str, ipv6: bool) -> Result<OwnedFd, RuntimeError> {
        let (reply, mut fds) = self.ask(id, &Request::Socket { ipv6 })?;
        match (reply, fds.pop()) {
            (Response::Socket, Some(fd)) => Ok(fd),
            (Response::Error { message, .. }, _) => Err(RuntimeError::Exec(message)),
            (other, _) => Err(RuntimeError::Exec(format!(
                "unexpected answer from the supervisor: {other:?}"
            ))),
        }
    }

    fn listening_ports(&self, id: &str) -> Result<Vec<crate::ListeningPort>, RuntimeError> {
        match self.ask(id, &Request::Ports)?.0 {
            Response::Ports { ports } => Ok(ports),
            Response::Error { message, .. } => Err(RuntimeError::Exec(message)),
            other => Err(RuntimeError::Exec(format!(
                "unexpected answer from the supervisor: {other:?}"
            ))),
        }
    }

    fn set_egress(&self, id: &str, plan: &EgressPlan) -> Result<(), RuntimeError> {
        let l = self.layout(id);
        if !l.supervisor_config().exists() {
            return Err(RuntimeError::Exec(format!(
                "workspace {id} was never created on this host"
            )));
        }
        let att = self.read_attachment(id).ok_or_else(|| {
            RuntimeError::Exec(format!("workspace {id} has no network of its own"))
        })?;
        let cfg = self.net_cfg()?;
        network::check_plan(plan).map_err(RuntimeError::Exec)?;
        let _lock = network::workspace_lock(&l.dir).map_err(RuntimeError::Exec)?;
        let running = self.supervisor_alive(&l);
        // Every start hands the plan over again: unchanged and not running, there is nothing to
        // rewrite, and netd (which reads the file when it loads) has it already.
        let file = l.dir.join("egress.json");
        if !running && network::load_plan(&l.dir).is_ok_and(|p| p == *plan) {
            return Ok(());
        }
        network::write_json(&file, plan).map_err(RuntimeError::Exec)?;
        // The resolver answers by the new plan before the rules are rebuilt (else it could learn
        // what only the old plan allowed into the new sets), and learns again what the new plan
        // still allows once they are (the rebuild drops learned addresses). The first reload swaps
        // netd's plan before it re-learns, and re-learning into the old sets may fail (a stage the
        // old plan does not have): only the second one's answer counts.
        let _ = self.tell_netd_reload();
        if running {
            network::apply(cfg, id, &att, plan).map_err(RuntimeError::Exec)?;
            self.tell_netd_reload()?;
        }
        Ok(())
    }

    fn address(&self, id: &str) -> Option<std::net::Ipv4Addr> {
        self.read_attachment(id).map(|a| a.address)
    }

    fn attachment(
        &self,
        id: &str,
    ) -> Result<Option<(Attachment, network::NetCounters)>, RuntimeError> {
        let Some(att) = self.read_attachment(id) else {
            return Ok(None);
        };
        let counters = match &self.net {
            Some(cfg) => network::counters(cfg, id).map_err(RuntimeError::Exec)?,
            None => Default::default(),
        };
        Ok(Some((att, counters)))
    }

    fn denials(&self, after: u64) -> Result<(Vec<network::Denial>, u64), RuntimeError> {
        network::read_denials(&self.root, after).map_err(RuntimeError::Exec)
    }

    fn gc_network(&self, live: &[String]) -> Result<(), RuntimeError> {
        self.gc_network_now(live).map(|_| ())
    }

    fn upper_dir(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        let l = self.layout(id);
        if self.supervisor_alive(&l) {
            return Err(RuntimeError::Exec(format!(
                "workspace {id} is running; stop it before reading its writable layer"
            )));
        }
        Ok(l.upper())
    }

    fn list(&self) -> Result<Vec<String>, RuntimeError> {
        // Directories only: cgroups under /warren may belong to another Warren state dir on this host,
        // and `destroy` removes a workspace's cgroup before its directory, so a cgroup never outlives
        // the directory that names it.
        let mut ids = Vec::new();
        if let Ok(rd) = fs::read_dir(&self.root) {
            for e in rd.flatten() {
                if e.path().is_dir() && !e.file_name().to_string_lossy().starts_with('.') {
                    ids.push(e.file_name().to_string_lossy().to_string());
                }
            }
        }
        Ok(ids)
    }
}

/// A process started in a workspace: wait for its exit code, forward signals, and (with a PTY) read and
/// write its terminal through `pty`.
pub struct ExecSession {
    sock: OwnedFd,
    /// Host pid of the process.
    pub pid: i32,
    /// The PTY master, when one was asked for.
    pub pty: Option<OwnedFd>,
}

impl ExecSession {
    /// Blocks until the process exits; returns its exit code (128 + signal when killed).
    pub fn wait(&self) -> Result<i32, RuntimeError> {
        loop {
            match proto::recv::<Response>(self.sock.as_fd()).map_err(RuntimeError::io("wait"))? {
                Some((Response::Exited { code }, _)) => return Ok(code),
                Some(_) => continue,
                None => {
                    return Err(RuntimeError::Exec(
                        "the workspace stopped while the command ran".into(),
                    ))
                }
            }
        }
    }

    /// A second handle for signalling from another thread while one waits.
    pub fn signaller(&self) -> Result<Signaller, RuntimeError> {
        Ok(Signaller {
            sock: self.sock.try_clone().map_err(RuntimeError::io("dup"))?,
        })
    }
}

/// Sends signals to an exec'd process from another thread.
pub struct Signaller {
    sock: OwnedFd,
}

impl Signaller {
    /// Delivers `signal` to the process.
    pub fn signal(&self, signal: i32) -> Result<(), RuntimeError> {
        proto::send(self.sock.as_fd(), &Request::Signal { signal }, &[])
            .map_err(RuntimeError::io("send signal"))
    }

    /// A second handle to the same process.
    pub fn try_clone(&self) -> Result<Signaller, RuntimeError> {
        Ok(Signaller {
            sock: self.sock.try_clone().map_err(RuntimeError::io("dup"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::is_home_dir;

    #[test]
    fn only_user_homes_get_a_home_volume() {
        for yes in ["/root", "/home/dev", "/home/dev/sub"] {
            assert!(is_home_dir(yes), "{yes}");
        }
        for no in [
            "/",
            "/home",
            "/usr/sbin",
            "/var/lib/postgres",
            "/nonexistent",
            "/home/../etc",
            "/rootx",
        ] {
            assert!(!is_home_dir(no), "{no}");
        }
    }
}
