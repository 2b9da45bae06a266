//! Runs devcontainer lifecycle commands inside a workspace: string (shell), array (argv) and object
//! (named, in parallel, all must succeed) forms, as the remote user, with output kept in the log.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warren_devcontainer::LifecycleCommand;
use warren_runtime::{ExecProcess, Runtime, Stdio};

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
///
/// The command's stdout and stderr are the log file itself (opened for appending), not a pipe to this
/// process: daemons a command leaves running keep a valid output after `warren` exits, and their
/// output lands in `warren logs`. Progress shows what the log gains while the command runs.
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
    let io =
        |e: std::io::Error| EngineError::Internal(format!("lifecycle log {}: {e}", log.display()));
    if let Some(parent) = log.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let mut logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io)?;
    let names: Vec<&str> = parts.iter().map(|(l, _)| l.as_str()).collect();
    if parts.len() > 1 {
        writeln!(logf, "== {what} (in parallel: {})", names.join(", ")).map_err(io)?;
    } else {
        writeln!(logf, "== {what}").map_err(io)?;
    }
    let mut tail = std::fs::File::open(log).map_err(io)?;
    tail.seek(SeekFrom::Start(logf.metadata().map_err(io)?.len()))
        .map_err(io)?;
    let mut tasks = Vec::new();
    for (label, argv) in parts {
        let mut p = ExecProcess {
            argv,
            ..Default::default()
        };
        spec.apply_exec_defaults(&mut p);
        let rt = rt.clone();
        let id = id.to_string();
        let out = logf.try_clone().map_err(io)?;
        let err = logf.try_clone().map_err(io)?;
        tasks.push(tokio::task::spawn_blocking(
            move || -> Result<(String, i32), EngineError> {
                let stdin = std::fs::File::open("/dev/null")
                    .map_err(|e| EngineError::Internal(e.to_string()))?;
                let session = rt.exec(
                    &id,
                    &p,
                    Some(Stdio {
                        stdin: stdin.into(),
                        stdout: out.into(),
                        stderr: err.into(),
                    }),
                )?;
                Ok((label, session.wait()?))
            },
        ));
    }
    let mut pending = Vec::new();
    loop {
        let done = tasks.iter().all(|t| t.is_finished());
        forward_new_lines(&mut tail, &mut pending, progress);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if !pending.is_empty() {
        progress.output(&String::from_utf8_lossy(&pending));
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

/// Shows the complete lines the log gained since the last call (any bytes, shown lossily).
fn forward_new_lines(tail: &mut std::fs::File, pending: &mut Vec<u8>, progress: &dyn Progress) {
    // Read what is new in bounded chunks: a command printing gigabytes without a newline must not
    // make the control plane hold them.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match tail.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            progress.output(&String::from_utf8_lossy(&pending[..i]));
            pending.drain(..=i);
        }
        if pending.len() > MAX_PENDING {
            progress.output(&String::from_utf8_lossy(pending));
            pending.clear();
        }
    }
}

/// The longest partial line kept while waiting for its newline.
const MAX_PENDING: usize = 64 * 1024;
