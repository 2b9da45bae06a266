//! The reconciler: makes recorded state and the host agree. Safe to run at any time and any number of
//! times: it skips workspaces whose operation lock is held (someone is working on them), finishes or
//! rolls back operations whose process died (a transitional state with a free lock), records workspaces
//! whose init died, and removes whatever the host has that no record owns.

use std::time::Duration;

use warren_api::{Event, WorkspaceState};
use warren_runtime::Observed;

use crate::lock::OpLock;
use crate::{blocking, Engine, EngineError};

/// What one reconciliation pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReconcileReport {
    /// Workspaces marked failed because their init or their starter died.
    pub failed: Vec<String>,
    /// Interrupted stops completed.
    pub stopped: Vec<String>,
    /// Interrupted deletes completed.
    pub deleted: Vec<String>,
    /// Host leftovers (ids) with no record, removed.
    pub orphans_removed: Vec<String>,
}

impl Engine {
    /// One reconciliation pass.
    pub async fn reconcile(&self) -> Result<ReconcileReport, EngineError> {
        let mut report = ReconcileReport::default();
        let records = self.store.list().await?;
        for rec in &records {
            let Some(_lock) = OpLock::try_acquire(&self.lock_dir(), &rec.id)? else {
                continue;
            };
            // Re-read under the lock: the record may have moved on since the listing.
            let Some(rec) = self.store.get(&rec.id).await? else {
                continue;
            };
            let rt = self.runtime.clone();
            let id = rec.id.clone();
            let observed = blocking(move || Ok(rt.inspect(&id)?)).await?;
            let running = matches!(observed, Observed::Running { .. });
            let name = rec.name.to_string();
            match rec.state {
                WorkspaceState::Running if !running => {
                    let why = match &observed {
                        Observed::Stopped(Some(exit)) => {
                            format!("the workspace init exited with code {}", exit.code)
                        }
                        _ => "the workspace's supervisor is gone".to_string(),
                    };
                    // Whatever the dead supervisor left running (found through the cgroup) goes too.
                    let rt = self.runtime.clone();
                    let id = rec.id.clone();
                    blocking(move || Ok(rt.stop(&id, Duration::from_secs(2))?)).await?;
                    let r = self
                        .store
                        .apply(&rec.id, rec.generation, Event::Exited, Some(&why))
                        .await?
                        .0;
                    self.store
                        .set_last_error(&r.id, r.generation, Some(&why))
                        .await?;
                    report.failed.push(name);
                }
                WorkspaceState::Pending | WorkspaceState::Starting => {
                    // The process that was creating or starting it died: roll back to a clean, failed state.
                    let rt = self.runtime.clone();
                    let id = rec.id.clone();
                    blocking(move || Ok(rt.stop(&id, Duration::from_secs(2))?)).await?;
                    let why =
                        "interrupted while starting; `warren up` or `warren start` tries again";
                    let r = self
                        .store
                        .apply(&rec.id, rec.generation, Event::Fail, Some(why))
                        .await?
                        .0;
                    self.store
                        .set_last_error(&r.id, r.generation, Some(why))
                        .await?;
                    report.failed.push(name);
                }
                WorkspaceState::Stopping => {
                    let rt = self.runtime.clone();
                    let id = rec.id.clone();
                    blocking(move || Ok(rt.stop(&id, Duration::from_secs(2))?)).await?;
                    self.store
                        .apply(&rec.id, rec.generation, Event::Stopped, None)
                        .await?;
                    report.stopped.push(name);
                }
                WorkspaceState::Stopped | WorkspaceState::Failed if running => {
                    let rt = self.runtime.clone();
                    let id = rec.id.clone();
                    blocking(move || Ok(rt.stop(&id, Duration::from_secs(2))?)).await?;
                    report.stopped.push(name);
                }
                WorkspaceState::Deleting => {
                    self.teardown(rec).await?;
                    report.deleted.push(name);
                }
                WorkspaceState::Deleted => {
                    self.store.delete_record(&rec.id).await?;
                    report.deleted.push(name);
                }
                _ => {}
            }
        }
        // Host leftovers no record owns: a crash between removing the record and the host state, or
        // files from an old installation. A record is always written before anything on the host.
        let known: Vec<String> = self.store.list().await?.into_iter().map(|r| r.id).collect();
        let rt = self.runtime.clone();
        let on_host = blocking(move || Ok(rt.list()?)).await?;
        for id in on_host.into_iter().filter(|id| !known.contains(id)) {
            let rt = self.runtime.clone();
            let id2 = id.clone();
            blocking(move || Ok(rt.destroy(&id2)?)).await?;
            report.orphans_removed.push(id);
        }
        Ok(report)
    }
}
