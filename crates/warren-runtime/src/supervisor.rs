//! The per-workspace supervisor: a small single-threaded process (the `warren` binary re-executed as
//! `warren __supervise DIR`) that owns one workspace's container for its whole life.
//!
//! It mounts the workspace's overlay root in a private mount namespace (so the mount disappears with the
//! last process that uses it: nothing can leak onto the host), creates and starts the container through
//! the OCI backend, and then serves its control socket: exec requests (stdio descriptors in, PTY masters
//! out), signals, status and stop. It is a child subreaper, so it reaps the container init and every exec'd
//! process and reports their exit codes. It outlives the control plane: a restarted server reconnects to
//! the socket. When the init exits, it deletes the container (cgroups included), records the exit status
//! and exits.

use std::fs::{self, File, OpenOptions};
use std::io::{IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::socket::{
    accept4, bind, listen, recvmsg, socket, AddressFamily, Backlog, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, OciRuntime};
use crate::proto::{self, ExecProcess, Request, Response};
use crate::spec::{self, Layout, User};
use crate::users;

/// Environment variable naming the descriptor on which the supervisor reports readiness.
pub const READY_FD_ENV: &str = "WARREN_SUPERVISOR_READY_FD";

/// What the supervisor needs to know, written by `LinuxRuntime::create` next to the bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorConfig {
    /// Container id.
    pub id: String,
    /// Image layer directories, bottom first.
    pub layers: Vec<PathBuf>,
    /// The OCI runtime to use.
    pub runtime: OciRuntime,
    /// Where the home volume is mounted in the workspace (seeded from the image on first start).
    pub home: Option<String>,
    /// The user exec'd processes run as by default.
    pub default_user: Option<String>,
    /// A compiled seccomp program Warren installs itself (libcontainer backend), instead of the runtime
    /// compiling the profile in config.json for every process.
    #[serde(default)]
    pub seccomp_bpf: Option<PathBuf>,
    /// Extra privileges, applied to exec'd processes as to the init.
    #[serde(default)]
    pub security: crate::Security,
    /// The workspace has an address on Warren's network (`Network::Egress`): the supervisor
    /// connects it between the container's create and start (from `ROOT/.net/config.json`,
    /// `net.json` and `egress.json`) and disconnects it when the init exits.
    #[serde(default)]
    pub network: bool,
}

/// What `exit.json` records about the last run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExitRecord {
    /// The init's exit code (128 + signal when killed).
    pub code: i32,
    /// Whether the exit was asked for (stop) rather than a crash.
    pub requested: bool,
}

static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; `b` lives for the call; a full pipe just drops the byte.
        unsafe {
            libc::write(fd, (&b as *const u8).cast(), 1);
        }
    }
}

extern "C" fn on_noop(_: libc::c_int) {}

/// Entry point for `warren __supervise DIR`. Never returns.
pub fn main(dir: &Path) -> ! {
    let ready = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|s| s.parse::<RawFd>().ok())
        // SAFETY: the spawner put this descriptor in our table for us alone and told us its number.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    close_stray_fds(ready.as_ref().map(|f| f.as_raw_fd()));
    if let Some(r) = &ready {
        // Inheritable only to get here: no process the supervisor starts may hold it open, or the
        // spawner would never see end-of-file.
        let _ = nix::fcntl::fcntl(
            r.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    reset_signals();
    // SAFETY: we are single-threaded here (nothing has spawned a thread yet), so the child may run
    // arbitrary code after fork.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => std::process::exit(0),
        Ok(ForkResult::Child) => {}
        Err(e) => {
            report(ready, Err(format!("fork: {e}")));
            std::process::exit(1)
        }
    }
    let code = match Supervisor::start(dir) {
        Ok(mut s) => {
            report(ready, Ok(s.init_pid));
            s.serve()
        }
        Err(e) => {
            eprintln!("warren supervisor: {e}");
            report(ready, Err(e));
            1
        }
    };
    std::process::exit(code)
}

