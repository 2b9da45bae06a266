//! Preview URLs: HTTP requests and upgraded connections (WebSocket) proxied to a port inside a
//! workspace, connected from the workspace's own network namespace (`Engine::tcp_socket`) to
//! `127.0.0.1:PORT`, else `[::1]:PORT`.
//!
//! Two forms reach the same port:
//! - path: `/p/<ws>/<port>/...` on the API's own origin (`<ws>` is `name` for the caller's own
//!   workspace, `name.user` for anyone's); the prefix is stripped before forwarding and sent as
//!   `X-Forwarded-Prefix`. Responses carry `Content-Security-Policy: sandbox ...` without
//!   `allow-same-origin`, so workspace content runs in an opaque origin and cannot script the API
//!   or other previews; `Location` and cookie paths are moved under the prefix.
//! - subdomain: `Host: <port>--<ws>--<user>.<preview_domain>` when the server has a preview
//!   domain ([`warren_api::ports::subdomain_label`]); the full-fidelity form (its own origin).
//!
//! Who may reach a port is its sharing level ([`PortSharing`], capped by `max_port_sharing`),
//! checked on every request: `owner` needs what exec needs (`auth::decide` with
//! `Op::WorkspaceExec`), `organization` any signed-in active user, `public` nothing. Credentials
//! are a bearer token, or the `warren_preview` cookie of a session opened by a one-time ticket
//! (`POST /workspaces/{ws}/ports/{port}/ticket`, 60 s). Neither ever reaches the workspace: a
//! Warren token in `Authorization` and the Warren cookie are removed before forwarding.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use warren_api::activity::ActivityKind;
use warren_api::auth::{Decision, Op, Owner};
use warren_api::ports::PortSharing;
use warren_api::{ErrorCode, WorkspaceName, WorkspaceState};
use warren_engine::{EngineError, WsRef};
use warren_store::{AuditOutcome, NewAuditRecord, WorkspaceRecord};

use crate::app::AppState;
use crate::auth::{forbidden, hash_secret, Caller};
use crate::error::ApiError;
use crate::metrics::PreviewLabels;

/// The name of the preview session cookie.
pub const COOKIE: &str = "warren_preview";
/// How long a ticket link works (once).
pub const TICKET_TTL: Duration = Duration::from_secs(60);
/// How long a preview session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The sandbox of path-form responses: scripts run, but in an opaque origin.
pub const SANDBOX_CSP: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";
/// Reserved paths under a preview root, never forwarded.
const RESERVED: &str = "/__warren/";
/// The most tickets or sessions kept in all (when full, the oldest goes).
const MAX_ENTRIES: usize = 100_000;
/// The most live tickets, and live sessions, one user has (a new one evicts their oldest), so
/// that no user can crowd out everyone else's.
pub const MAX_PER_USER: usize = 64;

/// What a ticket or session grants: one port of one workspace, on behalf of one token.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The token the ticket was made with (its user, scopes, restriction and revocation apply).
    pub token_id: String,
    /// The token's user (for the per-user quota).
    pub user_id: String,
    /// Workspace id.
    pub ws_id: String,
    /// Port.
    pub port: u16,
}

/// Tickets or sessions by the hash of their secret, with each user's in the order made.
#[derive(Default)]
struct Table {
    entries: HashMap<String, (Grant, Instant)>,
    by_user: HashMap<String, VecDeque<String>>,
}

/// Preview tickets and sessions, in memory (a restart signs browsers out; bearer tokens keep
/// working). Only SHA-256 hashes of their secrets are kept.
#[derive(Default)]
pub struct Previews {
    tickets: Mutex<Table>,
    sessions: Mutex<Table>,
    /// Idle connections into workspace ports.
    upstreams: std::sync::Arc<Upstreams>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn insert(map: &Mutex<Table>, grant: Grant, ttl: Duration) -> String {
    let secret = crate::auth::random_secret();
    let now = Instant::now();
    let hash = hash_secret(&secret);
    let mut guard = lock(map);
    let t = &mut *guard;
    // This user's: forget the used and expired ones, then evict their oldest beyond the quota.
    let mine = t.by_user.entry(grant.user_id.clone()).or_default();
    mine.retain(|h| t.entries.get(h).is_some_and(|(_, exp)| *exp > now));
    while mine.len() >= MAX_PER_USER {
        if let Some(h) = mine.pop_front() {
            t.entries.remove(&h);
        }
    }
    mine.push_back(hash.clone());
    if t.entries.len() >= MAX_ENTRIES {
        // Rare (a full table): drop the expired, then the oldest if still full.
        t.entries.retain(|_, (_, exp)| *exp > now);
        if t.entries.len() >= MAX_ENTRIES {
            if let Some(oldest) = t
                .entries
                .iter()
                .min_by_key(|(_, (_, exp))| *exp)
                .map(|(h, _)| h.clone())
            {
                t.entries.remove(&oldest);
            }
        }
        let entries = &t.entries;
        t.by_user.retain(|_, v| {
            v.retain(|h| entries.contains_key(h) || *h == hash);
            !v.is_empty()
        });
    }
    t.entries.insert(hash, (grant, now + ttl));
    secret
}

impl Previews {
    /// A new one-time ticket for `grant`.
    pub fn ticket(&self, grant: Grant) -> String {
        insert(&self.tickets, grant, TICKET_TTL)
    }

    /// Uses up a ticket: its grant, if it was known and unexpired.
    fn redeem(&self, ticket: &str) -> Option<Grant> {
        let (g, exp) = lock(&self.tickets).entries.remove(&hash_secret(ticket))?;
        (exp > Instant::now()).then_some(g)
    }

    fn open_session(&self, grant: Grant) -> String {
        insert(&self.sessions, grant, SESSION_TTL)
    }

