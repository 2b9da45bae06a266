//! A workspace's lifecycle policy and events: `GET|PUT /workspaces/{ws}/policy` (the policy in
//! force, the workspace's own values within its template's ceilings, what comes next),
//! `POST /workspaces/{ws}/keepalive` (an agent saying it is still working), and
//! `GET /workspaces/{ws}/events` (what happened to it, and why; `follow=true` streams).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::activity::ActivityKind;
use warren_api::auth::Op;
use warren_api::policy::{self, WorkspacePolicy};
use warren_api::v1::{EventList, NextAction, PolicyStatus};
use warren_api::{ErrorCode, WorkspaceState};
use warren_store::{EventFilter, WorkspaceRecord};

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::events::{events_response, EventsQuery};
use crate::routes::find_workspace;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_policy, put_policy))
        .routes(routes!(keepalive))
        .routes(routes!(workspace_events))
}

/// The policy status of a workspace.
pub(crate) async fn status(state: &AppState, rec: &WorkspaceRecord) -> ApiResult<PolicyStatus> {
    let (resolved, facts, ev) = crate::governor::assess(state, rec).await?;
    let (eff, ignored) = &*resolved;
    let template = crate::governor::template_policy(state, rec).await?;
    let own: WorkspacePolicy = rec
        .ownership
        .policy_json
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let deadline_at = (rec.state == WorkspaceState::Running)
        .then(|| {
            policy::deadline(
                eff,
                facts.started_at.unwrap_or(facts.created_at),
                facts.deadline_at,
            )
        })
        .flatten()
        .map(|(at, _)| warren_store::format_time(at));
    let next = ev
        .due
        .map(|v| (v, facts.now))
        .or(ev.next.map(|n| (n.verdict, n.at)))
        .map(|(v, at)| {
            let (action, reason) = v.parts();
            NextAction {
                action: action.to_owned(),
                reason,
                at: warren_store::format_time(at),
            }
        });
    Ok(PolicyStatus {
        template: template.map(|t| (*t).clone()),
        own,
        own_ignored: ignored.clone(),
        effective: eff.view(),
        deadline_at,
        next,
        last_activity_at: facts.last_activity.map(warren_store::format_time),
        open_sessions: facts.open_sessions,
        started_at: rec.started_at.clone(),
        stopped_at: rec.stopped_at.clone(),
        stop_reason: rec.stop_reason.clone(),
    })
}

/// The workspace's lifecycle policy: the template's, its own values, the policy in force, and
/// the next thing a policy will do (stop, delete, start) with when and why.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/policy", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 200, body = PolicyStatus), (status = 404, body = ErrorBody)))]
async fn get_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<PolicyStatus>> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceRead).await?;
    Ok(Json(status(&state, &rec).await?))
}

/// Sets the workspace's own policy values (replacing the previous ones; `{}` goes back to the
/// template's), within the template's ceilings. Takes effect at the next policy pass.
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/policy", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = WorkspacePolicy,
    responses((status = 200, body = PolicyStatus), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn put_policy(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<WorkspacePolicy>,
) -> ApiResult<Response> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceWrite).await?;
    let template = crate::governor::template_policy(&state, &rec).await?;
    policy::resolve(template.as_deref(), Some(&body)).map_err(|e| {
        let code = if e.contains("longer than") || e.contains("cannot be turned off") {
            ErrorCode::LimitExceeded
        } else {
            ErrorCode::InvalidRequest
        };
        ApiError::new(StatusCode::BAD_REQUEST, code, format!("policy: {e}"))
            .hint("`warren policy WS` shows the template's policy and ceilings")
    })?;
    let json = (body != WorkspacePolicy::default())
        .then(|| serde_json::to_string(&body))
        .transpose()
        .map_err(ApiError::internal)?;
    state
        .store
        .set_policy_json(&rec.id, json.as_deref())
        .await?;
    let fresh = state.store.get(&rec.id).await?.unwrap_or(rec.clone());
    let mut note = AuditNote::target("workspace", &rec.id, rec.name.as_str());
    note.diff_json = warren_store::field_diff(
        &serde_json::json!({"policy": rec.ownership.policy_json}),
        &serde_json::json!({"policy": json}),
    );
    Ok((axum::Extension(note), Json(status(&state, &fresh).await?)).into_response())
}

/// Counts as activity (kind `keepalive`): an agent calls it while it thinks, so an idle
/// timeout does not stop its workspace. Answers the policy status (when it would stop next).
/// Successful keep-alives are not audited (they are frequent and change nothing else).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/keepalive", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 200, body = PolicyStatus), (status = 404, body = ErrorBody)))]
async fn keepalive(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<PolicyStatus>> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    state.activity.touch(&rec.id, ActivityKind::Keepalive);
    Ok(Json(status(&state, &rec).await?))
}

/// What happened to the workspace, oldest first: transitions with their reasons, warnings,
/// refusals. `follow=true` streams them (Server-Sent Events; each `id:` is the event's id, and
/// `Last-Event-ID` resumes).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/events", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), EventsQuery),
    responses((status = 200, body = EventList, description = "JSON, or text/event-stream with follow=true"),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn workspace_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    headers: HeaderMap,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceRead).await?;
    let filter = EventFilter {
        workspace_id: Some(rec.id.clone()),
        ..Default::default()
    };
    events_response(state, &caller, filter, q, &headers).await
}