/// How long a stop waits for the workspace's processes before it ends the init (and with it the PID
/// namespace) even if some ignore SIGTERM.
const FIRST_PHASE: Duration = Duration::from_secs(3);

/// A pidfd for `pid` (readable when the process exits), or None if it is already gone.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative result is a descriptor the kernel just gave us.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Turns the OCI runtime's account of a failed exec into one line a user understands, and
/// whether it is the command's fault (true) rather than the workspace's.
fn explain_exec_error(program: &str, raw: &str) -> (String, bool) {
    let lower = raw.to_ascii_lowercase();
    if lower.contains("chdir") || lower.contains("cwd") {
        (
            format!("cannot run `{program}`: cannot enter its working directory ({raw})"),
            true,
        )
    } else if lower.contains("executable") && lower.contains("not found") {
        (
            format!("command `{program}` not found in the workspace"),
            true,
        )
    } else if lower.contains("permission denied") && lower.contains("exec") {
        (
            format!("command `{program}` cannot be executed in the workspace: permission denied"),
            true,
        )
    } else {
        (raw.to_string(), false)
    }
}

/// Restores every signal to its default disposition and unblocks all: ignored and blocked signals are
/// inherited across execve, and workspace processes must not inherit whatever the spawner had.
fn reset_signals() {
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction with a valid kernel sigaction (SIG_DFL, no flags) for one signal, and a
        // null old-action pointer. Called directly because glibc refuses the signals it reserves.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null::<u8>(),
                8usize,
            );
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        None,
    );
}

/// Closes every inherited descriptor but stdio and `keep`: a long-lived supervisor must not hold the
/// pipes and sockets of whoever happened to spawn it (their readers would never see end-of-file).
fn close_stray_fds(keep: Option<RawFd>) {
    let fds: Vec<RawFd> = match fs::read_dir("/proc/self/fd") {
        Ok(rd) => rd
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect(),
        Err(_) => return,
    };
    for fd in fds.into_iter().filter(|&fd| fd > 2 && Some(fd) != keep) {
        let _ = nix::unistd::close(fd);
    }
}

fn report(ready: Option<OwnedFd>, r: Result<i32, String>) {
    if let Some(fd) = ready {
        let mut f = File::from(fd);
        let line = match r {
            Ok(pid) => format!("ok {pid}\n"),
            Err(e) => format!("error {}\n", e.replace('\n', " ")),
        };
        let _ = f.write_all(line.as_bytes());
    }
}

struct Client {
    sock: OwnedFd,
    exec_pid: Option<i32>,
    /// The supervisor keeps its own handle on an exec's PTY master for the session's life.
    _pty: Option<OwnedFd>,
    wants_stop: bool,
}