    fn session(&self, cookie: &str) -> Option<Grant> {
        let m = lock(&self.sessions);
        let (g, exp) = m.entries.get(&hash_secret(cookie))?;
        (*exp > Instant::now()).then(|| g.clone())
    }
}

/// Which form of preview URL a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `/p/<ws>/<port>/...`
    Path,
    /// `<port>--<ws>--<user>.<domain>`
    Subdomain,
}

/// A preview request's target.
#[derive(Debug, Clone)]
pub struct Target {
    form: Form,
    /// A workspace key as `find_workspace` takes it: `name` or `name.user`.
    key: String,
    port: u16,
    /// `/p/<ws>/<port>` (path form) or empty.
    prefix: String,
    /// The path and query forwarded.
    rest: String,
}

/// Middleware (outermost): preview requests are answered here, everything else goes on to the API.
pub async fn dispatch(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match target_of(&state, &req) {
        None => next.run(req).await,
        Some(Err(resp)) => resp,
        Some(Ok(t)) => handle(state, req, t).await,
    }
}

fn host_of(req: &Request) -> Option<String> {
    let h = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))?;
    let h = h.to_ascii_lowercase();
    // Domain names only matter here: an IPv6 literal never matches a preview domain.
    Some(match h.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name.to_string()
        }
        _ => h,
    })
}

/// The preview target of a request, if it is one (`Err`: a preview request that is malformed).
fn target_of(state: &AppState, req: &Request) -> Option<Result<Target, Response>> {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if let Some(domain) = &state.cfg.preview_domain {
        if let Some(host) = host_of(req) {
            if let Some(label) = host
                .strip_suffix(domain.as_str())
                .and_then(|h| h.strip_suffix('.'))
            {
                // A host under the domain that is no preview label (the API's own name, say)
                // is the API's.
                if let Some((port, ws, user)) = (!label.contains('.'))
                    .then(|| warren_api::ports::parse_subdomain_label(label))
                    .flatten()
                {
                    return Some(Ok(Target {
                        form: Form::Subdomain,
                        key: format!("{ws}.{user}"),
                        port,
                        prefix: String::new(),
                        rest: path_and_query.to_string(),
                    }));
                }
            }
        }
    }
    let after = req.uri().path().strip_prefix("/p/")?;
    let html = wants_html(req.headers());
    let mut segs = after.splitn(3, '/');
    let key = segs.next().unwrap_or("");
    let port_s = segs.next().unwrap_or("");
    let rest = segs.next();
    let key_ok = match key.split_once('.') {
        Some((n, u)) => WorkspaceName::new(n).is_ok() && WorkspaceName::new(u).is_ok(),
        None => WorkspaceName::new(key).is_ok(),
    };
    if !key_ok {
        return Some(Err(error_response(
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!("no preview at `/p/{key}`"),
            )
            .hint("preview URLs are /p/WORKSPACE/PORT/ or /p/WORKSPACE.USER/PORT/"),
            html,
        )));
    }
    let port = match warren_api::ports::parse_port(port_s) {
        Ok(p) => p,
        Err(e) => {
            return Some(Err(error_response(
                ApiError::bad_request(e)
                    .hint("preview URLs are /p/WORKSPACE/PORT/ with PORT from 1 to 65535"),
                html,
            )))
        }
    };
    let prefix = format!("/p/{key}/{port}");
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let Some(rest) = rest else {
        // `/p/ws/3000`: the root is `/p/ws/3000/`, so that relative links resolve under it.
        return Some(Err((
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, format!("{prefix}/{query}"))],
        )
            .into_response()));
    };
    Some(Ok(Target {
        form: Form::Path,
        key: key.to_string(),
        port,
        rest: format!("/{rest}{query}"),
        prefix,
    }))
}

