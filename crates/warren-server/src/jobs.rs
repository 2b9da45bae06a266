//! Jobs: workspace transitions run in the background, each with a status, timestamps and a log
//! (like Coder's builds). The database allows one active job per workspace, so a concurrent
//! conflicting request gets 409 and state stays consistent. A job's log is a file under
//! `STATE/jobs/` and a broadcast channel for followers (Server-Sent Events).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::broadcast;
use warren_engine::{EngineError, Progress};
use warren_store::JobRecord;

use crate::app::AppState;
use crate::error::{tracing_log, ApiError};

/// Longest line kept in a job log (longer ones are cut).
const MAX_LINE: usize = 16 * 1024;

/// Largest job log kept (later lines are dropped).
const MAX_LOG: u64 = 16 << 20;

/// Kinds of jobs.
pub const KINDS: [&str; 6] = ["create", "start", "stop", "restart", "delete", "update"];

struct Running {
    abort: tokio::task::AbortHandle,
    log: broadcast::Sender<(u64, String)>,
}

/// The jobs this server process runs.
pub struct Jobs {
    dir: PathBuf,
    running: Mutex<HashMap<String, Running>>,
}

/// Sends an engine's progress to the job's log file and followers.
pub struct JobLog {
    /// The file, the number of lines written so far, and their bytes.
    file: Mutex<(std::fs::File, u64, u64)>,
    tx: broadcast::Sender<(u64, String)>,
}

impl JobLog {
    /// Appends one line (numbered, so followers can skip what they already read from the file).
    fn line(&self, line: &str) {
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        for l in line.split('\n') {
            let l = if l.len() > MAX_LINE {
                let mut end = MAX_LINE;
                while !l.is_char_boundary(end) {
                    end -= 1;
                }
                &l[..end]
            } else {
                l
            };
            if f.2 > MAX_LOG {
                continue;
            }
            f.2 += l.len() as u64 + 1;
            let l = if f.2 > MAX_LOG {
                "... (log truncated: it reached its size limit)"
            } else {
                l
            };
            let _ = writeln!(f.0, "{l}");
            let seq = f.1;
            f.1 += 1;
            let _ = self.tx.send((seq, l.to_string()));
        }
    }
}

impl Progress for JobLog {
    fn step(&self, msg: &str) {
        self.line(&format!("==> {msg}"));
    }
    fn warn(&self, msg: &str) {
        self.line(&format!("warning: {msg}"));
    }
    fn output(&self, line: &str) {
        self.line(line);
    }
}