struct Supervisor {
    layout: Layout,
    cfg: SupervisorConfig,
    backend: Backend,
    init_pid: i32,
    base_env: Vec<String>,
    seccomp: Option<std::sync::Arc<[u8]>>,
    _lock: Flock<File>,
    listener: OwnedFd,
    sig_r: OwnedFd,
    clients: Vec<Client>,
    stop_deadline: Option<Instant>,
    stop_requested: bool,
    /// Stopping: the init gets SIGTERM once the processes in `stopping` have exited.
    init_waits: bool,
    /// pidfds of the processes asked to exit when the stop began (readable once they have).
    stopping: Vec<OwnedFd>,
    /// When the init gets SIGTERM even if some of those processes are still there.
    init_deadline: Option<Instant>,
    exec_seq: u64,
    /// The workspace's network (runtime root and config), to disconnect when the init exits.
    net: Option<(PathBuf, crate::network::NetConfig)>,
}

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Supervisor {
    fn start(dir: &Path) -> Result<Supervisor, String> {
        let layout = Layout {
            dir: dir.to_path_buf(),
        };
        let cfg: SupervisorConfig = serde_json::from_slice(
            &fs::read(layout.supervisor_config()).map_err(err("read supervisor.json"))?,
        )
        .map_err(err("parse supervisor.json"))?;
        fs::create_dir_all(layout.run()).map_err(err("create run dir"))?;
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and affects only this process.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(format!(
                "prctl(PR_SET_CHILD_SUBREAPER): {}",
                std::io::Error::last_os_error()
            ));
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(layout.lock())
            .map_err(err("open lock"))?;
        let lock = flock_nb(lock)
            .map_err(|_| "another supervisor already runs this workspace".to_string())?;
        fs::write(layout.run().join("sup.pid"), std::process::id().to_string())
            .map_err(err("write pid file"))?;
        let _ = fs::remove_file(layout.exit_file());

        unshare(CloneFlags::CLONE_NEWNS).map_err(err("unshare mount namespace"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(err("make mounts private"))?;
        mount_overlay(&layout, &cfg.layers)?;
        if let Some(home) = &cfg.home {
            seed_home(&layout, home)?;
        }

        let config: serde_json::Value = serde_json::from_slice(
            &fs::read(layout.bundle().join("config.json")).map_err(err("read config.json"))?,
        )
        .map_err(err("parse config.json"))?;
        let base_env: Vec<String> =
            serde_json::from_value(config["process"]["env"].clone()).unwrap_or_default();
        let seccomp: Option<std::sync::Arc<[u8]>> = match &cfg.seccomp_bpf {
            Some(p) => Some(
                fs::read(p)
                    .map_err(err("read compiled seccomp program"))?
                    .into(),
            ),
            None => None,
        };

        let backend = Backend::new(
            cfg.runtime.clone(),
            &cfg.id,
            &layout.oci_root(),
            &layout.bundle(),
        );
        // A previous supervisor that died hard may have left container state behind.
        let _ = backend.kill(libc::SIGKILL, true);
        let _ = backend.delete();
        fs::create_dir_all(layout.oci_root()).map_err(err("create oci root"))?;
        let devnull = || File::open("/dev/null").map(OwnedFd::from);
        let stdio = crate::Stdio {
            stdin: devnull().map_err(err("open /dev/null"))?,
            stdout: devnull().map_err(err("open /dev/null"))?,
            stderr: devnull().map_err(err("open /dev/null"))?,
        };
        let net = if cfg.network {
            Some(crate::network::load(&layout.dir).map_err(err("the workspace's network"))?)
        } else {
            None
        };
        let mut connect = |pid: i32| match &net {
            Some((root, ncfg, att, _)) => {
                // The plan as it is now, read under the lock `set_egress` writes it under: a change
                // made while the container was being created is not lost.
                let _lock = crate::network::workspace_lock(&layout.dir)?;
                let plan = crate::network::load_plan(&layout.dir)?;
                crate::network::attach(root, ncfg, &cfg.id, pid, att, &plan)
            }
            None => Ok(()),
        };
        let init_pid = backend
            .create_and_start(stdio, seccomp.clone(), &mut connect)
            .map_err(|e| e.to_string())?;

        let (sig_r, sig_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .map_err(err("pipe"))?;
        SIGNAL_PIPE.store(sig_w.as_raw_fd(), Ordering::Relaxed);
        std::mem::forget(sig_w);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
            // SAFETY: the handler only calls write(2), which is async-signal-safe.
            unsafe { nix::sys::signal::sigaction(s, &action) }.map_err(err("sigaction"))?;
        }
        // SIGHUP and SIGPIPE must not kill the supervisor, but they must not be *ignored* either: an
        // ignored disposition is inherited across execve, and the runtime forks workspace processes from
        // here. A no-op handler is reset to the default in every process the workspace runs.
        let noop = SigAction::new(
            SigHandler::Handler(on_noop),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for s in [Signal::SIGHUP, Signal::SIGPIPE] {
            // SAFETY: the handler does nothing at all.
            unsafe { nix::sys::signal::sigaction(s, &noop) }.map_err(err("sigaction"))?;
        }

        let listener = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(err("socket"))?;
        let _ = fs::remove_file(layout.socket());
        bind(
            listener.as_raw_fd(),
            &UnixAddr::new(&layout.socket()).map_err(err("socket path"))?,
        )
        .map_err(err("bind control socket"))?;
        listen(&listener, Backlog::new(64).map_err(err("listen"))?).map_err(err("listen"))?;

        Ok(Supervisor {
            layout,
            cfg,
            backend,
            init_pid,
            base_env,
            seccomp,
            _lock: lock,
            listener,
            sig_r,
            clients: Vec::new(),
            stop_deadline: None,
            stop_requested: false,
            init_waits: false,
            stopping: Vec::new(),
            init_deadline: None,
            exec_seq: 0,
            net: net.map(|(root, c, _, _)| (root, c)),
        })
    }

    /// Serves the control socket until the workspace init exits; returns the process exit code.
    fn serve(&mut self) -> i32 {
        loop {
            let timeout = match self.stop_deadline {
                Some(d) => {
                    let d = match self.init_deadline {
                        Some(i) if self.init_waits => d.min(i),
                        _ => d,
                    };
                    let left = d.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left.as_millis().min(60_000) as i32)
                        .unwrap_or(PollTimeout::ZERO)
                }
                None => PollTimeout::NONE,
            };
            let (sig_ready, listen_ready, ready_clients, exited) = {
                let mut fds = vec![
                    PollFd::new(self.sig_r.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                ];
                for c in &self.clients {
                    fds.push(PollFd::new(c.sock.as_fd(), PollFlags::POLLIN));
                }
                let n_clients = self.clients.len();
                for p in &self.stopping {
                    fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        eprintln!("warren supervisor: poll: {e}");
                        return 1;
                    }
                }
                let hit = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
                let ready: Vec<usize> = fds[2..2 + n_clients]
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| hit(f))
                    .map(|(i, _)| i)
                    .collect();
                let exited: Vec<usize> = fds[2 + n_clients..]
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| hit(f))
                    .map(|(i, _)| i)
                    .collect();
                (hit(&fds[0]), hit(&fds[1]), ready, exited)
            };
            for i in exited.into_iter().rev() {
                self.stopping.remove(i);
            }
            if self.init_waits
                && (self.stopping.is_empty()
                    || self.init_deadline.is_some_and(|d| Instant::now() >= d))
            {
                self.term_init();
            }
            if sig_ready {
                if let Some(code) = self.on_signals() {
                    return self.finish(code);
                }
            }
            if listen_ready {
                while let Ok(fd) = accept4(self.listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                    // SAFETY: accept4 returned a new descriptor that we now own.
                    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
                    self.clients.push(Client {
                        sock,
                        exec_pid: None,
                        _pty: None,
                        wants_stop: false,
                    });
                }
            }
            let mut gone = Vec::new();
            for i in ready_clients {
                if !self.on_client(i) {
                    gone.push(i);
                }
            }
            for i in gone.into_iter().rev() {
                let c = self.clients.remove(i);
                if let Some(pid) = c.exec_pid {
                    // Like sshd on a dropped connection: the session's process gets a hangup.
                    let _ = kill(Pid::from_raw(pid), Signal::SIGHUP);
                }
            }
            if let Some(d) = self.stop_deadline {
                if Instant::now() >= d {
                    self.init_waits = false;
                    let _ = self.backend.kill(libc::SIGKILL, true);
                    self.stop_deadline = Some(Instant::now() + Duration::from_secs(3600));
                }
            }
        }
    }

    /// Drains the signal pipe and reaps children; returns the init's exit code once it is gone.
    fn on_signals(&mut self) -> Option<i32> {
        let mut buf = [0u8; 64];
        let mut term = false;
        while let Ok(n) = nix::unistd::read(self.sig_r.as_raw_fd(), &mut buf) {
            if n == 0 {
                break;
            }
            term |= buf[..n]
                .iter()
                .any(|&s| s as i32 == libc::SIGTERM || s as i32 == libc::SIGINT);
            if n < buf.len() {
                break;
            }
        }
        if term && self.stop_deadline.is_none() {
            self.begin_stop(Duration::from_secs(10));
        }
        let mut init_code = None;
        loop {
            let (pid, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid.as_raw(), 128 + sig as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            if pid == self.init_pid {
                init_code = Some(code);
            } else {
                self.tell_exec(pid, code);
            }
        }
        init_code
    }

    /// Starts a graceful stop: SIGTERM to every workspace process but the init, and SIGTERM to the init
    /// once they are gone (its death takes the whole PID namespace down, so it must go last); SIGKILL
    /// to everything when `grace` runs out.
    fn begin_stop(&mut self, grace: Duration) {
        self.stop_requested = true;
        self.stop_deadline = Some(Instant::now() + grace);
        let others = self.processes_but_init();
        if others.is_empty() {
            self.term_init();
        } else {
            // A pidfd per process turns "it has exited" into a poll event. Processes started after
            // this point (the init's next sleeper, say) get no grace.
            self.stopping = others.iter().filter_map(|&pid| pidfd_open(pid)).collect();
            for &pid in &others {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                // Stopped jobs could not act on it; interactive shells ignore SIGTERM but not SIGHUP.
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            }
            for c in &self.clients {
                if let Some(pid) = c.exec_pid {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGHUP);
                }
            }
            self.init_waits = true;
            self.init_deadline = Some(Instant::now() + grace.min(FIRST_PHASE));
        }
    }

    fn term_init(&mut self) {
        self.init_waits = false;
        if self.backend.kill(libc::SIGTERM, false).is_err() {
            let _ = self.backend.kill(libc::SIGKILL, true);
        }
    }

    /// Host pids of the workspace's processes other than its init, from its cgroup (none known when
    /// the runtime keeps no cgroup, e.g. gVisor).
    fn processes_but_init(&self) -> Vec<i32> {
        crate::cgroup::pids(&spec::cgroup_path(&self.cfg.id))
            .into_iter()
            .filter(|&p| p != self.init_pid)
            .collect()
    }

    /// Handles one readable client; false when it hung up.
    fn on_client(&mut self, i: usize) -> bool {
        let msg = proto::recv::<Request>(self.clients[i].sock.as_fd());
        let (req, fds) = match msg {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => return false,
        };
        let sock = self.clients[i].sock.try_clone();
        let Ok(sock) = sock else { return false };
        let sock = sock.as_fd();
        match req {
            Request::Status => {
                let _ = proto::send(
                    sock,
                    &Response::Status {
                        init_pid: self.init_pid,
                    },
                    &[],
                );
            }
            Request::Stop { timeout_ms } => {
                self.clients[i].wants_stop = true;
                if self.stop_deadline.is_none() {
                    self.begin_stop(Duration::from_millis(timeout_ms));
                }
            }
            Request::Signal { signal } => {
                if let Some(pid) = self.clients[i].exec_pid {
                    if let Ok(sig) = Signal::try_from(signal) {
                        if sig == Signal::SIGKILL {
                            // A killed command takes what it started with it (a timed-out
                            // `sh -c 'a | b'`, git's remote helpers); processes that left it
                            // (daemons reparented to the init) stay.
                            kill_tree(pid, &spec::cgroup_path(&self.cfg.id));
                        } else {
                            let _ = kill(Pid::from_raw(pid), sig);
                        }
                    }
                }
            }
            Request::Socket { ipv6 } => {
                match self
                    .namespace_check()
                    .and_then(|()| crate::net::socket_in(self.init_pid, ipv6))
                {
                    Ok(fd) => {
                        let _ = proto::send(sock, &Response::Socket, &[fd.as_raw_fd()]);
                    }
                    Err(message) => {
                        let reply = Response::Error {
                            message,
                            command: false,
                        };
                        let _ = proto::send(sock, &reply, &[]);
                    }
                }
            }
            Request::Ports => {
                let listed = self.namespace_check().and_then(|()| {
                    crate::net::listening_ports(
                        self.init_pid,
                        &crate::cgroup::pids(&spec::cgroup_path(&self.cfg.id)),
                    )
                });
                let reply = match listed {
                    Ok(ports) => Response::Ports { ports },
                    Err(message) => Response::Error {
                        message,
                        command: false,
                    },
                };
                let _ = proto::send(sock, &reply, &[]);
            }
            Request::Exec { process } => match self.exec(&process, fds) {
                Ok((pid, pty)) => {
                    let c = &mut self.clients[i];
                    // A detached process belongs to no session: nothing hangs it up.
                    c.exec_pid = (!process.detach).then_some(pid);
                    let fds: Vec<RawFd> = pty.iter().map(|p| p.as_raw_fd()).collect();
                    let _ = proto::send(c.sock.as_fd(), &Response::Started { pid }, &fds);
                    c._pty = pty;
                }
                Err((message, command)) => {
                    let _ = proto::send(sock, &Response::Error { message, command }, &[]);
                }
            },
        }
        true
    }

    /// Whether the init's network namespace is the workspace's: under gVisor the sandbox has a
    /// network stack of its own, which no host namespace reaches.
    fn namespace_check(&self) -> Result<(), String> {
        if self.cfg.runtime.is_sandboxed_kernel() {
            return Err(
                "ports of gVisor (runsc) workspaces cannot be reached from the host yet".into(),
            );
        }
        Ok(())
    }

    fn exec(
        &mut self,
        p: &ExecProcess,
        fds: Vec<OwnedFd>,
    ) -> Result<(i32, Option<OwnedFd>), (String, bool)> {
        // The request's own mistakes (no command, unknown user, missing directory) say so.
        let mine = |e: String| (e, true);
        if p.argv.is_empty() {
            return Err(mine("no command given".into()));
        }
        let rootfs = self.layout.rootfs();
        let user_spec = p.user.clone().or_else(|| self.cfg.default_user.clone());
        let user = match &user_spec {
            Some(u) => users::resolve(&rootfs, u).map_err(mine)?,
            None => users::resolve(&rootfs, "0").unwrap_or_else(|_| User::root()),
        };
        let mut env = self.base_env.clone();
        spec::set_env(&mut env, "HOME", &user.home);
        if let Some(name) = &user.name {
            spec::set_env(&mut env, "USER", name);
        }
        for kv in &p.env {
            if let Some((k, v)) = kv.split_once('=') {
                spec::set_env(&mut env, k, v);
            }
        }
        // Checked in the workspace's own view of its files (its init's root: mounts included), resolved
        // inside it. An explicit directory must exist; the default, the user's home, falls back to `/`.
        // (gVisor's sandbox process has no such view: its kernel is its own, and it checks by itself.)
        let view = PathBuf::from(format!("/proc/{}/root", self.init_pid));
        let exists =
            |dir: &str| self.cfg.runtime.is_sandboxed_kernel() || crate::inroot::is_dir(&view, dir);
        let login = p
            .login_shell
            .then_some(user.shell.as_deref())
            .flatten()
            .filter(|sh| {
                sh.starts_with('/')
                    && !sh.ends_with("/nologin")
                    && !sh.ends_with("/false")
                    && (self.cfg.runtime.is_sandboxed_kernel()
                        || crate::inroot::is_executable(&view, sh))
            });
        let argv: Vec<String> = match login {
            Some(sh) => {
                spec::set_env(&mut env, "SHELL", sh);
                vec![sh.to_string(), "-l".into()]
            }
            None => p.argv.clone(),
        };
        let cwd = match &p.cwd {
            Some(c) if exists(c) => c.clone(),
            Some(c) => {
                return Err(mine(format!(
                    "working directory {c} does not exist in the workspace"
                )))
            }
            None if exists(&user.home) => user.home.clone(),
            None => "/".to_string(),
        };
        self.exec_seq += 1;
        let seq = self.exec_seq;
        let process_json = self.layout.run().join(format!("exec-{seq}.json"));
        let doc = spec::process(
            &argv,
            &env,
            &cwd,
            &user,
            p.tty.is_some(),
            p.tty,
            &self.cfg.security,
        );
        fs::write(&process_json, doc.to_string())
            .map_err(err("write process.json"))
            .map_err(|e| (e, false))?;
        let result = if p.tty.is_some() {
            self.exec_tty(&process_json, seq)
        } else {
            let mut it = fds.into_iter();
            match (it.next(), it.next(), it.next()) {
                (Some(stdin), Some(stdout), Some(stderr)) => self
                    .backend
                    .exec(
                        &process_json,
                        Some(crate::Stdio {
                            stdin,
                            stdout,
                            stderr,
                        }),
                        None,
                        self.seccomp.clone(),
                    )
                    .map(|pid| (pid, None))
                    .map_err(|e| e.to_string()),
                _ => Err("exec without a tty needs stdin, stdout and stderr descriptors".into()),
            }
        };
        let _ = fs::remove_file(&process_json);
        result.map_err(|e| explain_exec_error(&argv[0], &e))
    }

    fn exec_tty(
        &mut self,
        process_json: &Path,
        seq: u64,
    ) -> Result<(i32, Option<OwnedFd>), String> {
        let path = self.layout.run().join(format!("console-{seq}.sock"));
        let _ = fs::remove_file(&path);
        let l = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(err("console socket"))?;
        bind(
            l.as_raw_fd(),
            &UnixAddr::new(&path).map_err(err("console path"))?,
        )
        .map_err(err("bind"))?;
        listen(&l, Backlog::new(1).map_err(err("listen"))?).map_err(err("listen"))?;
        let r = self
            .backend
            .exec(process_json, None, Some(&path), self.seccomp.clone())
            .map_err(|e| e.to_string());
        let _ = fs::remove_file(&path);
        let pid = r?;
        // The runtime has connected by now (it does before it returns); never wait long for it.
        let mut fds = [PollFd::new(l.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(5000u16)).unwrap_or(0) == 0 {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            return Err("the OCI runtime did not hand over the terminal".into());
        }
        let conn = accept4(l.as_raw_fd(), SockFlag::SOCK_CLOEXEC).map_err(err("accept console"))?;
        // SAFETY: accept4 returned a new descriptor that we now own.
        let conn = unsafe { OwnedFd::from_raw_fd(conn) };
        let master = recv_one_fd(conn.as_fd()).map_err(err("receive pty master"))?;
        Ok((pid, Some(master)))
    }

    /// Cleans up after the init exited and returns the supervisor's exit code.
    fn finish(&mut self, code: i32) -> i32 {
        let _ = self.backend.kill(libc::SIGKILL, true);
        // Reap what the init's death took with it.
        for _ in 0..50 {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(WaitStatus::Exited(pid, c)) => self.tell_exec(pid.as_raw(), c),
                Ok(WaitStatus::Signaled(pid, s, _)) => self.tell_exec(pid.as_raw(), 128 + s as i32),
                Ok(_) => {}
            }
        }
        let mut rc = 0;
        if let Err(e) = self.backend.delete() {
            eprintln!("warren supervisor: delete container: {e}");
            rc = 1;
        }
        // The veth went with the network namespace; its rules must go too (crash or stop alike).
        if let Some((_, ncfg)) = &self.net {
            let _lock = crate::network::workspace_lock(&self.layout.dir);
            if let Err(e) = crate::network::detach(ncfg, &self.cfg.id) {
                eprintln!("warren supervisor: disconnect the network: {e}");
                rc = 1;
            }
        }
        let rec = ExitRecord {
            code,
            requested: self.stop_requested,
        };
        let _ = fs::write(
            self.layout.exit_file(),
            serde_json::to_vec(&rec).unwrap_or_default(),
        );
        let _ = fs::remove_file(self.layout.socket());
        let _ = fs::remove_file(self.layout.run().join("sup.pid"));
        for c in &self.clients {
            if c.wants_stop {
                let _ = proto::send(c.sock.as_fd(), &Response::Stopped { code }, &[]);
            }
        }
        let _ = umount_rootfs(&self.layout);
        rc
    }

    /// Reports an exec'd process's exit to its client and forgets the pid (it may be reused).
    fn tell_exec(&mut self, pid: i32, code: i32) {
        if let Some(c) = self.clients.iter_mut().find(|c| c.exec_pid == Some(pid)) {
            let _ = proto::send(c.sock.as_fd(), &Response::Exited { code }, &[]);
            c.exec_pid = None;
        }
    }
}

