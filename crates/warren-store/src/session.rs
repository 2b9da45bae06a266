//! Session audit records: what happened inside a workspace (processes, files written, git
//! pushes, credential uses, denied egress), appended to the hash-chained audit log as actions
//! `session.<kind>` with the workspace as target and the event as `details_json`. The server's
//! `session_audit` module records most of them; the engine records denied egress as it ingests
//! the runtime's journal.

use serde::Serialize;

use crate::{AuditOutcome, NewAuditRecord, WorkspaceRecord};

/// How a process was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The toolbox API (`/toolbox/process/...`).
    Toolbox,
    /// The API's exec (`/exec`, `/exec/ws`).
    Exec,
    /// The SSH gateway.
    Ssh,
    /// A task's runner (clone, the agent command, collection).
    Task,
    /// An MCP tool call.
    Mcp,
}

/// One thing that happened in a workspace's session.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SessionEvent {
    /// A process started.
    ProcessStarted {
        /// The server's id for it (a background process's `p_...`, or one made up for others), so
        /// its end can be matched.
        id: String,
        argv: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        via: Via,
    },
    /// A process ended (or was found gone).
    ProcessEnded {
        id: String,
        argv: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        via: Via,
        /// RFC 3339 UTC.
        started_at: String,
        /// RFC 3339 UTC.
        ended_at: String,
        /// `None` when killed by a signal or lost.
        exit_code: Option<i32>,
        /// Killed by its time limit.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        timed_out: bool,
    },
    /// A file written through the toolbox.
    FileWritten {
        path: String,
        size: u64,
        /// Hex SHA-256 of the new content.
        sha256: String,
        /// A unified diff against the old content, for text files small enough.
        #[serde(skip_serializing_if = "Option::is_none")]
        diff: Option<String>,
        /// The diff was cut at the server's limit (64 KiB).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        diff_truncated: bool,
        via: Via,
    },
    /// A git push (through the toolbox or seen by a task's runner).
    GitPushed {
        /// The remote's URL without any user information.
        remote: String,
        branch: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
    },
    /// The workspace's git credential helper was answered (or refused).
    CredentialUsed {
        host: String,
        /// The secret's name, when one was given out.
        #[serde(skip_serializing_if = "Option::is_none")]
        secret: Option<String>,
        granted: bool,
    },
    /// Connections or names the workspace's network policy refused.
    EgressDenied {
        /// `connect`, `dns` or `proxy`.
        reason: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        why: String,
        count: u64,
        /// When the first of them happened (RFC 3339 UTC).
        time: String,
    },
}

impl SessionEvent {
    /// The audit action: `session.<kind>`.
    pub fn action(&self) -> &'static str {
        match self {
            SessionEvent::ProcessStarted { .. } => "session.process_start",
            SessionEvent::ProcessEnded { .. } => "session.process_end",
            SessionEvent::FileWritten { .. } => "session.file_write",
            SessionEvent::GitPushed { .. } => "session.git_push",
            SessionEvent::CredentialUsed { .. } => "session.credential_use",
            SessionEvent::EgressDenied { .. } => "session.egress_denied",
        }
    }

    /// Whether it records something refused.
    fn refused(&self) -> bool {
        match self {
            SessionEvent::CredentialUsed { granted, .. } => !granted,
            SessionEvent::EgressDenied { .. } => true,
            _ => false,
        }
    }
}

/// Who caused a session event (none for the workspace itself: denied egress, the credential
/// helper).
#[derive(Debug, Clone, Default)]
pub struct SessionActor {
    pub user_id: String,
    pub username: String,
    pub token_id: String,
}

/// The audit record of `ev` in `rec`'s session.
pub fn session_record(
    rec: &WorkspaceRecord,
    actor: Option<&SessionActor>,
    ev: &SessionEvent,
) -> NewAuditRecord {
    let mut details = serde_json::to_value(ev).unwrap_or_default();
    if let Some(o) = details.as_object_mut() {
        o.insert("workspace".into(), rec.name.to_string().into());
        if !rec.ownership.owner_id.is_empty() {
            o.insert("owner_id".into(), rec.ownership.owner_id.clone().into());
        }
    }
    NewAuditRecord {
        request_id: format!("ses_{}", uuid::Uuid::new_v4().simple()),
        actor_user_id: actor.map(|a| a.user_id.clone()),
        actor_username: actor.map(|a| a.username.clone()),
        actor_token_id: actor.map(|a| a.token_id.clone()),
        source_ip: None,
        user_agent: None,
        action: ev.action().into(),
        target_type: "workspace".into(),
        target_id: Some(rec.id.clone()),
        target_name: Some(rec.name.to_string()),
        outcome: if ev.refused() {
            AuditOutcome::Denied
        } else {
            AuditOutcome::Success
        },
        status: 0,
        diff_json: None,
        details_json: Some(details.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[tokio::test]
    async fn session_records_join_the_audit_chain() {
        let store = Store::open_in_memory().await.unwrap();
        let rec = store
            .create_workspace(crate::NewWorkspace {
                name: warren_api::WorkspaceName::new("agent").unwrap(),
                project_dir: "/p".into(),
                config_path: "/p/.devcontainer/devcontainer.json".into(),
                image: "img".into(),
                spec_json: "{}".into(),
                ownership: crate::Ownership {
                    owner_id: "u1".into(),
                    ..Default::default()
                },
            })
            .await
            .unwrap();
        let actor = SessionActor {
            user_id: "u1".into(),
            username: "alice".into(),
            token_id: "t1".into(),
        };
        let started = SessionEvent::ProcessStarted {
            id: "p_1".into(),
            argv: vec!["make".into(), "test".into()],
            cwd: Some("/workspaces/r".into()),
            user: None,
            via: Via::Toolbox,
        };
        let refused = SessionEvent::CredentialUsed {
            host: "git.example".into(),
            secret: None,
            granted: false,
        };
        store
            .append_audit(session_record(&rec, Some(&actor), &started))
            .await
            .unwrap();
        store
            .append_audit(session_record(&rec, None, &refused))
            .await
            .unwrap();
        let q = crate::AuditQuery {
            action: Some("session.*".into()),
            target: Some(rec.id.clone()),
            limit: 10,
            ..Default::default()
        };
        let got = store.query_audit(&q).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].action, "session.process_start");
        assert_eq!(got[0].actor_username.as_deref(), Some("alice"));
        assert_eq!(got[0].outcome, AuditOutcome::Success);
        let d: serde_json::Value =
            serde_json::from_str(got[0].details_json.as_deref().unwrap()).unwrap();
        assert_eq!(d["kind"], "process_started");
        assert_eq!(d["argv"], serde_json::json!(["make", "test"]));
        assert_eq!(d["via"], "toolbox");
        assert_eq!(d["workspace"], "agent");
        assert_eq!(d["owner_id"], "u1");
        assert_eq!(got[1].action, "session.credential_use");
        assert_eq!(got[1].outcome, AuditOutcome::Denied);
        assert_eq!(got[1].actor_user_id, None);
        assert!(store.verify_audit().await.unwrap().ok);
    }
}
