//! Runs devcontainer lifecycle commands inside a workspace: string (shell), array (argv) and object
//! (named, in parallel, all must succeed) forms, as the remote user, with output kept in the log.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Arc;

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
                for line in BufReader::new(std::fs::File::from(r)).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(if parallel {
                        format!("[{label}] {line}")
                    } else {
                        line
                    });
                }
                Ok((label, session.wait()?))
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