/// SIGKILLs `root` and every process of the workspace's cgroup `cgroup` descending from it. A
/// few rounds, so children forked while the first signals went out are found too.
fn kill_tree(root: i32, cgroup: &str) {
    let mut killed = std::collections::HashSet::new();
    for _ in 0..4 {
        let tree = descendants(root, &crate::cgroup::pids(cgroup));
        let fresh: Vec<i32> = tree.into_iter().filter(|p| killed.insert(*p)).collect();
        if fresh.is_empty() && killed.contains(&root) {
            return;
        }
        let _ = kill(Pid::from_raw(root), Signal::SIGKILL);
        killed.insert(root);
        for p in fresh {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}

/// The processes among `pids` below `root` (children, their children...), from their parents
/// in `/proc/PID/stat`.
fn descendants(root: i32, pids: &[i32]) -> Vec<i32> {
    let parent = |pid: i32| -> Option<i32> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`: comm may hold spaces and parentheses; the last `)` ends it.
        let rest = &stat[stat.rfind(')')? + 1..];
        rest.split_whitespace().nth(1)?.parse().ok()
    };
    let parents: Vec<(i32, i32)> = pids
        .iter()
        .filter_map(|&p| parent(p).map(|pp| (p, pp)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, pp) in &parents {
            if pp == p && child != root && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

fn flock_nb(f: File) -> Result<Flock<File>, File> {
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(f, _)| f)
}

fn mount_overlay(layout: &Layout, layers: &[PathBuf]) -> Result<(), String> {
    for d in [layout.upper(), layout.work(), layout.rootfs()] {
        fs::create_dir_all(&d).map_err(err("create overlay dirs"))?;
    }
    if layers.is_empty() {
        return Err("the image has no layers".into());
    }
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        layout.upper().display(),
        layout.work().display()
    );
    mount(
        Some("overlay"),
        &layout.rootfs(),
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(err("mount overlay root filesystem"))
}

fn umount_rootfs(layout: &Layout) -> nix::Result<()> {
    nix::mount::umount2(&layout.rootfs(), nix::mount::MntFlags::MNT_DETACH)
}

/// Copies the image's home directory into a fresh home volume, once.
fn seed_home(layout: &Layout, home: &str) -> Result<(), String> {
    let vol = layout.volumes().join("home");
    let marker = layout.volumes().join(".home-seeded");
    fs::create_dir_all(&vol).map_err(err("create home volume"))?;
    if marker.exists() {
        return Ok(());
    }
    // Resolved inside the workspace's root: an image whose home is a symlink to /etc gets its own /etc.
    crate::inroot::copy_dir(&layout.rootfs(), home, &vol)
        .map_err(err("copy the image's home directory into the home volume"))?;
    fs::write(&marker, b"").map_err(err("mark home volume"))
}

fn recv_one_fd(sock: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let m = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for c in m.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel installed this descriptor for us with the message.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(std::io::Error::other("no descriptor received"))
}
