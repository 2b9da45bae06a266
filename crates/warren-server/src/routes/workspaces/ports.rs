//! A workspace's ports: `GET /workspaces/{ws}/ports` (listening ports merged with
//! `forwardPorts`/`portsAttributes` and sharing levels, with preview URLs),
//! `PUT /workspaces/{ws}/ports/{port}` (sharing level), `POST .../ticket` (a one-time link that
//! signs a browser in to one preview) and `GET .../connect` (a WebSocket relayed to the port, for
//! `warren port-forward`).

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::activity::ActivityKind;
use warren_api::auth::Op;
use warren_api::ports::{attributes_key_matches, parse_port, PortSharing};
use warren_api::v1::{PortInfo, PortList, PortTicket, SetPortSharing};
use warren_api::{ErrorCode, WorkspaceState};
use warren_engine::WsRef;
use warren_store::WorkspaceRecord;

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::preview::{self, Grant, SessionAudit};
use crate::routes::find_workspace;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_ports))
        .routes(routes!(set_port_sharing))
        .routes(routes!(port_ticket))
        .routes(routes!(port_connect))
}

fn port_param(s: &str) -> ApiResult<u16> {
    parse_port(s).map_err(|e| ApiError::bad_request(e).hint("ports are numbers from 1 to 65535"))
}

async fn owner_name(state: &AppState, rec: &WorkspaceRecord) -> ApiResult<String> {
    Ok(state
        .store
        .user(&rec.ownership.owner_id)
        .await?
        .map(|u| u.username)
        .unwrap_or_default())
}

/// The ports forwardPorts names (numbers, or `localhost:N`).
fn forwarded(spec: &serde_json::Value) -> Vec<u16> {
    let mut out = vec![];
    for v in spec["forward_ports"].as_array().into_iter().flatten() {
        let p = match v {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => match s.rsplit_once(':') {
                Some(("localhost" | "127.0.0.1", p)) => p.parse().ok(),
                _ => None,
            },
            _ => None,
        };
        if let Some(p) = p.filter(|p| (1..=65535).contains(p)) {
            out.push(p as u16);
        }
    }
    out
}

/// The `portsAttributes` entry for `port` (the first key that matches), else
/// `otherPortsAttributes`.
fn attributes_of(spec: &serde_json::Value, port: u16) -> Option<serde_json::Value> {
    let regex_match = |k: &str, p: &str| regex::Regex::new(k).is_ok_and(|r| r.is_match(p));
    for pair in spec["ports_attributes"].as_array().into_iter().flatten() {
        if let (Some(k), Some(v)) = (pair[0].as_str(), pair.get(1)) {
            if attributes_key_matches(k, port, regex_match) {
                return Some(v.clone());
            }
        }
    }
    spec.get("other_ports_attributes")
        .filter(|v| v.is_object())
        .cloned()
}

/// The workspace's ports as the API shows them.
async fn port_list(state: &AppState, rec: &WorkspaceRecord) -> ApiResult<PortList> {
    let spec: serde_json::Value =
        serde_json::from_str(&rec.spec_json).unwrap_or(serde_json::Value::Null);
    let running = rec.state == WorkspaceState::Running;
    let listening = if running {
        match state
            .engine
            .listening_ports(WsRef::Id(rec.id.clone()))
            .await
        {
            Ok(l) => l,
            Err(warren_engine::EngineError::NotRunning { .. }) => vec![],
            Err(e) => return Err(e.into()),
        }
    } else {
        vec![]
    };
    let shares: BTreeMap<u16, PortSharing> = state
        .store
        .port_shares(&rec.id)
        .await?
        .into_iter()
        .filter_map(|(p, s)| Some((p, s.parse().ok()?)))
        .collect();
    let fwd = forwarded(&spec);
    let mut ports: BTreeMap<u16, PortInfo> = BTreeMap::new();
    let user = owner_name(state, rec).await?;
    let make = |port: u16| -> PortInfo {
        let attrs = attributes_of(&spec, port);
        let s = |k: &str| {
            attrs
                .as_ref()
                .and_then(|a| a[k].as_str())
                .map(str::to_string)
        };
        let (path, sub) = preview::urls(state, rec.name.as_str(), &user, port);
        PortInfo {
            port,
            listening: false,
            addresses: vec![],
            process: None,
            forwarded: fwd.contains(&port),
            label: s("label"),
            on_auto_forward: s("onAutoForward"),
            protocol: s("protocol"),
            sharing: shares
                .get(&port)
                .copied()
                .unwrap_or_default()
                .min(state.cfg.max_port_sharing),
            urls: std::iter::once(path).chain(sub).collect(),
        }
    };
    for l in &listening {
        let e = ports.entry(l.port).or_insert_with(|| make(l.port));
        e.listening = true;
        let a = l.address.to_string();
        if !e.addresses.contains(&a) {
            e.addresses.push(a);
        }
        if e.process.is_none() {
            e.process = l.process.clone();
        }
    }
    for p in fwd.iter().copied().chain(shares.keys().copied()) {
        ports.entry(p).or_insert_with(|| make(p));
    }
    Ok(PortList {
        running,
        ports: ports.into_values().collect(),
        max_sharing: state.cfg.max_port_sharing,
    })
}

/// The TCP ports listened on in the workspace, with the ports `forwardPorts` names and the ports
/// shared beyond their owner: labels and `onAutoForward` from `portsAttributes`, sharing levels
/// and preview URLs.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/ports", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 200, body = PortList), (status = 404, body = ErrorBody)))]
async fn list_ports(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<PortList>> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceRead).await?;
    Ok(Json(port_list(&state, &rec).await?))
}

