//! Events: `GET /events`, what happened to the caller's workspaces and budgets (or everyone's,
//! for admins and auditors), as a page or, with `follow=true`, a Server-Sent Events stream.
//! `GET /workspaces/{ws}/events` (in `workspaces/policy.rs`) is the same for one workspace.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::{Op, Owner};
use warren_api::v1::{EventList, EventView};
use warren_store::EventFilter;

use crate::app::{AppState, Json};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::find_workspace;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_events))
}

/// Largest page.
const MAX_LIMIT: u32 = 1000;

/// Most event streams one user may follow at once.
pub const MAX_FOLLOWERS: u32 = 16;

/// How often a stream checks that its token still works and its user is not suspended.
const RECHECK: Duration = Duration::from_secs(30);

/// Event streams open per user.
#[derive(Default)]
pub struct Followers(std::sync::Mutex<std::collections::HashMap<String, u32>>);

/// One open stream; counted until dropped.
pub struct Following {
    all: std::sync::Arc<Followers>,
    user: String,
}

impl Followers {
    fn enter(self: &std::sync::Arc<Self>, user: &str) -> Option<Following> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(user.to_owned()).or_insert(0);
        if *n >= MAX_FOLLOWERS {
            return None;
        }
        *n += 1;
        Some(Following {
            all: self.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for Following {
    fn drop(&mut self) {
        let mut m = self.all.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.user);
            }
        }
    }
}

/// Whether the caller's token still works and its user may still act (checked during a
/// stream, which outlives the request that authorized it).
async fn still_allowed(state: &AppState, caller: &Caller) -> bool {
    let now = state.store.now();
    let token_ok = matches!(
        state.store.token(&caller.token.id).await,
        Ok(Some(t)) if t.revoked_at.is_none() && t.expires_at > now
    );
    let user_ok = matches!(
        state.store.user(&caller.user.id).await,
        Ok(Some(u)) if !u.suspended
    );
    token_ok && user_ok
}

/// Query of a workspace's events.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only events after this id.
    after: Option<i64>,
    /// At most this many (default 100, at most 1000); without `after`, the newest ones.
    limit: Option<u32>,
    /// Only kinds starting with this (`workspace.stop`, `budget.`).
    kind: Option<String>,
    /// Stream (Server-Sent Events) instead of one page.
    follow: Option<bool>,
}

/// Query of `GET /events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AllEventsQuery {
    /// `me` (default: your workspaces and budgets, and your teams'), `all` (admins and
    /// auditors), or a username.
    owner: Option<String>,
    /// Only this workspace's (a name, `name.user` or an id).
    workspace: Option<String>,
    /// Only events after this id.
    after: Option<i64>,
    /// At most this many (default 100, at most 1000); without `after`, the newest ones.
    limit: Option<u32>,
    /// Only kinds starting with this (`workspace.stop`, `budget.`).
    kind: Option<String>,
    /// Stream (Server-Sent Events) instead of one page.
    follow: Option<bool>,
}

fn bad_query(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::bad_request(format!("invalid query: {}", e.body_text()))
}

