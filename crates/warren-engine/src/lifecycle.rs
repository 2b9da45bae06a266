//! Runs devcontainer lifecycle commands inside a workspace: string (shell), array (argv) and object
//! (named, in parallel, all must succeed) forms, as the remote user, with output kept in the log.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use warren_devcontainer::LifecycleCommand;
use warren_runtime::{ExecProcess, ExecSession, Runtime, Stdio};

use crate::{EngineError, Progress, WsSpec};

/// Which once-only lifecycle steps have completed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LifecycleState {
    /// onCreateCommand and postCreateCommand have completed (they never run again).
    #[serde(default)]
    pub created: bool,
}

impl LifecycleState {
    /// Parses the stored JSON (an empty or unreadable document means nothing ran).
    pub fn from_json(s: &str) -> LifecycleState {
        serde_json::from_str(s).unwrap_or_default()
    }

    /// The stored form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

fn argv(c: &LifecycleCommand) -> Vec<String> {
    match c {
        LifecycleCommand::Shell(s) => vec!["/bin/sh".into(), "-c".into(), s.clone()],
        LifecycleCommand::Exec(v) => v.clone(),
        LifecycleCommand::Parallel(_) => vec![],
    }
}

/// Runs one lifecycle command to completion; any non-zero exit is an error naming the command.
pub async fn run(
    rt: Arc<dyn Runtime>,
    id: &str,
    spec: &WsSpec,
    what: &str,
    cmd: &LifecycleCommand,
    log: &Path,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    let parts: Vec<(String, Vec<String>)> = match cmd {
        LifecycleCommand::Parallel(items) => items
            .iter()
            .map(|(name, c)| (format!("{what}:{name}"), argv(c)))
            .collect(),
        c => vec![(what.to_string(), argv(c))],
    };
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| EngineError::Internal(format!("create log dir: {e}")))?;
    }
    let mut logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| EngineError::Internal(format!("open log {}: {e}", log.display())))?;
    let _ = writeln!(logf, "== {what}");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut tasks = Vec::new();
    let parallel = parts.len() > 1;
    for (label, argv) in parts {
        let mut p = ExecProcess {
            argv,
            ..Default::default()
        };
        spec.apply_exec_defaults(&mut p);
        let rt = rt.clone();
        let id = id.to_string();
        let tx = tx.clone();
        tasks.push(tokio::task::spawn_blocking(
            move || -> Result<(String, i32), EngineError> {
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                    .map_err(|e| EngineError::Internal(format!("pipe: {e}")))?;
                let w2 = w
                    .try_clone()
                    .map_err(|e| EngineError::Internal(format!("dup: {e}")))?;
                let stdin = std::fs::File::open("/dev/null")
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
                let session = rt.exec(
                    &id,
                    &p,
                    Some(Stdio {
                        stdin: stdin.into(),
                        stdout: w,
                        stderr: w2,
                    }),
                )?;
                let emit = |line: &[u8]| {
                    let line = String::from_utf8_lossy(line);
                    let _ = tx.send(if parallel {
                        format!("[{label}] {line}")
                    } else {
                        line.into_owned()
                    });
                };
                let code = collect_output(session, r, emit)?;
                Ok((label, code))
            },
        ));
    }
    drop(tx);
    while let Some(line) = rx.recv().await {
        let _ = writeln!(logf, "{line}");
        progress.output(&line);
    }
    let mut failed = None;
    for t in tasks {
        let (label, code) = t
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??;
        if code != 0 && failed.is_none() {
            failed = Some((label, code));
        }
    }
    match failed {
        None => Ok(()),
        Some((label, code)) => {
            let _ = writeln!(logf, "== {label} failed with exit code {code}");
            Err(EngineError::Lifecycle {
                what: label,
                code,
                log: log.to_path_buf(),
            })
        }
    }
}

/// How long output is still collected after a lifecycle command exits (background processes it
/// started may keep the pipe open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);

/// Forwards the command's output line by line (any bytes, shown lossily) until it has exited and its
/// output is drained; returns its exit code.
fn collect_output(
    session: ExecSession,
    out: OwnedFd,
    mut emit: impl FnMut(&[u8]),
) -> Result<i32, EngineError> {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(session.wait());
    });
    let mut file = std::fs::File::from(out);
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let mut exited = None;
    let mut drain_until = None;
    loop {
        let mut fds = [nix::poll::PollFd::new(
            file.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ready = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(50u16)).unwrap_or(0) > 0;
        if ready {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                        emit(&pending[..i]);
                        pending.drain(..=i);
                    }
                }
            }
        }
        if exited.is_none() {
            if let Ok(r) = done_rx.try_recv() {
                exited = Some(r);
                drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
        }
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    if !pending.is_empty() {
        emit(&pending);
    }
    let r = match exited {
        Some(r) => r,
        None => done_rx
            .recv()
            .map_err(|_| EngineError::Internal("lost the command's exit status".into()))?,
    };
    Ok(r?)
}