fn wants_html(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An error as JSON (`ErrorBody`), or as a small page for browsers.
fn error_response(e: ApiError, html: bool) -> Response {
    if !html {
        return e.into_response();
    }
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{status}</title></head><body>\
         <h1>{status}</h1><p>{msg}</p>{hint}<p><code>{code}</code></p></body></html>\n",
        status = e.status,
        msg = escape_html(&e.body.message),
        hint = e
            .body
            .hint
            .as_deref()
            .map(|h| format!("<p>{}</p>", escape_html(h)))
            .unwrap_or_default(),
        code = e.body.code,
    );
    (
        e.status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

async fn handle(state: AppState, req: Request, t: Target) -> Response {
    let html = wants_html(req.headers());
    let resp = match serve(&state, req, &t).await {
        Ok(r) => r,
        Err(e) => error_response(e, html),
    };
    state
        .metrics
        .preview_requests
        .get_or_create(&PreviewLabels {
            form: match t.form {
                Form::Path => "path".into(),
                Form::Subdomain => "subdomain".into(),
            },
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// Whether the request is through TLS as the client sees it.
fn is_https(state: &AppState) -> bool {
    state.cfg.tls.is_some() || state.cfg.public_url.starts_with("https://")
}

fn sign_in_required() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthenticated,
        "sign in to reach this preview",
    )
    .hint(
        "send `Authorization: Bearer <token>`, or open a link from `warren ports open WS PORT` \
         in the browser",
    )
}

fn not_found(key: &str, port: u16) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no workspace port `{key}/{port}`"),
    )
    .hint("`warren ports WS` lists your workspaces' ports and their URLs")
}

/// The workspace a key names for `caller` (`name` is the caller's own, `name.user` anyone's;
/// an anonymous caller must name the user). Host-local workspaces are never reachable.
pub async fn resolve(
    state: &AppState,
    caller: Option<&Caller>,
    key: &str,
    port: u16,
) -> Result<WorkspaceRecord, ApiError> {
    let missing = || match caller {
        Some(_) => not_found(key, port),
        None => sign_in_required(),
    };
    let rec = match (key.split_once('.'), caller) {
        (Some((name, user)), _) => match state.store.user_by_name(user).await? {
            Some(u) => state.store.get_by_name(&u.id, name).await?,
            None => None,
        },
        (None, Some(c)) => match state.store.get_by_name(&c.user.id, key).await? {
            Some(r) => Some(r),
            None if key.len() == 32 => state.store.get(key).await?,
            None => None,
        },
        (None, None) => None,
    };
    rec.filter(|r| !r.ownership.owner_id.is_empty())
        .ok_or_else(missing)
}

/// The sharing level in force for a port: the stored one, capped by the server's maximum.
pub async fn sharing_of(state: &AppState, ws_id: &str, port: u16) -> Result<PortSharing, ApiError> {
    let stored = state
        .store
        .port_share(ws_id, port)
        .await?
        .and_then(|s| s.parse::<PortSharing>().ok())
        .unwrap_or_default();
    Ok(stored.min(state.cfg.max_port_sharing))
}

/// Whether `caller` (None: anonymous) may reach `port` of `rec` now.
pub async fn authorize(
    state: &AppState,
    caller: Option<&Caller>,
    rec: &WorkspaceRecord,
    key: &str,
    port: u16,
) -> Result<(), ApiError> {
    let decision = caller.map(|c| {
        let owner = if rec.ownership.owner_id == c.user.id {
            Owner::Own
        } else {
            Owner::Other
        };
        c.check(Op::WorkspaceExec(owner), Some(&rec.id))
    });
    if decision == Some(Decision::Allow) {
        return Ok(());
    }
    let level = sharing_of(state, &rec.id, port).await?;
    if level == PortSharing::Public {
        return Ok(());
    }
    if level == PortSharing::Organization {
        // Any signed-in user, unless their token is restricted to other workspaces.
        if let Some(c) = caller {
            if c.principal
                .workspaces
                .as_ref()
                .is_none_or(|w| w.contains(&rec.id))
            {
                return Ok(());
            }
        }
    }
    Err(match decision {
        None => sign_in_required(),
        Some(Decision::Forbidden(f)) => forbidden(f),
        Some(_) => not_found(key, port),
    })
}

/// Who is asking, before the workspace is known.
enum Credentials {
    /// A bearer token (bad ones are refused, not taken as anonymous).
    Bearer(Box<Caller>),
    /// The grants of the valid `warren_preview` sessions the request carries for this port.
    Sessions(Vec<Grant>),
}

/// The credentials of a request: a bearer token in any `Authorization` value, else the preview
/// sessions for this port its cookies name.
async fn identify(
    state: &AppState,
    headers: &HeaderMap,
    port: u16,
) -> Result<Credentials, ApiError> {
    if let Some(raw) = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|s| {
            s.strip_prefix("Bearer ")
                .or_else(|| s.strip_prefix("bearer "))
        })
    {
        return Ok(Credentials::Bearer(Box::new(
            crate::auth::authenticate(state, raw.trim()).await?,
        )));
    }
    Ok(Credentials::Sessions(
        cookie_values(headers, COOKIE)
            .iter()
            .take(16)
            .filter_map(|v| state.previews.session(v))
            .filter(|g| g.port == port)
            .collect(),
    ))
}

/// Whether a request authenticated by the preview cookie may use it. Every preview under the
/// preview domain is the same *site*, so `SameSite=Lax` does not stop one preview's page from
/// sending requests to another with its cookie: browsers say where a request comes from
/// (`Sec-Fetch-Site`), and only top-level navigations (`GET`/`HEAD` of a document) may come from
/// another origin. A WebSocket must come from the preview's own origin (`Origin`), which
/// browsers always send on upgrades.
fn cookie_use_allowed(state: &AppState, req: &Request, upgrade: bool) -> Result<(), ApiError> {
    let h = req.headers();
    let get = |n: &str| {
        h.get(n)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_ascii_lowercase())
    };
    let refused = |why: &str| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::PermissionDenied,
            format!("the preview cookie is not accepted on {why}"),
        )
        .hint(
            "preview sessions work for the preview's own pages and links followed to it; \
             other clients send `Authorization: Bearer <token>`",
        )
    };
    let site = get("sec-fetch-site");
    if matches!(site.as_deref(), Some("same-site" | "cross-site")) {
        let navigation = matches!(*req.method(), Method::GET | Method::HEAD)
            && get("sec-fetch-mode").as_deref() == Some("navigate")
            && get("sec-fetch-dest").as_deref() == Some("document");
        if !navigation || upgrade {
            return Err(refused("a request from another site"));
        }
    }
    if upgrade {
        let scheme = if is_https(state) { "https" } else { "http" };
        let own = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))
            .map(|host| format!("{scheme}://{}", host.to_ascii_lowercase()));
        let origin = get("origin");
        if own.is_none() || origin != own {
            return Err(refused("a WebSocket from another origin"));
        }
    }
    Ok(())
}

/// The values of the cookies named `name` in a request.
fn cookie_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string())
        .collect()
}