/// Events the caller may see, as a page or a stream.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", security(("token" = [])),
    params(AllEventsQuery),
    responses((status = 200, body = EventList, description = "JSON, or text/event-stream with follow=true"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    q: Result<Query<AllEventsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(bad_query)?;
    let mut filter = EventFilter::default();
    if let Some(ws) = &q.workspace {
        let rec = find_workspace(&state, &caller, ws, Op::WorkspaceRead).await?;
        filter.workspace_id = Some(rec.id);
    } else {
        match q.owner.as_deref().unwrap_or("me") {
            "me" => {
                caller.require(Op::WorkspaceRead(Owner::Own))?;
                let teams = state.store.team_ids_of(&caller.user.id).await?;
                filter.visible_to = Some((caller.user.id.clone(), teams));
            }
            "all" => caller.require(Op::WorkspaceRead(Owner::Other))?,
            name => {
                if name != caller.user.username {
                    // Only those who may read others learn whether a user exists.
                    caller.require(Op::WorkspaceRead(Owner::Other))?;
                }
                let (u, own) = crate::routes::user_named(&state, &caller, name).await?;
                caller.require(Op::WorkspaceRead(own))?;
                filter.visible_to = Some((u.id, vec![]));
            }
        }
    }
    // A token restricted to named workspaces sees their events only, whatever it asks for.
    if let Some(ids) = &caller.principal.workspaces {
        filter.workspace_ids = Some(ids.iter().cloned().collect());
    }
    let page = EventsQuery {
        after: q.after,
        limit: q.limit,
        kind: q.kind,
        follow: q.follow,
    };
    events_response(state, &caller, filter, Ok(Query(page)), &headers).await
}

/// Answers an events request for `filter` with the page or the stream the query asks for.
pub async fn events_response(
    state: AppState,
    caller: &Caller,
    mut filter: EventFilter,
    q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(bad_query)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is out of range: 1 to {MAX_LIMIT}"
        )));
    }
    if let Some(k) = &q.kind {
        if k.is_empty()
            || k.len() > 64
            || !k
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')
        {
            return Err(ApiError::bad_request(format!(
                "kind `{k}` is not an event kind prefix (lowercase letters, `.` and `_`)"
            ))
            .hint("e.g. `workspace.`, `workspace.stopped` or `budget.`"));
        }
    }
    filter.kind_prefix = q.kind.clone();
    filter.limit = limit;
    // A reconnecting EventSource says where it was.
    let resume = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    filter.after_id = q.after.or(resume);
    filter.newest = filter.after_id.is_none();
    let first = state.store.list_events(&filter).await?;
    if !q.follow.unwrap_or(false) {
        return Ok(Json(EventList { events: first }).into_response());
    }
    let following = state
        .event_followers
        .enter(&caller.user.id)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                warren_api::ErrorCode::LimitExceeded,
                format!("you already follow {MAX_FOLLOWERS} event streams"),
            )
            .hint("close one, or read pages with `after` instead of following")
        })?;
    let caller = caller.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, Infallible>>(64);
    let mut watch = state.store.events_watch();
    let mut notices = state.pubsub.subscribe();
    tokio::spawn(async move {
        let _following = following;
        let mut checked = tokio::time::Instant::now();
        let mut after = first.last().map(|e| e.id).or(filter.after_id);
        if after.is_none() {
            // Nothing yet: start from the latest event anyone sees, so the stream is what
            // happens from now on.
            after = Some(*watch.borrow_and_update());
        }
        let mut pending = first;
        filter.newest = false;
        loop {
            for e in pending.drain(..) {
                after = Some(e.id);
                if tx.send(Ok(sse_event(&e))).await.is_err() {
                    return;
                }
            }
            if state.shutting_down() {
                return;
            }
            // A revoked token or a suspended user ends the stream.
            if checked.elapsed() >= RECHECK {
                if !still_allowed(&state, &caller).await {
                    return;
                }
                checked = tokio::time::Instant::now();
            }
            // New events wake us; a slow tick catches writes from other processes and sends a
            // comment so proxies keep the connection.
            tokio::select! {
                // The client went away: free its place at once.
                () = tx.closed() => return,
                changed = watch.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(Duration::from_secs(15)) => {
                    if tx.send(Ok(": keep-alive\n\n".to_owned())).await.is_err() {
                        return;
                    }
                }
                // A revocation or a change of the user ends the stream at once, if it must.
                notice = notices.recv() => {
                    use crate::coord::Notice;
                    let concerns_us = match &notice {
                        Ok(Notice::TokenRevoked(id)) => *id == caller.token.id,
                        Ok(Notice::UserChanged(id)) => *id == caller.user.id,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => true,
                        Err(_) => false,
                    };
                    if concerns_us {
                        if !still_allowed(&state, &caller).await {
                            return;
                        }
                        checked = tokio::time::Instant::now();
                    }
                    continue;
                }
            }
            filter.after_id = after;
            match state.store.list_events(&filter).await {
                Ok(next) => pending = next,
                Err(_) => return,
            }
        }
    });
    Ok(sse(rx))
}

/// One event as a Server-Sent Event: its id, its kind as the event name, JSON data.
fn sse_event(e: &EventView) -> String {
    format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        e.id,
        e.kind,
        serde_json::to_string(e).unwrap_or_default()
    )
}

fn sse(rx: tokio::sync::mpsc::Receiver<Result<String, Infallible>>) -> Response {
    use axum::http::header;
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}
