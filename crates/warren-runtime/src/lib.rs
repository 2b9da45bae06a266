//! Warren's workspace runtime: the only crate that touches the host (namespaces, cgroups, mounts, OCI
//! runtimes). The control plane drives it through the [`Runtime`] trait; [`LinuxRuntime`] is the native
//! implementation, which runs each workspace as an OCI bundle under a per-workspace supervisor process.
// This is the one crate allowed `unsafe` (fork, prctl, signal handlers, descriptor adoption); every block
// carries a `// SAFETY:` comment, enforced by clippy's `undocumented_unsafe_blocks`.
#![allow(unsafe_code)]

pub mod backend;
pub mod cgroup;
pub mod inroot;
mod linux;
pub mod net;
pub mod network;
pub mod proto;
pub mod seccomp;
mod seccomp_list;
pub mod spec;
pub mod supervisor;
pub mod tools;
pub mod tty;
pub mod users;

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

pub use backend::OciRuntime;
pub use cgroup::Stats;
pub use linux::{ExecSession, LinuxRuntime, Signaller};
pub use net::ListeningPort;
pub use proto::ExecProcess;
pub use supervisor::ExitRecord;

/// Everything the runtime needs to create a workspace's sandbox.
#[derive(Debug, Clone)]
pub struct WorkspaceSpec {
    /// Short unique id (container id, cgroup and directory name).
    pub id: String,
    /// Hostname inside the workspace.
    pub hostname: String,
    /// Unpacked image layers, bottom first (overlayfs lower directories, shared read-only).
    pub layers: Vec<PathBuf>,
    /// `KEY=VALUE` environment of every process (image env + containerEnv).
    pub env: Vec<String>,
    /// Mounts on top of the image (project folder, devcontainer `mounts`).
    pub mounts: Vec<MountSpec>,
    /// User whose home directory is a persistent volume (survives stop/start, removed on delete).
    pub home_user: Option<String>,
    /// User the workspace init runs as (devcontainer `containerUser`); root when unset.
    pub container_user: Option<String>,
    /// cgroup limits.
    pub limits: Limits,
    /// Run the workspace in a user namespace with this mapping (optional; off by default).
    pub user_namespace: Option<UserNamespace>,
    /// Privileges beyond the default sandbox, and what the init runs (default: none, Warren's init).
    pub security: Security,
    /// Its network: a fresh, empty network namespace unless the caller asks for the host's.
    pub network: Network,
    /// Mount a fresh tmpfs on `/tmp` (workspaces). Image build steps leave `/tmp` to the image, so
    /// that what a step writes there stays in its layer as it does with Docker.
    pub tmp_tmpfs: bool,
    /// Mount a tmpfs on `/run/secrets` (mode 0700) owned by this user (name or uid, resolved in
    /// the image), where the control plane writes the workspace's secret files.
    pub secrets_user: Option<String>,
    /// Bind-mount the host directory `<root>/<id>/agent/` (made by `create`, 0755 root)
    /// read-only at `/run/warren`: the control plane serves the workspace's agent socket there.
    /// Not under gVisor (runsc), whose sandbox cannot connect to a host socket: the directory is
    /// not mounted and in-workspace helpers find no socket.
    pub agent_dir: bool,
}

/// What a workspace may do beyond Warren's least-privilege sandbox, and what its init runs. The
/// default grants nothing extra. Deciding whether a workspace may have any of this is the control
/// plane's policy; the runtime only applies it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Security {
    /// Capabilities added to the default set (`CAP_SYS_PTRACE`...), for the init and every process.
    #[serde(default)]
    pub cap_add: Vec<String>,
    /// Every capability, no seccomp filter, no masked or read-only `/proc` paths, every device in the
    /// device cgroup, and setuid programs work (`no_new_privs` off). Host devices are still not mounted.
    #[serde(default)]
    pub privileged: bool,
    /// No seccomp filter (devcontainer `securityOpt: ["seccomp=unconfined"]`).
    #[serde(default)]
    pub seccomp_unconfined: bool,
    /// Run the command under a minimal init that forwards SIGTERM and reaps orphaned processes.
    #[serde(default)]
    pub init: bool,
    /// The init's command instead of Warren's sleeping init (the image's entrypoint and command, when
    /// devcontainer `overrideCommand` is false). The workspace stops when it exits.
    #[serde(default)]
    pub command: Option<Vec<String>>,
}

/// The network a workspace sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// A network namespace of its own with only loopback (the default).
    #[default]
    Isolated,
    /// The host's network namespace and `/etc/resolv.conf` (read-only). Only image builds that
    /// their caller trusts ask for this (e.g. `apt-get` in a host-local build).
    Host,
    /// A network namespace of its own with an address on Warren's bridge, NAT to the host's
    /// networks, Warren's resolver as `/etc/resolv.conf`, and the egress plan set with
    /// [`Runtime::set_egress`] enforced (nothing but the resolver until one is set).
    Egress,
}

/// A user-namespace mapping of container ids 0..size to host ids starting at host_uid/host_gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNamespace {
    /// First host uid.
    pub host_uid: u32,
    /// First host gid.
    pub host_gid: u32,
    /// Number of ids mapped.
    pub size: u32,
}

/// One mount into the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Kind of mount.
    pub kind: MountKind,
    /// Host path (bind) or volume name (volume); unused for tmpfs.
    pub source: Option<String>,
    /// Path inside the workspace.
    pub target: String,
    /// Mount read-only.
    pub read_only: bool,
}