async fn serve(state: &AppState, req: Request, t: &Target) -> Result<Response, ApiError> {
    if t.rest == "/__warren/auth" || t.rest.starts_with("/__warren/auth?") {
        return redeem(state, t).await;
    }
    if t.rest.starts_with(RESERVED) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such preview path",
        )
        .hint("paths under /__warren/ belong to Warren, not to the workspace"));
    }
    let mut refusal = None;
    let (caller, rec) = match identify(state, req.headers(), t.port).await? {
        Credentials::Bearer(c) => {
            let rec = resolve(state, Some(&c), &t.key, t.port).await;
            (Some(*c), rec)
        }
        Credentials::Sessions(grants) => {
            // The session whose grant is this very workspace and port (another one, planted or
            // left over, neither displaces nor impersonates it).
            let mut found = None;
            for g in grants {
                let Ok(c) = crate::auth::caller_for_token_id(state, &g.token_id).await else {
                    continue;
                };
                if let Ok(r) = resolve(state, Some(&c), &t.key, t.port).await {
                    if r.id == g.ws_id {
                        found = Some((c, r));
                        break;
                    }
                }
            }
            match found {
                Some((c, r)) => match cookie_use_allowed(state, &req, is_upgrade(req.headers())) {
                    Ok(()) => (Some(c), Ok(r)),
                    // Taken as anonymous (a public port still answers), refused if that is not
                    // enough.
                    Err(e) => {
                        refusal = Some(e);
                        (None, resolve(state, None, &t.key, t.port).await)
                    }
                },
                None => (None, resolve(state, None, &t.key, t.port).await),
            }
        }
    };
    let checked = match rec {
        Ok(rec) => authorize(state, caller.as_ref(), &rec, &t.key, t.port)
            .await
            .map(|()| rec),
        Err(e) => Err(e),
    };
    let rec = match (checked, refusal) {
        (Ok(rec), _) => rec,
        (Err(_), Some(refused)) => return Err(refused),
        (Err(e), None) => return Err(e),
    };
    if rec.state != WorkspaceState::Running {
        return Err(not_running(&rec));
    }
    state.activity.touch(&rec.id, ActivityKind::Port);
    forward(state, req, t, caller, rec).await
}

/// Turns a ticket into a session cookie scoped to this preview, then sends the browser to it.
async fn redeem(state: &AppState, t: &Target) -> Result<Response, ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            "this preview link is unknown, already used or expired",
        )
        .hint("links work once within 60 seconds: `warren ports open WS PORT` makes a new one")
    };
    if !t.key.contains('.') {
        // `/p/NAME/...` means the signed-in user's own workspace, whoever that is: a session set
        // there from someone else's ticket would sign the victim's bare-form preview in as them.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "preview links name the workspace's owner",
        )
        .hint("open the link `warren ports open WS PORT` prints: /p/WORKSPACE.USER/PORT/__warren/auth?ticket=..."));
    }
    let query = t.rest.split_once('?').map(|(_, q)| q).unwrap_or("");
    let ticket = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "ticket")
        .map(|(_, v)| v)
        .ok_or_else(invalid)?;
    let grant = state.previews.redeem(ticket).ok_or_else(invalid)?;
    let caller = crate::auth::caller_for_token_id(state, &grant.token_id)
        .await
        .map_err(|_| invalid())?;
    let rec = resolve(state, Some(&caller), &t.key, t.port)
        .await
        .map_err(|_| invalid())?;
    if rec.id != grant.ws_id || t.port != grant.port {
        return Err(invalid());
    }
    let cookie = state.previews.open_session(grant);
    let root = format!("{}/", t.prefix);
    let mut set = format!(
        "{COOKIE}={cookie}; Path={root}; HttpOnly; SameSite=Lax; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    if is_https(state) {
        set.push_str("; Secure");
    }
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, root),
            (header::SET_COOKIE, set),
            (header::CACHE_CONTROL, "no-store".into()),
            (
                HeaderName::from_static("referrer-policy"),
                "no-referrer".into(),
            ),
        ],
    )
        .into_response())
}

fn engine_error(rec: &WorkspaceRecord, e: EngineError) -> ApiError {
    match e {
        EngineError::NotRunning { .. } => not_running(rec),
        other => other.into(),
    }
}

fn not_running(rec: &WorkspaceRecord) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::WorkspaceNotRunning,
        format!("workspace `{}` is not running", rec.name),
    )
    .hint(format!("start it: `warren start {}`", rec.name))
}

fn not_listening(rec: &WorkspaceRecord, port: u16) -> ApiError {
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorCode::PortNotListening,
        format!("nothing listens on port {port} in workspace `{}`", rec.name),
    )
    .hint(format!(
        "start a server on 127.0.0.1:{port} (or [::1]) in the workspace; `warren ports {}` lists what listens",
        rec.name
    ))
}

/// A TCP connection to `port` inside the workspace: `127.0.0.1`, else `[::1]`.
pub async fn connect(
    state: &AppState,
    rec: &WorkspaceRecord,
    port: u16,
) -> Result<tokio::net::TcpStream, ApiError> {
    if rec.state != WorkspaceState::Running {
        return Err(not_running(rec));
    }
    for ipv6 in [false, true] {
        let fd = match state
            .engine
            .tcp_socket(WsRef::Id(rec.id.clone()), ipv6)
            .await
        {
            Ok(fd) => fd,
            Err(e @ EngineError::NotRunning { .. }) => return Err(engine_error(rec, e)),
            Err(_) if ipv6 => break,
            Err(e) => return Err(engine_error(rec, e)),
        };
        let sock = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
        let addr = if ipv6 {
            SocketAddr::from((Ipv6Addr::LOCALHOST, port))
        } else {
            SocketAddr::from((Ipv4Addr::LOCALHOST, port))
        };
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(10), sock.connect(addr)).await {
            let _ = s.set_nodelay(true);
            return Ok(s);
        }
    }
    Err(not_listening(rec, port))
}

/// Headers that describe one connection, never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<String> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    for n in HOP_BY_HOP
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
    {
        h.remove(n);
    }
}

