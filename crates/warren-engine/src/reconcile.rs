//! The reconciler: makes recorded state and the host agree. Safe to run at any time and any number of
//! times: it skips workspaces whose operation lock is held (someone is working on them), finishes or
//! rolls back operations whose process died (a transitional state with a free lock), records workspaces
//! whose init died, and removes whatever the host has that no record owns. A workspace it cannot fix
//! is reported and skipped: one broken workspace never blocks the others.

use std::time::Duration;

use warren_api::{Event, WorkspaceState};
use warren_runtime::Observed;
use warren_store::WorkspaceRecord;

use crate::lock::OpLock;
use crate::{blocking, Engine, EngineError};

/// Grace period the reconciler gives workspaces it stops.
const RECONCILE_GRACE: Duration = Duration::from_secs(2);

/// How long a Pending record may wait for its creator before the reconciler calls it interrupted.
const PENDING_GRACE: Duration = Duration::from_secs(60);

/// Whether the RFC 3339 timestamp `at` is more than `age` ago (unreadable timestamps count as old).
fn older_than(at: &str, age: Duration) -> bool {
    match time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339) {
        Ok(t) => time::OffsetDateTime::now_utc() - t > age,
        Err(_) => true,
    }
}

/// What one reconciliation pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReconcileReport {
    /// Workspaces marked failed because their init or their starter died.
    pub failed: Vec<String>,
    /// Interrupted stops completed, or stray containers of stopped workspaces stopped.
    pub stopped: Vec<String>,
    /// Interrupted deletes completed.
    pub deleted: Vec<String>,
    /// Host leftovers (ids) with no record, removed.
    pub orphans_removed: Vec<String>,
    /// Workspaces that could not be reconciled this pass, with why.
    pub errors: Vec<(String, String)>,
}

enum Outcome {
    Nothing,
    Failed,
    Stopped,
    Deleted,
}

impl Engine {
    /// One reconciliation pass.
    pub async fn reconcile(&self) -> Result<ReconcileReport, EngineError> {
        let mut report = ReconcileReport::default();
        for rec in self.store.list().await? {
            let name = rec.name.to_string();
            match self.reconcile_one(&rec).await {
                Ok(Outcome::Nothing) => {}
                Ok(Outcome::Failed) => report.failed.push(name),
                Ok(Outcome::Stopped) => report.stopped.push(name),
                Ok(Outcome::Deleted) => report.deleted.push(name),
                Err(e) => report.errors.push((name, e.to_string())),
            }
        }
        // Host leftovers no record owns: a crash between removing the record and the host state, or
        // files from an old installation. A record is always written before anything on the host, and
        // the host side is only created under the operation lock, so an id whose lock is free and which
        // has no record (checked under that lock) is an orphan.
        let rt = self.runtime.clone();
        for id in blocking(move || Ok(rt.list()?)).await? {
            let Some(_lock) = OpLock::try_acquire(&self.lock_dir(), &id)? else {
                continue;
            };
            if self.store.get(&id).await?.is_some() {
                continue;
            }
            let rt = self.runtime.clone();
            let id2 = id.clone();
            match blocking(move || Ok(rt.destroy(&id2)?)).await {
                Ok(()) => {
                    crate::lock::remove(&self.lock_dir(), &id);
                    report.orphans_removed.push(id);
                }
                Err(e) => report.errors.push((id, e.to_string())),
            }
        }
        // Network state of workspaces that are gone or stopped (a crashed supervisor's rules).
        if let Err(e) = self.gc_network().await {
            report.errors.push(("network".into(), e.to_string()));
        }
        // Refused connections and names become events.
        if let Err(e) = self.ingest_denials().await {
            report
                .errors
                .push(("network denials".into(), e.to_string()));
        }
        Ok(report)
    }

    async fn stop_container(&self, id: &str) -> Result<(), EngineError> {
        let rt = self.runtime.clone();
        let id = id.to_string();
        blocking(move || Ok(rt.stop(&id, RECONCILE_GRACE)?)).await
    }

