//! RUN steps: a transient workspace made of the parent image's layers and an empty upper
//! directory, driven through the [`Runtime`] trait like any workspace (the builder never forks
//! a container). The command's output goes to the build log; once it has exited the sandbox is
//! stopped, its upper directory becomes the step's layer, and the sandbox is destroyed, on
//! failure too.
//!
//! Each sandbox is flocked (`<work>/locks/<id>.lock`) for as long as its build uses it; a
//! sandbox whose lock is free belongs to a build that died, and the next build removes it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use rustix::fs::FlockOperation;
use warren_runtime::{ExecProcess, Limits, Network, Runtime, RuntimeError, Stdio, WorkspaceSpec};

use crate::view::LayerView;

/// Paths the runtime may create as mount points in a sandbox's root; they are dropped from the
/// layer when the parent image did not have them and they are still empty.
const MOUNT_STUBS: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
    "etc",
];

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A build sandbox's id: `build-<pid>-<n>-<nanos>`, unique on the host.
fn new_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "build-{:x}-{}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos & 0xffff_ffff
    )
}

fn lock_file(path: &Path, op: FlockOperation) -> io::Result<Option<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match rustix::fs::flock(&f, op) {
        Ok(()) => Ok(Some(f)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes the sandboxes of builds that died (their lock is free).
pub fn clean_stale(rt: &dyn Runtime, work: &Path) {
    let locks = work.join("locks");
    let Ok(ids) = rt.list() else { return };
    for id in ids.into_iter().filter(|i| i.starts_with("build-")) {
        let path = locks.join(format!("{id}.lock"));
        if let Ok(Some(_held)) = lock_file(&path, FlockOperation::NonBlockingLockExclusive) {
            if rt.destroy(&id).is_ok() {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

/// Removes staging and download directories that builds which died left in `work` (older than
/// six hours, so that running builds keep theirs).
pub fn clean_stale_dirs(work: &Path) {
    let Ok(rd) = fs::read_dir(work) else { return };
    let now = SystemTime::now();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("staging-") || name.starts_with("tmp-")) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > Duration::from_secs(6 * 3600));
        if old {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// A sandbox being used; destroyed when dropped.
struct Sandbox<'a> {
    rt: &'a dyn Runtime,
    id: String,
    lock_path: PathBuf,
    _lock: File,
}

impl Drop for Sandbox<'_> {
    fn drop(&mut self) {
        let _ = self.rt.destroy(&self.id);
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// What a RUN needs.
pub struct RunSpec<'a> {
    /// Parent layers, bottom first.
    pub layers: Vec<PathBuf>,
    /// The image's environment.
    pub env: Vec<String>,
    /// Build arguments in scope that ENV does not override, as `KEY=VALUE`.
    pub extra_env: Vec<String>,
    /// argv.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// `USER`, if set.
    pub user: Option<String>,
    /// Network of the sandbox.
    pub network: Network,
    /// The parent image, to tell mount stubs from real content.
    pub view: &'a LayerView,
}

/// Outcome of a RUN.
pub enum RunOutcome {
    /// Exited 0; the upper directory was handed to `capture`, whose result this is.
    Done(Option<warren_image::LayerRef>),
    /// Exited with this code.
    Failed(i32),
}

/// Runs one RUN step; `capture` turns the stopped sandbox's upper directory into a layer.
pub fn run(
    rt: &dyn Runtime,
    work: &Path,
    spec: &RunSpec<'_>,
    log: &mut (dyn Write + Send),
    capture: &dyn Fn(&Path) -> Result<Option<warren_image::LayerRef>, String>,
) -> Result<RunOutcome, String> {
    let id = new_id();
    let locks = work.join("locks");
    fs::create_dir_all(&locks).map_err(|e| format!("create {}: {e}", locks.display()))?;
    let lock_path = locks.join(format!("{id}.lock"));
    let lock = lock_file(&lock_path, FlockOperation::LockExclusive)
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?
        .ok_or("build sandbox lock is taken")?;
    let sandbox = Sandbox {
        rt,
        id: id.clone(),
        lock_path,
        _lock: lock,
    };
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    let ws = WorkspaceSpec {
        id: id.clone(),
        hostname: "warren-build".into(),
        layers: spec.layers.clone(),
        env,
        mounts: vec![],
        home_user: None,
        container_user: None,
        limits: Limits::default(),
        user_namespace: None,
        network: spec.network,
        tmp_tmpfs: false,
        secrets_user: None,
        agent_dir: false,
        // Build steps get the default sandbox: no added privileges, Warren's own init.
        security: Default::default(),
    };
    let rt_err = |e: RuntimeError| format!("build sandbox: {e}");
    rt.create(&ws).map_err(rt_err)?;
    rt.start(&id).map_err(rt_err)?;
    let (reader, writer) = io::pipe().map_err(|e| format!("pipe: {e}"))?;
    let writer: OwnedFd = writer.into();
    let stdio = Stdio {
        stdin: File::open("/dev/null")
            .map_err(|e| format!("open /dev/null: {e}"))?
            .into(),
        stdout: writer.try_clone().map_err(|e| format!("dup: {e}"))?,
        stderr: writer,
    };
    let process = ExecProcess {
        argv: spec.argv.clone(),
        env: spec.extra_env.clone(),
        cwd: Some(spec.cwd.clone()),
        user: spec.user.clone(),
        tty: None,
        detach: false,
        login_shell: false,
    };
    let code = std::thread::scope(|s| -> Result<i32, String> {
        let pump = s.spawn(move || {
            let mut reader = reader;
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let _ = log.write_all(&buf[..n]);
                        let _ = log.flush();
                    }
                }
            }
        });
        let result = rt
            .exec(&id, &process, Some(stdio))
            .map_err(rt_err)
            .and_then(|session| session.wait().map_err(rt_err));
        // Stopping kills whatever the command left running, which closes the pipe.
        let stopped = rt.stop(&id, Duration::from_secs(2)).map_err(rt_err);
        let _ = pump.join();
        stopped?;
        result
    })?;
    if code != 0 {
        return Ok(RunOutcome::Failed(code));
    }
    let upper = rt.upper_dir(&id).map_err(rt_err)?;
    drop_mount_stubs(&upper, spec.view);
    let layer = capture(&upper)?;
    drop(sandbox);
    Ok(RunOutcome::Done(layer))
}

/// Removes from `upper` the empty mount points the runtime created that the image lacks.
fn drop_mount_stubs(upper: &Path, view: &LayerView) {
    for stub in MOUNT_STUBS {
        let p = upper.join(stub);
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue;
        };
        let comps: Vec<String> = stub.split('/').map(str::to_string).collect();
        if view.lookup(&comps).is_some() {
            continue;
        }
        if m.is_dir() {
            let _ = fs::remove_dir(&p);
        } else if m.is_file() && m.size() == 0 {
            let _ = fs::remove_file(&p);
        }
    }
}