/// The headers sent to the workspace: the client's, without credentials meant for Warren and
/// without hop-by-hop headers, plus `X-Forwarded-*`.
pub fn upstream_headers(
    given: &HeaderMap,
    port: u16,
    prefix: &str,
    client: Option<SocketAddr>,
    https: bool,
    upgrade: bool,
) -> HeaderMap {
    let mut h = given.clone();
    let upgrade_value = h.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut h);
    // A Warren token is Warren's, in any `Authorization` value; other schemes (an app's own Basic
    // auth) pass. (`Proxy-Authorization` is hop-by-hop: never forwarded at all.)
    let is_warren = |v: &HeaderValue| {
        v.as_bytes()
            .windows(4)
            .any(|w| w.eq_ignore_ascii_case(b"wrn_"))
    };
    let auth: Vec<HeaderValue> = h
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter(|v| !is_warren(v))
        .cloned()
        .collect();
    h.remove(header::AUTHORIZATION);
    for v in auth {
        h.append(header::AUTHORIZATION, v);
    }
    // A token offered as a `warren.bearer.<token>` WebSocket subprotocol is Warren's too.
    let protocols: Vec<String> = h
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| {
            !p.is_empty()
                && !p
                    .to_ascii_lowercase()
                    .starts_with(crate::auth::WS_BEARER_PROTOCOL_PREFIX)
        })
        .map(str::to_string)
        .collect();
    if h.contains_key(header::SEC_WEBSOCKET_PROTOCOL) {
        h.remove(header::SEC_WEBSOCKET_PROTOCOL);
        if let Ok(v) = HeaderValue::from_str(&protocols.join(", ")) {
            if !protocols.is_empty() {
                h.insert(header::SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
    }
    let cookies: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty() && pair.split_once('=').map(|(n, _)| n).unwrap_or(pair) != COOKIE
        })
        .map(str::to_string)
        .collect();
    h.remove(header::COOKIE);
    if !cookies.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&cookies.join("; ")) {
            h.insert(header::COOKIE, v);
        }
    }
    let original_host = h.remove(header::HOST);
    for n in [
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-forwarded-prefix",
        "forwarded",
    ] {
        h.remove(n);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("localhost:{port}")) {
        h.insert(header::HOST, v);
    }
    if let Some(ip) = client.map(|c| c.ip().to_string()) {
        let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            h.insert("x-forwarded-for", v);
        }
    }
    h.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    if let Some(host) = original_host {
        h.insert("x-forwarded-host", host);
    }
    if !prefix.is_empty() {
        if let Ok(v) = HeaderValue::from_str(prefix) {
            h.insert("x-forwarded-prefix", v);
        }
    }
    if upgrade {
        if let Some(u) = upgrade_value {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, u);
        }
    }
    h
}

/// The workspace's response headers as the client gets them.
fn downstream_headers(h: &mut HeaderMap, t: &Target, upgraded: bool) {
    let upgrade_value = h.get(header::UPGRADE).cloned();
    strip_hop_by_hop(h);
    if upgraded {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(u) = upgrade_value {
            h.insert(header::UPGRADE, u);
        }
    }
    // The workspace never sets Warren's cookie; in the path form its cookies stay under the prefix.
    let cookies: Vec<HeaderValue> = h.get_all(header::SET_COOKIE).iter().cloned().collect();
    h.remove(header::SET_COOKIE);
    for c in cookies {
        let Ok(s) = c.to_str() else { continue };
        if let Some(s) = rewrite_set_cookie(s, t) {
            if let Ok(v) = HeaderValue::from_str(&s) {
                h.append(header::SET_COOKIE, v);
            }
        }
    }
    if let Some(loc) = h.get(header::LOCATION).and_then(|v| v.to_str().ok()) {
        // The workspace redirecting to itself by its inside name (`http://localhost:PORT/x`)
        // means its own preview; other absolute redirects pass as they are.
        let loc = self_reference(loc, t.port).unwrap_or_else(|| loc.to_string());
        let loc = if t.form == Form::Path
            && loc.starts_with('/')
            && !loc.starts_with("//")
            && !loc.starts_with(&format!("{}/", t.prefix))
            && loc != t.prefix
        {
            format!("{}{loc}", t.prefix)
        } else {
            loc
        };
        if let Ok(v) = HeaderValue::from_str(&loc) {
            h.insert(header::LOCATION, v);
        }
    }
    if t.form == Form::Path {
        h.append(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(SANDBOX_CSP),
        );
    }
}

/// The path of an absolute `Location` that points at the workspace's own port from inside
/// (`localhost`, `127.0.0.1` or `[::1]`, that port; scheme-relative too), else None.
fn self_reference(loc: &str, port: u16) -> Option<String> {
    let rest = loc
        .strip_prefix("http://")
        .or_else(|| loc.strip_prefix("//"))
        .or_else(|| {
            loc.get(..7)
                .filter(|s| s.eq_ignore_ascii_case("http://"))
                .map(|_| &loc[7..])
        })?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let authority = authority.to_ascii_lowercase();
    let (host, p) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h.to_string(), p.parse::<u16>().ok()?),
        _ => (authority.clone(), 80),
    };
    if p != port || !matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]") {
        return None;
    }
    Some(match path.chars().next() {
        Some('/') => path.to_string(),
        _ => format!("/{path}"),
    })
}

