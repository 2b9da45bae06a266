//! The audit trail of the API: every state-changing request (any method but GET and HEAD) and
//! every exec is appended to the store's hash-chained audit log, whatever its outcome, including
//! requests refused for lack of credentials.
//!
//! The middleware names the action from the route (`POST /api/v1/workspaces/{ws}/stop` is
//! `workspace.stop`), takes the actor from the authenticated caller, and lets handlers refine the
//! target and attach a field-level diff through a response extension ([`AuditNote`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;
use warren_store::{AuditOutcome, NewAuditRecord};

use crate::app::{AppState, RequestId};
use crate::auth::Caller;
use crate::error::tracing_log;

/// Filled in by the authentication extractor so the middleware knows who acted.
#[derive(Default)]
pub struct ActorSlot(Mutex<Option<(String, String, String)>>);

impl ActorSlot {
    /// Records the caller.
    pub fn set(&self, c: &Caller) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((
            c.user.id.clone(),
            c.user.username.clone(),
            c.token.id.clone(),
        ));
    }
    fn get(&self) -> Option<(String, String, String)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// What a handler tells the audit log about its request.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    /// Overrides the action derived from the route.
    pub action: Option<String>,
    /// Target kind (`workspace`, `template`...).
    pub target_type: Option<String>,
    /// Target id.
    pub target_id: Option<String>,
    /// Target name.
    pub target_name: Option<String>,
    /// Field-level diff (`{"field": {"old":..,"new":..}}`).
    pub diff_json: Option<String>,
    /// Anything else worth keeping (e.g. the command of an exec).
    pub details_json: Option<String>,
}

impl AuditNote {
    /// A note naming the target.
    pub fn target(kind: &str, id: &str, name: &str) -> Self {
        AuditNote {
            target_type: Some(kind.into()),
            target_id: Some(id.into()),
            target_name: Some(name.into()),
            ..Default::default()
        }
    }
}

/// A response extension for requests that are not audited themselves: an MCP message whose
/// effects are the in-process API calls of its tools, each audited as the API audits it.
#[derive(Debug, Clone, Copy)]
pub struct NotAudited;

/// The action name for a route: resources singular, joined with dots, then the verb.
pub fn action_for(method: &Method, route: &str) -> String {
    let path = route.trim_start_matches("/api/v1/").trim_start_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut names: Vec<String> = Vec::new();
    let mut last_is_param = false;
    for s in &segs {
        if s.starts_with('{') {
            last_is_param = true;
        } else {
            names.push(s.to_string());
            last_is_param = false;
        }
    }
    let verb = match *method {
        Method::DELETE => "delete".to_string(),
        Method::PATCH | Method::PUT => "update".to_string(),
        Method::POST
            if !last_is_param && names.len() >= 2 && is_verb(names[names.len() - 1].as_str()) =>
        {
            // POST /workspaces/{ws}/stop: the last name is the verb.
            let v = names.pop().unwrap_or_default();
            if v == "active" {
                "activate".to_string()
            } else {
                v
            }
        }
        Method::POST => "create".to_string(),
        _ => method.as_str().to_ascii_lowercase(),
    };
    let nouns: Vec<String> = names
        .iter()
        .map(
            |n| match n.strip_suffix("es").filter(|s| s.ends_with("ss")) {
                // processes -> process; process stays.
                Some(s) => s.to_string(),
                None if n.ends_with("ss") => n.to_string(),
                None => n.strip_suffix('s').unwrap_or(n).to_string(),
            },
        )
        .collect();
    if nouns.is_empty() {
        verb
    } else {
        format!("{}.{verb}", nouns.join("."))
    }
}

/// Last path segments that are actions rather than sub-collections.
fn is_verb(s: &str) -> bool {
    matches!(
        s,
        "start"
            | "stop"
            | "restart"
            | "cancel"
            | "complete"
            | "extend"
            | "archive"
            | "unarchive"
            | "exec"
            | "approve"
            | "token"
            | "active"
            | "verify"
            | "keepalive"
            | "test"
            | "run"
            | "signal"
            | "stdin"
    )
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(512).collect())
}