/// Sets who may reach a port through its preview URLs: `owner` (the default), `organization`
/// (any signed-in user) or `public` (anyone; only where the server's `max_port_sharing` allows).
#[utoipa::path(put, path = "/api/v1/workspaces/{ws}/ports/{port}", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), ("port" = String, Path, description = "TCP port, 1-65535")),
    request_body = SetPortSharing,
    responses((status = 200, body = PortInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn set_port_sharing(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, port)): Path<(String, String)>,
    Json(body): Json<SetPortSharing>,
) -> ApiResult<Response> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceWrite).await?;
    let port = port_param(&port)?;
    let level: PortSharing = body
        .sharing
        .parse()
        .map_err(|e: String| ApiError::bad_request(format!("sharing: {e}")))?;
    let max = state.cfg.max_port_sharing;
    if level > max {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::SharingNotAllowed,
            format!("this server allows sharing ports up to `{max}`, not `{level}`"),
        )
        .hint("the server's administrator sets the limit with `max_port_sharing`"));
    }
    let stored = (level != PortSharing::Owner).then(|| level.as_str());
    let old = state
        .store
        .set_port_share(&rec.id, port, stored, &caller.user.id)
        .await?;
    let mut note = AuditNote::target("workspace", &rec.id, rec.name.as_str());
    note.diff_json = warren_store::field_diff(
        &serde_json::json!({"sharing": old.as_deref().unwrap_or("owner")}),
        &serde_json::json!({"sharing": level.as_str()}),
    );
    note.details_json = Some(serde_json::json!({"port": port}).to_string());
    let list = port_list(&state, &rec).await?;
    let info = list
        .ports
        .into_iter()
        .find(|p| p.port == port)
        .ok_or_else(|| ApiError::internal("a shared port is missing from its list"))?;
    Ok((axum::Extension(note), Json(info)).into_response())
}

/// A one-time link (valid 60 seconds) that signs a browser in to one preview: opening it sets an
/// HttpOnly cookie scoped to that preview and redirects to it. Anyone who may reach the port
/// can get one.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/ports/{port}/ticket", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace (`name`, or `name.user` for another user's)"),
        ("port" = String, Path, description = "TCP port, 1-65535")),
    responses((status = 200, body = PortTicket), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn port_ticket(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, port)): Path<(String, String)>,
) -> ApiResult<Response> {
    let port = port_param(&port)?;
    let rec = preview::resolve(&state, Some(&caller), &ws, port).await?;
    preview::authorize(&state, Some(&caller), &rec, &ws, port).await?;
    let ticket = state.previews.ticket(Grant {
        token_id: caller.token.id.clone(),
        user_id: caller.user.id.clone(),
        ws_id: rec.id.clone(),
        port,
    });
    let user = owner_name(&state, &rec).await?;
    let (path, sub) = preview::urls(&state, rec.name.as_str(), &user, port);
    let auth = format!("__warren/auth?ticket={ticket}");
    let mut note = AuditNote::target("workspace", &rec.id, rec.name.as_str());
    note.details_json = Some(serde_json::json!({"port": port}).to_string());
    Ok((
        axum::Extension(note),
        [(header::CACHE_CONTROL, "no-store")],
        Json(PortTicket {
            url: format!("{path}{auth}"),
            subdomain_url: sub.map(|s| format!("{s}{auth}")),
            expires_in_secs: preview::TICKET_TTL.as_secs(),
        }),
    )
        .into_response())
}

/// A WebSocket relayed to the port inside the workspace (binary messages carry the TCP bytes both
/// ways): `warren port-forward`. Authorized like exec.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/ports/{port}/connect", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), ("port" = String, Path, description = "TCP port, 1-65535")),
    responses((status = 101, description = "WebSocket; binary messages carry the connection's bytes"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 502, body = ErrorBody, description = "nothing listens on the port"),
        (status = 503, body = ErrorBody, description = "the workspace is not running")))]
#[allow(clippy::too_many_arguments)]
async fn port_connect(
    State(state): State<AppState>,
    caller: Caller,
    Path((ws, port)): Path<(String, String)>,
    headers: HeaderMap,
    ConnectInfo(remote): ConnectInfo<std::net::SocketAddr>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceExec).await?;
    let port = port_param(&port)?;
    let upgrade = upgrade.map_err(|_| {
        ApiError::bad_request("this route is a WebSocket: send a WebSocket upgrade request")
            .hint("use `warren port-forward WS LOCAL:REMOTE`")
    })?;
    let tcp = preview::connect(&state, &rec, port).await?;
    state.metrics.port_forwards.inc();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(upgrade
        .max_message_size(1 << 20)
        .on_upgrade(move |socket| async move {
            let session = state.activity.session(&rec.id, ActivityKind::Port);
            let toucher = session.toucher();
            let t0 = Instant::now();
            let (to_ws, from_ws) =
                super::ssh_tunnel::relay(socket, tcp, &move || toucher.touch()).await;
            drop(session);
            preview::audit_session(
                &state,
                SessionAudit {
                    action: "workspace.port_forward",
                    caller: Some(&caller),
                    client: Some(remote),
                    user_agent,
                    rec: &rec,
                    details: serde_json::json!({
                        "port": port,
                        "via": "api",
                        "duration_ms": t0.elapsed().as_millis() as u64,
                        "bytes_to_workspace": to_ws,
                        "bytes_from_workspace": from_ws,
                    }),
                },
            )
            .await;
        }))
}