    /// Gives up on a workspace's interrupted operation (a canceled job): a workspace being created
    /// or started, or running without having finished its lifecycle commands, is stopped and
    /// marked failed with `why`; one being stopped or deleted has that finished. Waits for the
    /// operation lock, which the canceled operation released.
    pub async fn abandon(&self, id: &str, why: &str) -> Result<(), EngineError> {
        let _lock = OpLock::acquire(&self.lock_dir(), id).await?;
        let Some(rec) = self.store.get(id).await? else {
            return Ok(());
        };
        match rec.state {
            WorkspaceState::Pending | WorkspaceState::Starting | WorkspaceState::Running => {
                self.stop_container(&rec.id).await?;
                let r = self
                    .store
                    .apply(&rec.id, rec.generation, Event::Fail, Some(why))
                    .await?
                    .0;
                self.store
                    .set_last_error(&r.id, r.generation, Some(why))
                    .await?;
            }
            WorkspaceState::Stopping => {
                self.stop_container(&rec.id).await?;
                self.store
                    .apply(&rec.id, rec.generation, Event::Stopped, None)
                    .await?;
            }
            WorkspaceState::Deleting => self.teardown(rec).await?,
            _ => {}
        }
        Ok(())
    }

    async fn reconcile_one(&self, listed: &WorkspaceRecord) -> Result<Outcome, EngineError> {
        let Some(_lock) = OpLock::try_acquire(&self.lock_dir(), &listed.id)? else {
            return Ok(Outcome::Nothing);
        };
        // Re-read under the lock: the record may have moved on since the listing.
        let Some(rec) = self.store.get(&listed.id).await? else {
            return Ok(Outcome::Nothing);
        };
        let rt = self.runtime.clone();
        let id = rec.id.clone();
        let observed = blocking(move || Ok(rt.inspect(&id)?)).await?;
        let running = matches!(observed, Observed::Running { .. });
        let record_failure = |event: Event, why: String| {
            let rec = rec.clone();
            async move {
                let r = self
                    .store
                    .apply(&rec.id, rec.generation, event, Some(&why))
                    .await?
                    .0;
                self.store
                    .set_last_error(&r.id, r.generation, Some(&why))
                    .await?;
                Ok::<Outcome, EngineError>(Outcome::Failed)
            }
        };
        match rec.state {
            WorkspaceState::Running if !running => {
                let why = match &observed {
                    Observed::Stopped(Some(exit)) => {
                        format!("the workspace init exited with code {}", exit.code)
                    }
                    _ => "the workspace's supervisor is gone".to_string(),
                };
                // Whatever the dead supervisor left running (found through the cgroup) goes too.
                self.stop_container(&rec.id).await?;
                record_failure(Event::Exited, why).await
            }
            // A Pending record has nothing on the host yet, and its creator takes the lock only just
            // after writing it: leave young ones to their creator.
            WorkspaceState::Pending if !older_than(&rec.updated_at, PENDING_GRACE) => {
                Ok(Outcome::Nothing)
            }
            WorkspaceState::Pending | WorkspaceState::Starting => {
                // The process that was creating or starting it died: roll back to a clean, failed state.
                self.stop_container(&rec.id).await?;
                let why = "interrupted while starting; `warren up` or `warren start` tries again";
                record_failure(Event::Fail, why.to_string()).await
            }
            WorkspaceState::Stopping => {
                self.stop_container(&rec.id).await?;
                self.store
                    .apply(&rec.id, rec.generation, Event::Stopped, None)
                    .await?;
                Ok(Outcome::Stopped)
            }
            WorkspaceState::Stopped | WorkspaceState::Failed if running => {
                self.stop_container(&rec.id).await?;
                Ok(Outcome::Stopped)
            }
            WorkspaceState::Deleting => {
                self.teardown(rec).await?;
                Ok(Outcome::Deleted)
            }
            WorkspaceState::Deleted => {
                self.store.delete_record(&rec.id).await?;
                Ok(Outcome::Deleted)
            }
            _ => Ok(Outcome::Nothing),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_or_unreadable_timestamps_are_old() {
        let now = time::OffsetDateTime::now_utc();
        let fmt = |t: time::OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        assert!(!older_than(&fmt(now), PENDING_GRACE));
        assert!(older_than(
            &fmt(now - Duration::from_secs(120)),
            PENDING_GRACE
        ));
        assert!(older_than("not a time", PENDING_GRACE));
    }
}