/// Middleware: appends an audit record for every state-changing request.
pub async fn audit_layer(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        return next.run(req).await;
    }
    let slot = Arc::new(ActorSlot::default());
    req.extensions_mut().insert(slot.clone());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let Some(route) = route else {
        // Unknown route: nothing was changed; not worth an audit record.
        return next.run(req).await;
    };
    let source_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let user_agent = header(req.headers(), "user-agent");
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    // Path parameters as the default target.
    let default_target = req
        .uri()
        .path()
        .trim_start_matches("/api/v1/")
        .split('/')
        .nth(1)
        .map(str::to_string);
    let resp = next.run(req).await;
    // Keep-alives are frequent heartbeats that change nothing but activity: a successful one
    // is not worth a record (a refused one is).
    if route == "/api/v1/workspaces/{ws}/keepalive" && resp.status().is_success() {
        return resp;
    }
    if resp.extensions().get::<NotAudited>().is_some() {
        return resp;
    }
    let note = resp
        .extensions()
        .get::<AuditNote>()
        .cloned()
        .unwrap_or_default();
    let status = resp.status().as_u16();
    let outcome = if resp.status().is_success() {
        AuditOutcome::Success
    } else if status == 401 || status == 403 {
        AuditOutcome::Denied
    } else {
        AuditOutcome::Failure
    };
    let action = note
        .action
        .clone()
        .unwrap_or_else(|| action_for(&method, &route));
    let actor = slot.get();
    let rec = NewAuditRecord {
        request_id,
        actor_user_id: actor.as_ref().map(|a| a.0.clone()),
        actor_username: actor.as_ref().map(|a| a.1.clone()),
        actor_token_id: actor.as_ref().map(|a| a.2.clone()),
        source_ip,
        user_agent,
        target_type: note
            .target_type
            .clone()
            .unwrap_or_else(|| action.split('.').next().unwrap_or("").to_string()),
        target_id: note.target_id.clone(),
        target_name: note.target_name.clone().or(default_target),
        action,
        outcome,
        status,
        diff_json: note.diff_json.clone(),
        details_json: note.details_json.clone(),
    };
    record(&state, rec).await;
    resp
}

/// Appends a record; a failure to audit is logged (the request already happened).
pub async fn record(state: &AppState, rec: NewAuditRecord) {
    match state.store.append_audit(rec).await {
        Ok(_) => {
            state.metrics.audit_records.inc();
        }
        Err(e) => tracing_log(&format!("cannot append audit record: {e}")),
    };
}

/// The audit record of a caller's WebSocket session on a workspace (exec, terminal, SSH tunnel,
/// port forward), as the upgrade is granted: who, from where, with what client.
pub fn upgrade_record(
    request_id: String,
    caller: &Caller,
    remote: SocketAddr,
    user_agent: Option<String>,
    action: &str,
    rec: &warren_store::WorkspaceRecord,
) -> NewAuditRecord {
    NewAuditRecord {
        request_id,
        actor_user_id: Some(caller.user.id.clone()),
        actor_username: Some(caller.user.username.clone()),
        actor_token_id: Some(caller.token.id.clone()),
        source_ip: Some(remote.ip().to_string()),
        user_agent,
        action: action.into(),
        target_type: "workspace".into(),
        target_id: Some(rec.id.clone()),
        target_name: Some(rec.name.to_string()),
        outcome: AuditOutcome::Success,
        status: 101,
        diff_json: None,
        details_json: None,
    }
}

/// The `User-Agent` header, if it is text.
pub fn user_agent(headers: &HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_named_from_routes() {
        let cases = [
            (Method::POST, "/api/v1/workspaces", "workspace.create"),
            (
                Method::POST,
                "/api/v1/workspaces/{ws}/stop",
                "workspace.stop",
            ),
            (
                Method::DELETE,
                "/api/v1/workspaces/{ws}",
                "workspace.delete",
            ),
            (
                Method::POST,
                "/api/v1/templates/{t}/versions",
                "template.version.create",
            ),
            (Method::PATCH, "/api/v1/users/{user}", "user.update"),
            (
                Method::PUT,
                "/api/v1/teams/{team}/members/{user}",
                "team.member.update",
            ),
            (Method::POST, "/api/v1/jobs/{id}/cancel", "job.cancel"),
            (Method::POST, "/api/v1/tasks/{id}/cancel", "task.cancel"),
            (Method::POST, "/api/v1/tasks/{id}/complete", "task.complete"),
            (Method::POST, "/api/v1/tasks", "task.create"),
            (
                Method::POST,
                "/api/v1/templates/{t}/active",
                "template.activate",
            ),
            (Method::POST, "/api/v1/auth/device", "auth.device.create"),
            (
                Method::POST,
                "/api/v1/auth/device/approve",
                "auth.device.approve",
            ),
            (Method::POST, "/api/v1/tokens", "token.create"),
            (Method::DELETE, "/api/v1/tokens/{id}", "token.delete"),
            (Method::POST, "/api/v1/webhooks/{id}/test", "webhook.test"),
            (
                Method::POST,
                "/api/v1/workspaces/{ws}/toolbox/process/run",
                "workspace.toolbox.process.run",
            ),
            (
                Method::POST,
                "/api/v1/workspaces/{ws}/toolbox/processes",
                "workspace.toolbox.process.create",
            ),
            (
                Method::POST,
                "/api/v1/workspaces/{ws}/toolbox/processes/{id}/signal",
                "workspace.toolbox.process.signal",
            ),
        ];
        for (m, r, want) in cases {
            assert_eq!(action_for(&m, r), want, "{m} {r}");
        }
    }
}