/// A workspace's `Set-Cookie` as forwarded, read the way browsers read it (RFC 6265 §5.2:
/// attribute names trimmed and case-insensitive): none without a name, none that names or
/// carries Warren's cookie; never a `Domain` (host-only cookies: a preview cannot set cookies
/// for the API or other previews); in the path form a `Path` under the preview's prefix.
fn rewrite_set_cookie(s: &str, t: &Target) -> Option<String> {
    let mut parts = s.split(';');
    let first = parts.next()?.trim();
    // A pair without `=` is a cookie with an empty name (browsers take it as the value).
    let (name, value) = first.split_once('=')?;
    let (name, value) = (name.trim(), value.trim());
    let warren = COOKIE.to_ascii_lowercase();
    if name.is_empty()
        || name.to_ascii_lowercase().contains(&warren)
        || value.to_ascii_lowercase().contains(&warren)
    {
        return None;
    }
    let mut out = vec![format!("{name}={value}")];
    for attr in parts {
        let (an, av) = match attr.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (attr.trim(), None),
        };
        if an.is_empty() {
            continue;
        }
        if an.eq_ignore_ascii_case("domain") {
            continue;
        }
        if an.eq_ignore_ascii_case("path") && t.form == Form::Path {
            let p = av.unwrap_or("");
            if p.starts_with(&format!("{}/", t.prefix)) || p == t.prefix {
                out.push(format!("Path={p}"));
            } else {
                let p = if p.starts_with('/') {
                    p.to_string()
                } else {
                    format!("/{p}")
                };
                out.push(format!("Path={}{p}", t.prefix));
            }
            continue;
        }
        out.push(match av {
            Some(v) => format!("{an}={v}"),
            None => an.to_string(),
        });
    }
    Some(out.join("; "))
}

async fn forward(
    state: &AppState,
    mut req: Request,
    t: &Target,
    caller: Option<Caller>,
    rec: WorkspaceRecord,
) -> Result<Response, ApiError> {
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let upgrade = is_upgrade(req.headers()) && req.method() == Method::GET;
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let headers = upstream_headers(
        &parts.headers,
        t.port,
        &t.prefix,
        client,
        is_https(state),
        upgrade,
    );
    let mut up = hyper::Request::builder()
        .method(parts.method.clone())
        .uri(t.rest.as_str())
        .version(Version::HTTP_11)
        .body(body)
        .map_err(|e| ApiError::bad_request(format!("cannot forward this request: {e}")))?;
    *up.headers_mut() = headers;
    let bad_gateway = |e: &dyn std::fmt::Display| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::PortNotListening,
            format!(
                "the server on port {} in workspace `{}` did not answer: {e}",
                t.port, rec.name
            ),
        )
        .hint("it may speak something other than HTTP/1.1 there")
    };
    let key = (rec.id.clone(), t.port);
    let fresh = || async {
        let tcp = connect(state, &rec, t.port).await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Body>(TokioIo::new(tcp))
            .await
            .map_err(|e| bad_gateway(&e))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok::<_, ApiError>(sender)
    };
    // An idle keep-alive connection into the workspace if there is one (never for upgrades).
    let pooled = if upgrade {
        None
    } else {
        state.previews.upstreams.take(&key)
    };
    let (sender, mut resp) = match pooled {
        Some(mut sender) => match sender.try_send_request(up).await {
            Ok(resp) => (sender, resp),
            // The workspace closed it meanwhile and the request was not sent: a new one.
            Err(mut e) => match e.take_message() {
                Some(up) => {
                    let mut sender = fresh().await?;
                    let resp = sender.send_request(up).await.map_err(|e| bad_gateway(&e))?;
                    (sender, resp)
                }
                None => return Err(bad_gateway(e.error())),
            },
        },
        None => {
            let mut sender = fresh().await?;
            let resp = sender.send_request(up).await.map_err(|e| bad_gateway(&e))?;
            (sender, resp)
        }
    };
    let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    if upgraded {
        let Some(client_upgrade) = client_upgrade else {
            return Err(bad_gateway(&"it switched protocols without being asked to"));
        };
        let upstream = hyper::upgrade::on(&mut resp);
        let st = state.clone();
        let port = t.port;
        let form = t.form;
        tokio::spawn(async move {
            let (Ok(a), Ok(b)) = tokio::join!(client_upgrade, upstream) else {
                return;
            };
            let session = st.activity.session(&rec.id, ActivityKind::Port);
            let toucher = session.toucher();
            let t0 = Instant::now();
            let mut a = Touching {
                inner: TokioIo::new(a),
                on_read: toucher.clone(),
            };
            let mut b = Touching {
                inner: TokioIo::new(b),
                on_read: toucher,
            };
            let (to_ws, from_ws) = tokio::io::copy_bidirectional(&mut a, &mut b)
                .await
                .unwrap_or((0, 0));
            drop(session);
            audit_session(
                &st,
                SessionAudit {
                    action: "workspace.preview_websocket",
                    caller: caller.as_ref(),
                    client,
                    user_agent,
                    rec: &rec,
                    details: serde_json::json!({
                        "port": port,
                        "form": if form == Form::Path { "path" } else { "subdomain" },
                        "duration_ms": t0.elapsed().as_millis() as u64,
                        "bytes_to_workspace": to_ws,
                        "bytes_from_workspace": from_ws,
                    }),
                },
            )
            .await;
        });
    }
    let (mut rparts, rbody) = resp.into_parts();
    downstream_headers(&mut rparts.headers, t, upgraded);
    if upgraded {
        return Ok(Response::from_parts(rparts, Body::new(rbody)));
    }
    // The connection goes back to the pool once the response has been read to its end.
    let pool = state.previews.upstreams.clone();
    if hyper::body::Body::is_end_stream(&rbody) {
        pool.put(key, sender);
        return Ok(Response::from_parts(rparts, Body::new(rbody)));
    }
    Ok(Response::from_parts(
        rparts,
        Body::new(Returning {
            inner: rbody,
            back: Some((pool, key, sender)),
        }),
    ))
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;
/// A workspace port: (workspace id, port).
type PortKey = (String, u16);

/// How long an idle connection into a workspace is kept for the next request.
const IDLE_TTL: Duration = Duration::from_secs(30);
/// Idle connections kept per workspace port.
const IDLE_MAX: usize = 8;

/// Idle HTTP/1.1 connections into workspace ports, by (workspace id, port): a request through a
/// preview reuses one instead of asking the supervisor for a socket and connecting again.
/// Authorization is per request, never per connection.
#[derive(Default)]
pub struct Upstreams {
    idle: Mutex<HashMap<PortKey, Vec<(Sender, Instant)>>>,
}