impl Jobs {
    /// Jobs logging under `dir`.
    pub fn new(dir: PathBuf) -> Jobs {
        Jobs {
            dir,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The log file of a job.
    pub fn log_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.log"))
    }

    /// Subscribes to a running job's log lines (None once it finished).
    pub fn follow(&self, id: &str) -> Option<broadcast::Receiver<(u64, String)>> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|r| r.log.subscribe())
    }

    /// Number of jobs running in this process.
    pub fn active(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    fn finish(&self, id: &str) -> Option<Running> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }

    /// Waits (up to `grace`) for running jobs to finish: for graceful shutdown.
    pub async fn drain(&self, grace: std::time::Duration) {
        let t0 = Instant::now();
        while self.active() > 0 && t0.elapsed() < grace {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// Records a job for the workspace (409 if it already has an active one) and runs `op` in the
/// background with the job's log as its progress sink.
pub async fn spawn<F, Fut>(
    state: &AppState,
    workspace_id: &str,
    kind: &'static str,
    initiator: Option<&str>,
    reason: warren_api::policy::Reason,
    op: F,
) -> Result<JobRecord, ApiError>
where
    F: FnOnce(AppState, Arc<JobLog>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), EngineError>> + Send + 'static,
{
    let job = state
        .store
        .create_job(workspace_id, kind, initiator)
        .await
        .map_err(|e| {
            ApiError::from(e)
                .hint("wait for it (`warren logs --job`) or cancel it (`warren cancel`)")
        })?;
    // The one active job owns the workspace: its reason and initiator are what the transitions
    // it makes report (events, the stop reason).
    if let Err(e) = state
        .store
        .set_op(workspace_id, reason.as_str(), initiator)
        .await
    {
        let _ = state
            .store
            .job_finished(&job.id, "failed", Some("cannot record the job's reason"))
            .await;
        return Err(e.into());
    }
    let opened = std::fs::create_dir_all(&state.jobs.dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.jobs.log_path(&job.id))
    });
    let file = match opened {
        Ok(f) => f,
        Err(e) => {
            // Never leave the workspace busy with a job that will not run.
            let _ = state
                .store
                .job_finished(&job.id, "failed", Some("cannot write the job log"))
                .await;
            return Err(ApiError::internal(e));
        }
    };
    let (tx, _) = broadcast::channel(1024);
    let log = Arc::new(JobLog {
        file: Mutex::new((file, 0, 0)),
        tx: tx.clone(),
    });
    let st = state.clone();
    let id = job.id.clone();
    // Registered before the task runs, so the task's own `finish` always finds it.
    let (start_tx, start_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        let _ = start_rx.await;
        let _ = st.store.job_started(&id).await;
        let t0 = Instant::now();
        let res = op(st.clone(), log.clone()).await;
        let ok = res.is_ok();
        let hint = res.as_ref().err().and_then(EngineError::hint);
        let err = res.err().map(|e| e.to_string());
        if let Some(e) = &err {
            log.line(&format!("error: {e}"));
        }
        if let Some(h) = &hint {
            log.line(&format!("hint: {h}"));
        }
        st.metrics.transition(kind, t0.elapsed(), ok);
        let status = if ok { "succeeded" } else { "failed" };
        if let Err(e) = st.store.job_finished(&id, status, err.as_deref()).await {
            tracing_log(&format!("job {id}: cannot record its end: {e}"));
        }
        st.jobs.finish(&id);
    });
    state
        .jobs
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(
            job.id.clone(),
            Running {
                abort: handle.abort_handle(),
                log: tx,
            },
        );
    let _ = start_tx.send(());
    Ok(job)
}

/// Cancels an active job: stops its task, records it canceled, and settles the workspace (a
/// create or start is stopped and marked failed; a stop or delete is finished).
pub async fn cancel(
    state: &AppState,
    job: &JobRecord,
    by: &str,
    reason: Option<warren_api::policy::Reason>,
) -> Result<JobRecord, ApiError> {
    let already = || {
        ApiError::new(
            axum::http::StatusCode::CONFLICT,
            warren_api::ErrorCode::InvalidState,
            format!("job {} already finished or is being canceled", job.id),
        )
    };
    if !job.is_active() {
        return Err(already());
    }
    // `canceling` keeps the job active, so nothing else starts on the workspace until it is
    // settled, and the job's own completion can no longer record an outcome.
    if !state.store.job_canceling(&job.id).await? {
        return Err(already());
    }
    // The cancel is ours now: the transitions that settle the workspace report its reason.
    if let Some(r) = reason {
        state
            .store
            .set_op(&job.workspace_id, r.as_str(), None)
            .await?;
    }
    if let Some(r) = state.jobs.finish(&job.id) {
        r.abort.abort();
    }
    let why = format!("{} canceled by {by}", job.kind);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .open(state.jobs.log_path(&job.id))
    {
        let _ = writeln!(f, "==> {why}");
    }
    state
        .metrics
        .transition(job.kind.as_str(), std::time::Duration::ZERO, false);
    let settled = state.engine.abandon(&job.workspace_id, &why).await;
    state.store.job_canceled(&job.id, &why).await?;
    settled?;
    Ok(state
        .store
        .job(&job.id)
        .await?
        .unwrap_or_else(|| job.clone()))
}
