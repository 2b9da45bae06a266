//! OCI runtimes that run a workspace bundle: youki's `libcontainer` in-process (the default) or an
//! external OCI runtime binary (`runc`, gVisor's `runsc`). Only the supervisor calls this module.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as PStdio};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::Spec;

use crate::Stdio;
use serde::{Deserialize, Serialize};

/// Which OCI runtime runs workspaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OciRuntime {
    /// youki's libcontainer, linked into Warren (no external binary).
    #[default]
    Libcontainer,
    /// An OCI runtime binary with runc's command line (`runc`, `runsc`).
    Binary {
        /// Path or name of the binary.
        path: String,
        /// Global flags put before the subcommand (e.g. `--network=none` for runsc).
        #[serde(default)]
        global_args: Vec<String>,
    },
}

impl OciRuntime {
    /// Whether workspace processes run on a kernel of their own (gVisor), so that the host cannot see
    /// their files through `/proc/PID/root`.
    pub fn is_sandboxed_kernel(&self) -> bool {
        matches!(self, OciRuntime::Binary { path, .. } if path.ends_with("runsc"))
    }

    /// Parses a user's choice: `libcontainer`, `runc`, `runsc`, or a path to a runc-compatible binary.
    pub fn parse(s: &str) -> OciRuntime {
        match s {
            "" | "libcontainer" | "youki" => OciRuntime::Libcontainer,
            "gvisor" => OciRuntime::parse("runsc"),
            // gVisor needs its flags however it is named (`runsc` or a path to it).
            other if Path::new(other).file_name().is_some_and(|n| n == "runsc") => {
                OciRuntime::Binary {
                    path: other.into(),
                    global_args: vec!["--network=none".into(), "--ignore-cgroups".into()],
                }
            }
            other => OciRuntime::Binary {
                path: other.into(),
                global_args: vec![],
            },
        }
    }
}