impl Upstreams {
    fn take(&self, key: &PortKey) -> Option<Sender> {
        let mut m = lock(&self.idle);
        let v = m.get_mut(key)?;
        v.retain(|(s, at)| !s.is_closed() && at.elapsed() < IDLE_TTL);
        let i = v.iter().position(|(s, _)| s.is_ready())?;
        Some(v.swap_remove(i).0)
    }

    fn put(&self, key: PortKey, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut m = lock(&self.idle);
        m.retain(|_, v| {
            v.retain(|(s, at)| !s.is_closed() && at.elapsed() < IDLE_TTL);
            !v.is_empty()
        });
        let v = m.entry(key).or_default();
        if v.len() < IDLE_MAX {
            v.push((sender, Instant::now()));
        }
    }
}

/// A response body from the workspace that hands its connection back to the pool when it has
/// been read to its end (an error or a client that leaves early drops the connection instead).
struct Returning {
    inner: hyper::body::Incoming,
    back: Option<(std::sync::Arc<Upstreams>, PortKey, Sender)>,
}

impl hyper::body::Body for Returning {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, hyper::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        match &r {
            Poll::Ready(None) => {
                if let Some((pool, key, sender)) = self.back.take() {
                    pool.put(key, sender);
                }
            }
            Poll::Ready(Some(Err(_))) => self.back = None,
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// What is audited about a long-lived connection to a workspace port.
pub struct SessionAudit<'a> {
    /// `workspace.port_forward` or `workspace.preview_websocket`.
    pub action: &'static str,
    /// Who (None: anonymous, through a public port).
    pub caller: Option<&'a Caller>,
    /// From where.
    pub client: Option<SocketAddr>,
    /// Their client.
    pub user_agent: Option<String>,
    /// Which workspace.
    pub rec: &'a WorkspaceRecord,
    /// Port, duration, bytes.
    pub details: serde_json::Value,
}

/// Appends a session's audit record (when it ends, so it says how long it lasted).
pub async fn audit_session(state: &AppState, a: SessionAudit<'_>) {
    let rec = NewAuditRecord {
        request_id: uuid::Uuid::new_v4().simple().to_string(),
        actor_user_id: a.caller.map(|c| c.user.id.clone()),
        actor_username: a.caller.map(|c| c.user.username.clone()),
        actor_token_id: a.caller.map(|c| c.token.id.clone()),
        source_ip: a.client.map(|c| c.ip().to_string()),
        user_agent: a.user_agent,
        action: a.action.into(),
        target_type: "workspace".into(),
        target_id: Some(a.rec.id.clone()),
        target_name: Some(a.rec.name.to_string()),
        outcome: AuditOutcome::Success,
        status: StatusCode::SWITCHING_PROTOCOLS.as_u16(),
        diff_json: None,
        details_json: Some(a.details.to_string()),
    };
    crate::audit::record(state, rec).await;
}

/// A stream that notes activity whenever bytes arrive.
struct Touching<T> {
    inner: T,
    on_read: crate::activity::Toucher,
}

impl<T: AsyncRead + Unpin> AsyncRead for Touching<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.on_read.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Touching<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The base of preview URLs: the server's public URL, and for the subdomain form its scheme and
/// port.
pub fn urls(state: &AppState, ws: &str, user: &str, port: u16) -> (String, Option<String>) {
    let base = state.cfg.public_url.trim_end_matches('/');
    let path = format!("{base}/p/{ws}.{user}/{port}/");
    let sub = state.cfg.preview_domain.as_ref().and_then(|domain| {
        let label = warren_api::ports::subdomain_label(port, ws, user)?;
        let (scheme, rest) = base.split_once("://")?;
        let authority = rest.split('/').next().unwrap_or("");
        let port_suffix = match authority.rsplit_once(':') {
            Some((_, p)) if !p.contains(']') && p.bytes().all(|b| b.is_ascii_digit()) => {
                format!(":{p}")
            }
            _ => String::new(),
        };
        Some(format!("{scheme}://{label}.{domain}{port_suffix}/"))
    });
    (path, sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(form: Form) -> Target {
        Target {
            form,
            key: "web.alice".into(),
            port: 3000,
            prefix: if form == Form::Path {
                "/p/web.alice/3000".into()
            } else {
                String::new()
            },
            rest: "/".into(),
        }
    }

    #[test]
    fn tickets_work_once_and_expire_and_so_do_sessions() {
        let p = Previews::default();
        let g = || Grant {
            token_id: "t".into(),
            user_id: "u".into(),
            ws_id: "w".into(),
            port: 80,
        };
        let t = p.ticket(g());
        assert_eq!(p.redeem(&t).map(|g| g.port), Some(80));
        assert!(p.redeem(&t).is_none(), "a ticket works once");
        assert!(p.redeem("made-up").is_none());
        let t = insert(&p.tickets, g(), Duration::ZERO);
        assert!(p.redeem(&t).is_none(), "an expired ticket is refused");
        let c = p.open_session(g());
        assert!(p.session(&c).is_some());
        let c = insert(&p.sessions, g(), Duration::ZERO);
        assert!(p.session(&c).is_none(), "an expired session grants nothing");
        // Only hashes are kept.
        assert!(!lock(&p.sessions).entries.contains_key(&c));
    }

    #[test]
    fn credentials_never_reach_the_workspace() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wrn_0123_secret"),
        );
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; warren_preview=s3cret; b=2"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("warren_preview=x"));
        h.insert(
            header::HOST,
            HeaderValue::from_static("warren.example:7080"),
        );
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("hop"));
        h.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic eA=="),
        );
        h.insert("x-forwarded-host", HeaderValue::from_static("spoofed"));
        let out = upstream_headers(
            &h,
            3000,
            "/p/web/3000",
            Some("10.0.0.9:5555".parse().unwrap()),
            true,
            false,
        );
        assert!(out.get(header::AUTHORIZATION).is_none());
        assert_eq!(out.get(header::COOKIE).unwrap(), "a=1; b=2");
        assert!(out.get("x-secret").is_none());
        assert!(out.get("proxy-authorization").is_none());
        assert_eq!(out.get(header::HOST).unwrap(), "localhost:3000");
        assert_eq!(out.get("x-forwarded-host").unwrap(), "warren.example:7080");
        assert_eq!(out.get("x-forwarded-for").unwrap(), "10.0.0.9");
        assert_eq!(out.get("x-forwarded-proto").unwrap(), "https");
        assert_eq!(out.get("x-forwarded-prefix").unwrap(), "/p/web/3000");
        // An app's own Basic credentials pass.
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        let out = upstream_headers(&h, 1, "", None, false, false);
        assert_eq!(out.get(header::AUTHORIZATION).unwrap(), "Basic YTpi");
    }

    #[test]
    fn path_form_responses_are_sandboxed_and_kept_under_the_prefix() {
        let t = target(Form::Path);
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_static("/login"));
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("sid=1; Path=/; Domain=example.com; HttpOnly"),
        );
        h.append(
            header::SET_COOKIE,
            HeaderValue::from_static("warren_preview=evil; Path=/"),
        );
        downstream_headers(&mut h, &t, false);
        assert_eq!(h.get(header::LOCATION).unwrap(), "/p/web.alice/3000/login");
        let cookies: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["sid=1; Path=/p/web.alice/3000/; HttpOnly"]);
        assert_eq!(h.get(header::CONTENT_SECURITY_POLICY).unwrap(), SANDBOX_CSP);
        let t = target(Form::Subdomain);
        let mut h = HeaderMap::new();
        h.insert(header::LOCATION, HeaderValue::from_static("/login"));
        downstream_headers(&mut h, &t, false);
        assert_eq!(h.get(header::LOCATION).unwrap(), "/login");
        assert!(h.get(header::CONTENT_SECURITY_POLICY).is_none());
    }

    #[test]
    fn set_cookie_is_read_like_a_browser_reads_it() {
        let path = target(Form::Path);
        let sub = target(Form::Subdomain);
        let r = |s: &str, t: &Target| rewrite_set_cookie(s, t);
        assert_eq!(
            r("sid=1; Path =/; Domain =x", &path).as_deref(),
            Some("sid=1; Path=/p/web.alice/3000/")
        );
        assert_eq!(
            r("sid=1;PATH= /a ; DOMAIN=.x; Secure", &path).as_deref(),
            Some("sid=1; Path=/p/web.alice/3000/a; Secure")
        );
        assert_eq!(
            r("sid=1; Path=/; Domain=preview.test", &sub).as_deref(),
            Some("sid=1; Path=/")
        );
        for bad in [
            "=nameless",
            " =x; Path=/",
            "novalue",
            "warren_preview=x",
            " warren_preview =x",
            "WARREN_PREVIEW=x",
            "x=warren_preview=y",
            "__Host-warren_preview=y",
        ] {
            assert_eq!(r(bad, &path), None, "{bad}");
            assert_eq!(r(bad, &sub), None, "{bad}");
        }
    }

    #[test]
    fn self_redirects_become_the_preview_and_others_pass() {
        assert_eq!(
            self_reference("http://localhost:3000/x?y=1", 3000).as_deref(),
            Some("/x?y=1")
        );
        assert_eq!(
            self_reference("//127.0.0.1:3000", 3000).as_deref(),
            Some("/")
        );
        assert_eq!(
            self_reference("HTTP://[::1]:3000/a", 3000).as_deref(),
            Some("/a")
        );
        assert_eq!(
            self_reference("http://localhost/a", 80).as_deref(),
            Some("/a")
        );
        for other in [
            "http://localhost:3001/",
            "https://evil.example/",
            "//evil.example/",
            "http://localhost.evil.example:3000/",
            "/relative",
        ] {
            assert_eq!(self_reference(other, 3000), None, "{other}");
        }
    }

    #[test]
    fn one_user_cannot_crowd_out_the_others() {
        let p = Previews::default();
        let g = |user: &str| Grant {
            token_id: "t".into(),
            user_id: user.into(),
            ws_id: "w".into(),
            port: 80,
        };
        let alices = p.open_session(g("alice"));
        let first = p.open_session(g("mallory"));
        let rest: Vec<String> = (0..MAX_PER_USER + 10)
            .map(|_| p.open_session(g("mallory")))
            .collect();
        assert!(p.session(&alices).is_some(), "another user's session stays");
        assert!(
            p.session(&first).is_none(),
            "the oldest beyond the quota goes"
        );
        assert!(rest
            .iter()
            .rev()
            .take(MAX_PER_USER)
            .all(|c| p.session(c).is_some()));
        let live = lock(&p.sessions).entries.len();
        assert_eq!(live, MAX_PER_USER + 1);
    }

    #[test]
    fn every_warren_credential_is_stripped() {
        let mut h = HeaderMap::new();
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YTpi"),
        );
        h.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer wrn_0123_secret"),
        );
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("chat, warren.bearer.wrn_0123_secret"),
        );
        h.append(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("Warren.Bearer.wrn_x, v2"),
        );
        let out = upstream_headers(&h, 1, "", None, false, true);
        let auth: Vec<_> = out.get_all(header::AUTHORIZATION).iter().collect();
        assert_eq!(auth, ["Basic YTpi"]);
        assert_eq!(out.get(header::SEC_WEBSOCKET_PROTOCOL).unwrap(), "chat, v2");
    }
}