/// Mount kinds a workspace understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    /// A host directory or file.
    Bind,
    /// A Warren-managed directory that lives as long as the workspace.
    Volume,
    /// A memory-backed filesystem.
    Tmpfs,
}

/// cgroup limits of a workspace.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (the OOM killer acts inside the workspace only).
    pub memory_bytes: Option<u64>,
    /// CPU limit in cores (quota over a 100 ms period).
    pub cpus: Option<f64>,
    /// Maximum number of tasks (default [`spec::DEFAULT_PIDS`]).
    pub pids: Option<i64>,
}

/// What is actually running for a workspace.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// No trace of the workspace on the host.
    Absent,
    /// Created (files on disk) but no supervisor runs; the last exit, if any.
    Stopped(Option<ExitRecord>),
    /// A supervisor runs the workspace.
    Running {
        /// Supervisor pid.
        supervisor_pid: Option<i32>,
    },
}

/// Errors from the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The workspace is not running.
    #[error("workspace is not running")]
    NotRunning,
    /// The workspace's supervisor could not start it.
    #[error("could not start workspace: {0}")]
    Start(String),
    /// A request to the supervisor failed.
    #[error("{0}")]
    Exec(String),
    /// The command asked for cannot be run (not found, not executable, a bad working
    /// directory).
    #[error("{0}")]
    Command(String),
    /// A host operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let what = what.into();
        move |source| RuntimeError::Io { what, source }
    }
}

/// Standard streams handed to a workspace process (an exec without a PTY, or the init).
pub struct Stdio {
    /// stdin.
    pub stdin: OwnedFd,
    /// stdout.
    pub stdout: OwnedFd,
    /// stderr.
    pub stderr: OwnedFd,
}

/// The workspace runtime seam: the native Linux runtime today; a Kubernetes or microVM provider later.
/// Every operation is idempotent.
pub trait Runtime: Send + Sync {
    /// Prepares the workspace on the host (directories, bundle, volumes). Does not start it.
    fn create(&self, spec: &WorkspaceSpec) -> Result<(), RuntimeError>;
    /// Starts the workspace (its supervisor and init); a running workspace is left as it is.
    fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Starts a process in the running workspace. `stdio` is required unless `process.tty` is set.
    fn exec(
        &self,
        id: &str,
        process: &ExecProcess,
        stdio: Option<Stdio>,
    ) -> Result<ExecSession, RuntimeError>;
    /// Stops the workspace (SIGTERM, then SIGKILL after `grace`). Stopped workspaces are left alone.
    fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Removes everything the workspace has on the host: processes, cgroups, mounts, volumes, files.
    fn destroy(&self, id: &str) -> Result<(), RuntimeError>;
    /// What is running for the workspace.
    fn inspect(&self, id: &str) -> Result<Observed, RuntimeError>;
    /// Resource usage.
    fn stats(&self, id: &str) -> Result<Stats, RuntimeError>;
    /// Ids of every workspace with anything on the host (to find orphans).
    fn list(&self) -> Result<Vec<String>, RuntimeError>;
    /// The host directory holding the workspace's writable layer (its overlay upper directory),
    /// for image builds that turn a stopped build sandbox's changes into a layer. Read it only
    /// while the workspace is stopped; it is removed by `destroy`.
    fn upper_dir(&self, id: &str) -> Result<PathBuf, RuntimeError> {
        let _ = id;
        Err(RuntimeError::Exec(
            "this runtime cannot hand out a workspace's writable layer".into(),
        ))
    }
    /// An unconnected, non-blocking TCP socket inside the running workspace's network namespace,
    /// for the caller to connect to a port there (port forwarding, preview URLs). Which addresses
    /// it may connect to is the caller's policy.
    fn tcp_socket(&self, id: &str, ipv6: bool) -> Result<OwnedFd, RuntimeError> {
        let _ = (id, ipv6);
        Err(RuntimeError::Exec(
            "this runtime cannot reach a workspace's ports".into(),
        ))
    }
    /// Sets what the workspace may reach (stored with it; applied at once when it runs, so the next
    /// connection and the next name resolved follow it).
    fn set_egress(&self, id: &str, plan: &network::EgressPlan) -> Result<(), RuntimeError> {
        let _ = (id, plan);
        Err(RuntimeError::Exec(
            "this runtime cannot enforce network policies".into(),
        ))
    }
    /// The workspace's address on Warren's network, if it has one (no counters read).
    fn address(&self, id: &str) -> Option<std::net::Ipv4Addr> {
        let _ = id;
        None
    }
    /// The workspace's address on Warren's network and its counters; `None` without one.
    fn attachment(
        &self,
        id: &str,
    ) -> Result<Option<(network::Attachment, network::NetCounters)>, RuntimeError> {
        let _ = id;
        Ok(None)
    }
    /// Removes what the host network keeps for workspaces that are not running (rules, veths) or
    /// not in `live` any more (their addresses): for the control plane's reconciler, after
    /// supervisors died without cleaning up.
    fn gc_network(&self, live: &[String]) -> Result<(), RuntimeError> {
        let _ = live;
        Ok(())
    }
    /// Denial journal records after position `after` (0: the start), and the position to ask from
    /// next time.
    fn denials(&self, after: u64) -> Result<(Vec<network::Denial>, u64), RuntimeError> {
        Ok((Vec::new(), after))
    }
    /// The TCP ports listened on inside the running workspace.
    fn listening_ports(&self, id: &str) -> Result<Vec<ListeningPort>, RuntimeError> {
        let _ = id;
        Err(RuntimeError::Exec(
            "this runtime cannot list a workspace's ports".into(),
        ))
    }
}