/// Installs Warren's precompiled seccomp program right before `execve`, in the init and in every
/// exec'd process.
///
/// libcontainer 0.7 does not carry the init's seccomp profile over to tenant (exec) processes, and it
/// compiles the profile anew (milliseconds) for each process; loading a program compiled once per host
/// closes the gap and takes microseconds. no_new_privs is already set when this runs.
#[derive(Clone)]
struct SeccompExecutor {
    bpf: Option<std::sync::Arc<[u8]>>,
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        // libcontainer ignores `process.consoleSize`; give the new terminal its size before the
        // program can ask for it.
        if let Some(p) = spec.process() {
            if let (Some(true), Some(size)) = (p.terminal(), p.console_size()) {
                let stdin = std::io::stdin();
                let _ = crate::tty::set_window_size(
                    std::os::fd::AsFd::as_fd(&stdin),
                    size.height() as u16,
                    size.width() as u16,
                );
            }
        }
        if let Some(b) = &self.bpf {
            crate::seccomp::load(b).map_err(|e| ExecutorError::Other(format!("seccomp: {e}")))?;
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

/// Errors from the OCI runtime.
#[cfg(test)]
mod tests {
    use super::OciRuntime;

    #[test]
    fn gvisor_gets_its_flags_by_alias_name_or_path() {
        for s in ["runsc", "gvisor", "/usr/bin/runsc"] {
            match OciRuntime::parse(s) {
                OciRuntime::Binary { global_args, .. } => {
                    assert!(global_args.contains(&"--ignore-cgroups".to_string()), "{s}")
                }
                other => panic!("{s}: {other:?}"),
            }
        }
        assert_eq!(OciRuntime::parse("libcontainer"), OciRuntime::Libcontainer);
        assert!(
            matches!(OciRuntime::parse("runc"), OciRuntime::Binary { global_args, .. } if global_args.is_empty())
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// libcontainer failed.
    #[error("libcontainer: {0}")]
    Libcontainer(String),
    /// Setting the container up between create and start failed (its network).
    #[error("{0}")]
    Setup(String),
    /// An external runtime failed or could not be run.
    #[error("{runtime} {op}: {message}")]
    Binary {
        /// Binary name.
        runtime: String,
        /// Subcommand.
        op: String,
        /// Its stderr, trimmed.
        message: String,
    },
}

fn lc<E: std::fmt::Display>(e: E) -> BackendError {
    BackendError::Libcontainer(e.to_string())
}

/// One workspace's container, as seen by its supervisor.
pub struct Backend {
    runtime: OciRuntime,
    id: String,
    root: PathBuf,
    bundle: PathBuf,
}

impl Backend {
    /// A backend for container `id` keeping its state in `root`.
    pub fn new(runtime: OciRuntime, id: &str, root: &Path, bundle: &Path) -> Backend {
        Backend {
            runtime,
            id: id.to_string(),
            root: root.to_path_buf(),
            bundle: bundle.to_path_buf(),
        }
    }

    fn binary(&self, path: &str, global: &[String]) -> Command {
        let mut c = Command::new(path);
        c.args(global).arg("--root").arg(&self.root);
        c
    }

    fn run_binary(
        &self,
        mut cmd: Command,
        op: &str,
        stdio: Option<Stdio>,
    ) -> Result<(), BackendError> {
        let name = match &self.runtime {
            OciRuntime::Binary { path, .. } => path.clone(),
            OciRuntime::Libcontainer => "libcontainer".into(),
        };
        match stdio {
            Some(s) => {
                cmd.stdin(PStdio::from(s.stdin))
                    .stdout(PStdio::from(s.stdout))
                    .stderr(PStdio::from(s.stderr));
            }
            None => {
                cmd.stdin(PStdio::null())
                    .stdout(PStdio::null())
                    .stderr(PStdio::piped());
            }
        }
        let out = cmd.output().map_err(|e| BackendError::Binary {
            runtime: name.clone(),
            op: op.into(),
            message: e.to_string(),
        })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(BackendError::Binary {
                runtime: name,
                op: op.into(),
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Creates and starts the workspace init; returns its host pid. `before_start` runs between
    /// the two, with the init's pid, while the init waits in its namespaces (the supervisor connects
    /// its network there); when it fails, the container is deleted and never runs.
    pub fn create_and_start(
        &self,
        stdio: Stdio,
        seccomp: Option<std::sync::Arc<[u8]>>,
        before_start: &mut dyn FnMut(i32) -> Result<(), String>,
    ) -> Result<i32, BackendError> {
        match &self.runtime {
            OciRuntime::Libcontainer => {
                let mut c = ContainerBuilder::new(self.id.clone(), SyscallType::default())
                    .with_root_path(&self.root)
                    .map_err(lc)?
                    .with_stdin(stdio.stdin)
                    .with_stdout(stdio.stdout)
                    .with_stderr(stdio.stderr)
                    .with_executor(SeccompExecutor { bpf: seccomp })
                    .validate_id()
                    .map_err(lc)?
                    .as_init(&self.bundle)
                    .with_systemd(false)
                    .with_detach(true)
                    .build()
                    .map_err(lc)?;
                let pid = c
                    .pid()
                    .map(|p| p.as_raw())
                    .ok_or_else(|| lc("container has no pid after create"))?;
                if let Err(e) = before_start(pid) {
                    let _ = c.delete(true);
                    return Err(BackendError::Setup(e));
                }
                c.start().map_err(lc)?;
                // runc brings up the loopback interface of a new network namespace; libcontainer does not.
                if let Err(e) = loopback_up(pid) {
                    let _ = c.delete(true);
                    return Err(e);
                }
                Ok(pid)
            }
            OciRuntime::Binary { path, global_args } => {
                let pid_file = self.root.join("init.pid");
                let mut create = self.binary(path, global_args);
                create
                    .arg("create")
                    .arg("--bundle")
                    .arg(&self.bundle)
                    .arg("--pid-file")
                    .arg(&pid_file)
                    .arg(&self.id);
                // runc keeps the passed stdio for the init; its own errors then go to the log file.
                self.run_binary(create, "create", Some(stdio))?;
                let created = read_pid(&pid_file).and_then(|pid| {
                    before_start(pid).map_err(BackendError::Setup)?;
                    Ok(pid)
                });
                if let Err(e) = created {
                    let _ = self.delete();
                    return Err(e);
                }
                let mut start = self.binary(path, global_args);
                start.arg("start").arg(&self.id);
                self.run_binary(start, "start", None)?;
                read_pid(&pid_file)
            }
        }
    }

    /// Starts `process.json` inside the running container; returns the new process's host pid.
    /// With a `console_socket`, the runtime sends the PTY master there and `stdio` is ignored.
    pub fn exec(
        &self,
        process_json: &Path,
        stdio: Option<Stdio>,
        console_socket: Option<&Path>,
        seccomp: Option<std::sync::Arc<[u8]>>,
    ) -> Result<i32, BackendError> {
        match &self.runtime {
            OciRuntime::Libcontainer => {
                let mut b = ContainerBuilder::new(self.id.clone(), SyscallType::default())
                    .with_root_path(&self.root)
                    .map_err(lc)?
                    .with_executor(SeccompExecutor { bpf: seccomp })
                    .with_console_socket(console_socket);
                if let Some(s) = stdio {
                    b = b
                        .with_stdin(s.stdin)
                        .with_stdout(s.stdout)
                        .with_stderr(s.stderr);
                }
                let pid = b
                    .as_tenant()
                    .with_process(Some(process_json))
                    .with_detach(true)
                    .build()
                    .map_err(lc)?;
                Ok(pid.as_raw())
            }
            OciRuntime::Binary { path, global_args } => {
                let pid_file = self.root.join(format!(
                    "exec-{}.pid",
                    process_json
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .unwrap_or("x")
                ));
                let mut cmd = self.binary(path, global_args);
                cmd.arg("exec")
                    .arg("--detach")
                    .arg("--process")
                    .arg(process_json)
                    .arg("--pid-file")
                    .arg(&pid_file);
                if let Some(cs) = console_socket {
                    cmd.arg("--console-socket").arg(cs);
                }
                cmd.arg(&self.id);
                self.run_binary(cmd, "exec", stdio)?;
                let pid = read_pid(&pid_file);
                let _ = std::fs::remove_file(&pid_file);
                pid
            }
        }
    }

    /// Sends `signal` to the init, or to every process of the container when `all`.
    pub fn kill(&self, signal: i32, all: bool) -> Result<(), BackendError> {
        match &self.runtime {
            OciRuntime::Libcontainer => {
                let mut c = Container::load(self.root.join(&self.id)).map_err(lc)?;
                let sig = nix::sys::signal::Signal::try_from(signal).map_err(lc)?;
                c.kill(sig, all).map_err(lc)
            }
            OciRuntime::Binary { path, global_args } => {
                let mut cmd = self.binary(path, global_args);
                cmd.arg("kill");
                if all {
                    cmd.arg("--all");
                }
                cmd.arg(&self.id).arg(signal.to_string());
                self.run_binary(cmd, "kill", None)
            }
        }
    }

    /// Removes the container's runtime state and cgroup. Safe to call when it is already gone.
    pub fn delete(&self) -> Result<(), BackendError> {
        match &self.runtime {
            OciRuntime::Libcontainer => {
                let dir = self.root.join(&self.id);
                if !dir.exists() {
                    return Ok(());
                }
                let mut c = Container::load(dir).map_err(lc)?;
                c.delete(true).map_err(lc)
            }
            OciRuntime::Binary { path, global_args } => {
                let mut cmd = self.binary(path, global_args);
                cmd.arg("delete").arg("--force").arg(&self.id);
                match self.run_binary(cmd, "delete", None) {
                    Err(BackendError::Binary { message, .. })
                        if message.contains("does not exist") =>
                    {
                        Ok(())
                    }
                    other => other,
                }
            }
        }
    }
}

/// Sets `lo` up in the network namespace of process `pid`, so that 127.0.0.1 works inside the workspace.
fn loopback_up(pid: i32) -> Result<(), BackendError> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).map_err(lc)?;
    let up = || -> Result<(), BackendError> {
        // setns(2) moves only the calling thread, a short-lived one that ends right after.
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(lc)?;
        let sock = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(lc)?;
        // SAFETY: `ifreq` is plain data (arrays, integers and a union of them); all zeroes is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(b"lo") {
            *d = *s as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `req`, which outlives the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
            return Err(lc(std::io::Error::last_os_error()));
        }
        // SAFETY: SIOCGIFFLAGS just filled the union's `ifru_flags` member.
        unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: SIOCSIFFLAGS only reads `req`, which outlives the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
            return Err(lc(std::io::Error::last_os_error()));
        }
        Ok(())
    };
    std::thread::scope(|s| s.spawn(up).join())
        .unwrap_or_else(|_| Err(lc("bringing up the loopback interface panicked")))
        .map_err(|e| lc(format!("bring up the loopback interface: {e}")))
}

fn read_pid(path: &Path) -> Result<i32, BackendError> {
    let s = std::fs::read_to_string(path).map_err(lc)?;
    s.trim().parse().map_err(lc)
}
