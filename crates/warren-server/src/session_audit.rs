//! Session audit: what happened inside a workspace, for agent workspaces above all.
//!
//! Processes started through the toolbox, the API's exec and the SSH gateway (start and end),
//! files written through the toolbox (path, size, hash, a diff for text), git pushes, uses of a
//! workspace's git credential and denied egress are appended to the same hash-chained audit log
//! as API requests, as actions `session.<kind>` with the workspace as target and the event as
//! `details_json` (`warren_store::session`). So `GET /api/v1/audit?target=WS_ID&action=session.*&format=jsonl`
//! exports a workspace's session for a SIEM, `GET /api/v1/audit/verify` covers it, and a task's
//! session is its workspace's. Denied egress is recorded by the engine as it ingests the
//! runtime's denial journal (`Engine::ingest_denials`).

pub use warren_store::session::{SessionActor, SessionEvent, Via};
use warren_store::WorkspaceRecord;

use crate::app::AppState;
use crate::auth::Caller;

/// Who a caller is, for a session record.
pub fn actor(c: &Caller) -> SessionActor {
    SessionActor {
        user_id: c.user.id.clone(),
        username: c.user.username.clone(),
        token_id: c.token.id.clone(),
    }
}

/// Appends `ev` to `rec`'s session audit, caused by `actor` (none for the workspace itself). A
/// failure is logged: what it records already happened.
pub async fn record(
    state: &AppState,
    rec: &WorkspaceRecord,
    actor_: Option<&Caller>,
    ev: SessionEvent,
) {
    let a = actor_.map(actor);
    let mut r = warren_store::session::session_record(rec, a.as_ref(), &ev);
    // The task the workspace belongs to, if any: a task's session is its workspace's.
    if let Ok(Some(t)) = state.store.task_of_workspace(&rec.id).await {
        if let Some(d) = r.details_json.as_deref() {
            if let Ok(mut v) = serde_json::from_str::<serde_json::Value>(d) {
                v["task_id"] = serde_json::Value::String(t.id);
                r.details_json = Some(v.to_string());
            }
        }
    }
    crate::audit::record(state, r).await;
}

/// A fresh id for a process that has none of its own (`x_...`).
pub fn process_id() -> String {
    format!("x_{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// Now, as session records write times (RFC 3339 UTC, milliseconds).
pub fn now() -> String {
    warren_store::format_time(time::OffsetDateTime::now_utc())
}
