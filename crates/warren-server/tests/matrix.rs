//! The endpoint × role × scope matrix: every operation of the OpenAPI document, for every role,
//! with a token holding all of the role's scopes and one lacking the scope the route needs, on the
//! caller's own workspace and on another user's; the answer's class (allowed, 403, 404) must be
//! what `warren_api::auth::decide` says, except for the special cases the table spells out. Then
//! every authenticated route with no, malformed, unknown, revoked, expired and suspended tokens.
//!
//! Fixtures that an allowed request would change are fresh per request. Workspace records are
//! written straight into the server's SQLite store (WAL mode lets a second connection in), so no
//! real workspace is started: the jobs the API starts on them fail quickly, which is fine, since
//! 202 already says the policy let the request through.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use warren_api::auth::{decide, Decision, Op, Owner, Principal, Role, Scope, ScopeSet};
use warren_api::WorkspaceName;
use warren_server::config::ConfigLayer;
use warren_store::{NewSshKey, NewWorkspace, Ownership, Store};

/// How the server answered, as far as authorization goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Anything that is not 401, 403, 404 or 5xx: the policy let it through.
    Allowed,
    /// 404.
    Hidden,
    /// 403.
    Forbidden,
    /// 401: never expected with a valid token.
    Unauthenticated,
    /// 5xx: never expected.
    ServerError,
}

fn classify(status: StatusCode) -> Class {
    match status.as_u16() {
        401 => Class::Unauthenticated,
        403 => Class::Forbidden,
        404 => Class::Hidden,
        s if s >= 500 => Class::ServerError,
        _ => Class::Allowed,
    }
}

fn class_of(d: Decision) -> Class {
    match d {
        Decision::Allow => Class::Allowed,
        Decision::Hidden => Class::Hidden,
        Decision::Forbidden(_) => Class::Forbidden,
    }
}

/// What a route needs, as the authorization policy knows it.
#[derive(Clone, Copy)]
enum Rule {
    /// No authentication at all: called without a token only.
    Unauthenticated,
    /// `decide(op)`.
    Op(Op),
    /// A workspace (or job) route: `decide(op(owner))`, run on the caller's own workspace and on
    /// another user's.
    Ws(fn(Owner) -> Op),
    /// Special case: any signed-in caller, whatever the token's scopes. The scope is the one the
    /// narrow token variant lacks (any will do: none is needed).
    AnyCaller(Scope),
    /// Special case: a listing. `decide(op)` with `workspace = None`, but a hidden answer is a 403
    /// ("this token may not list those workspaces"): there is no single workspace to hide.
    Listing(Op),
    /// Special case: allowed when `decide(op)` allows, otherwise 404 rather than 403 — revoking
    /// another user's token does not disclose that the token id exists.
    HiddenUnless(Op),
    /// Special case: POST /files is for anyone who may push a template (`TemplateWrite`) or
    /// create a workspace from a folder (`WorkspaceWrite(Own)`); otherwise 403.
    Upload,
    /// Special case: approving a device login needs a token with every scope of the caller's
    /// role (so a narrow token cannot mint a broad one); otherwise 403.
    FullRoleToken,
}

impl Rule {
    /// The scope the narrow token lacks.
    fn needed_scope(self) -> Option<Scope> {
        match self {
            Rule::Unauthenticated => None,
            Rule::Op(op) | Rule::Listing(op) | Rule::HiddenUnless(op) => Some(op.scope()),
            Rule::Ws(op) => Some(op(Owner::Own).scope()),
            Rule::AnyCaller(s) => Some(s),
            Rule::Upload => Some(Scope::WorkspaceWrite),
            // Every role has it, so the narrow token always lacks one of the role's scopes.
            Rule::FullRoleToken => Some(Scope::WorkspaceRead),
        }
    }

    fn expected(self, who: &Principal, owner: Owner) -> Class {
        match self {
            Rule::Unauthenticated | Rule::AnyCaller(_) => Class::Allowed,
            Rule::Op(op) => class_of(decide(who, op, None)),
            Rule::Ws(op) => class_of(decide(who, op(owner), Some("fixture"))),
            Rule::Listing(op) => match decide(who, op, None) {
                Decision::Allow => Class::Allowed,
                _ => Class::Forbidden,
            },
            Rule::HiddenUnless(op) => match decide(who, op, None) {
                Decision::Allow => Class::Allowed,
                _ => Class::Hidden,
            },
            Rule::Upload => {
                let tpl = decide(who, Op::TemplateWrite, None);
                let ws = decide(who, Op::WorkspaceWrite(Owner::Own), None);
                if tpl == Decision::Allow || ws == Decision::Allow {
                    Class::Allowed
                } else {
                    Class::Forbidden
                }
            }
            Rule::FullRoleToken => {
                if who.role.scopes().is_subset(&who.scopes) {
                    Class::Allowed
                } else {
                    Class::Forbidden
                }
            }
        }
    }
}

/// One row of the matrix: a route (as the OpenAPI document names it) and one way of calling it.
struct Case {
    method: &'static str,
    path: &'static str,
    variant: &'static str,
    rule: Rule,
}

/// The table. Every operation of the OpenAPI document must appear here at least once.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    use Op::*;
    let c = |method, path, variant, rule| Case { method, path, variant, rule };
    vec![
        // Audit log.
        c("GET", "/api/v1/audit", "", Rule::Op(AuditRead)),
        c("GET", "/api/v1/audit/verify", "", Rule::Op(AuditRead)),
        // Device login: starting and polling are what a signed-out CLI does.
        c("POST", "/api/v1/auth/device", "", Rule::Unauthenticated),
        c("POST", "/api/v1/auth/device/token", "", Rule::Unauthenticated),
        c("POST", "/api/v1/auth/device/approve", "", Rule::FullRoleToken),
        // Uploads.
        c("POST", "/api/v1/files", "", Rule::Upload),
        // Jobs: checked against their workspace.
        c("GET", "/api/v1/jobs/{id}", "", Rule::Ws(WorkspaceRead)),
        c("POST", "/api/v1/jobs/{id}/cancel", "", Rule::Ws(WorkspaceWrite)),
        c("GET", "/api/v1/jobs/{id}/logs", "", Rule::Ws(WorkspaceRead)),
        // Tasks: checked like their workspace would be (owner's or another user's).
        c("POST", "/api/v1/tasks", "", Rule::Op(WorkspaceWrite(Owner::Own))),
        c("GET", "/api/v1/tasks", "", Rule::Listing(WorkspaceRead(Owner::Own))),
        c("GET", "/api/v1/tasks/{id}", "", Rule::Ws(WorkspaceRead)),
        c("GET", "/api/v1/tasks/{id}/logs", "", Rule::Ws(WorkspaceRead)),
        c("GET", "/api/v1/tasks/{id}/artifacts", "", Rule::Ws(WorkspaceRead)),
        c("GET", "/api/v1/tasks/{id}/artifacts/{name}", "", Rule::Ws(WorkspaceRead)),
        c("GET", "/api/v1/tasks/{id}/audit", "", Rule::Ws(WorkspaceRead)),
        c("POST", "/api/v1/tasks/{id}/cancel", "", Rule::Ws(WorkspaceWrite)),
        c("POST", "/api/v1/tasks/{id}/complete", "", Rule::Ws(WorkspaceWrite)),
        // Who am I: any signed-in caller.
        c("GET", "/api/v1/me", "", Rule::AnyCaller(Scope::WorkspaceRead)),
        // SSH keys. One's own are listed and removed by any signed-in caller (as one's own
        // tokens); adding one needs a token with every scope of the role and no workspace
        // restriction, since a key reaches all the user's workspaces and outlives the token.
        // Another user's keys are credential administration (TokenAdmin).
        c("GET", "/api/v1/me/ssh-keys", "", Rule::AnyCaller(Scope::WorkspaceRead)),
        c("POST", "/api/v1/me/ssh-keys", "", Rule::FullRoleToken),
        c("DELETE", "/api/v1/me/ssh-keys/{id}", "", Rule::AnyCaller(Scope::Admin)),
        c("POST", "/api/v1/me/ssh-keys/{id}/verify", "", Rule::FullRoleToken),
        c("GET", "/api/v1/users/{user}/ssh-keys", "", Rule::Op(TokenAdmin)),
        c("DELETE", "/api/v1/users/{user}/ssh-keys/{id}", "", Rule::Op(TokenAdmin)),
        // Quotas and usage: one's own status (and one's teams') and usage for every role that
        // reads workspaces; anyone else's for admins and auditors; every change is QuotaAdmin.
        c("GET", "/api/v1/me/quota", "", Rule::Op(UsageRead(Owner::Own))),
        c("GET", "/api/v1/usage", "", Rule::Op(UsageRead(Owner::Own))),
        c("GET", "/api/v1/quotas/default", "", Rule::Op(UsageRead(Owner::Own))),
        c("PUT", "/api/v1/quotas/default", "", Rule::Op(QuotaAdmin)),
        c("DELETE", "/api/v1/quotas/default", "", Rule::Op(QuotaAdmin)),
        c("GET", "/api/v1/quotas/{kind}/{name}", "self", Rule::Op(UsageRead(Owner::Own))),
        c("GET", "/api/v1/quotas/{kind}/{name}", "other user", Rule::Op(UsageRead(Owner::Other))),
        c("GET", "/api/v1/quotas/{kind}/{name}", "a team one is not in", Rule::Op(UsageRead(Owner::Other))),
        c("PUT", "/api/v1/quotas/{kind}/{name}", "", Rule::Op(QuotaAdmin)),
        c("DELETE", "/api/v1/quotas/{kind}/{name}", "", Rule::Op(QuotaAdmin)),
        c("GET", "/api/v1/quotas/{kind}/{name}/overrides", "self", Rule::Op(UsageRead(Owner::Own))),
        c("GET", "/api/v1/quotas/{kind}/{name}/overrides", "other user", Rule::Op(UsageRead(Owner::Other))),
        c("POST", "/api/v1/quotas/{kind}/{name}/overrides", "", Rule::Op(QuotaAdmin)),
        c("DELETE", "/api/v1/quotas/{kind}/{name}/overrides/{id}", "", Rule::Op(QuotaAdmin)),
        // Teams: listing them is for any signed-in user; changing them is user administration.
        c("GET", "/api/v1/teams", "", Rule::AnyCaller(Scope::WorkspaceRead)),
        c("POST", "/api/v1/teams", "", Rule::Op(UserAdmin)),
        c("DELETE", "/api/v1/teams/{team}", "", Rule::Op(UserAdmin)),
        c("PUT", "/api/v1/teams/{team}/members/{user}", "", Rule::Op(UserAdmin)),
        c("DELETE", "/api/v1/teams/{team}/members/{user}", "", Rule::Op(UserAdmin)),
        // Templates.
        c("GET", "/api/v1/templates", "", Rule::Op(TemplateRead)),
        c("POST", "/api/v1/templates", "", Rule::Op(TemplateWrite)),
        c("GET", "/api/v1/templates/{template}", "", Rule::Op(TemplateRead)),
        c("POST", "/api/v1/templates/{template}/active", "", Rule::Op(TemplateWrite)),
        c("POST", "/api/v1/templates/{template}/archive", "", Rule::Op(TemplateWrite)),
        c("POST", "/api/v1/templates/{template}/unarchive", "", Rule::Op(TemplateWrite)),
        c("GET", "/api/v1/templates/{template}/versions", "", Rule::Op(TemplateRead)),
        c("POST", "/api/v1/templates/{template}/versions", "", Rule::Op(TemplateWrite)),
        c("GET", "/api/v1/templates/{template}/versions/{number}", "", Rule::Op(TemplateRead)),
        // Tokens: one's own need no admin scope (a token may list its user's tokens, create a
        // narrower one, revoke its user's own); another user's need TokenAdmin.
        c("GET", "/api/v1/tokens", "own", Rule::AnyCaller(Scope::Admin)),
        c("GET", "/api/v1/tokens", "other user's", Rule::Op(TokenAdmin)),
        c("POST", "/api/v1/tokens", "own, narrower", Rule::AnyCaller(Scope::Admin)),
        // A token for someone else acts as them: owners only (an admin could otherwise become an
        // owner through an owner's token).
        c("POST", "/api/v1/tokens", "for another user", Rule::Op(OwnerAdmin)),
        c("DELETE", "/api/v1/tokens/{id}", "own", Rule::AnyCaller(Scope::Admin)),
        c("DELETE", "/api/v1/tokens/{id}", "other user's", Rule::HiddenUnless(TokenAdmin)),
        // Users. Reading oneself is allowed to everyone; creating an owner, promoting to owner
        // and changing an owner need OwnerAdmin. Creating an admin needs UserAdmin only.
        c("GET", "/api/v1/users", "", Rule::Op(UserAdmin)),
        c("POST", "/api/v1/users", "member", Rule::Op(UserAdmin)),
        c("POST", "/api/v1/users", "admin", Rule::Op(UserAdmin)),
        c("POST", "/api/v1/users", "owner", Rule::Op(OwnerAdmin)),
        c("GET", "/api/v1/users/{user}", "self", Rule::AnyCaller(Scope::Admin)),
        c("GET", "/api/v1/users/{user}", "other", Rule::Op(UserAdmin)),
        c("PATCH", "/api/v1/users/{user}", "a member's name", Rule::Op(UserAdmin)),
        c("PATCH", "/api/v1/users/{user}", "promote to owner", Rule::Op(OwnerAdmin)),
        c("PATCH", "/api/v1/users/{user}", "an owner's name", Rule::Op(OwnerAdmin)),
        // Workspaces.
        c("GET", "/api/v1/workspaces", "mine", Rule::Listing(WorkspaceRead(Owner::Own))),
        c("GET", "/api/v1/workspaces", "owner=all", Rule::Listing(WorkspaceRead(Owner::Other))),
        c("GET", "/api/v1/workspaces", "owner=other", Rule::Listing(WorkspaceRead(Owner::Other))),
        c("POST", "/api/v1/workspaces", "", Rule::Op(WorkspaceWrite(Owner::Own))),
        c("GET", "/api/v1/workspaces/{ws}", "", Rule::Ws(WorkspaceRead)),
        c("DELETE", "/api/v1/workspaces/{ws}", "", Rule::Ws(WorkspaceWrite)),
        c("PATCH", "/api/v1/workspaces/{ws}", "", Rule::Ws(WorkspaceWrite)),
        c("POST", "/api/v1/workspaces/{ws}/exec", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/exec/ws", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/extend", "", Rule::Ws(WorkspaceWrite)),
        c("GET", "/api/v1/workspaces/{ws}/jobs", "", Rule::Ws(WorkspaceRead)),
        c("GET", "/api/v1/workspaces/{ws}/ssh", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/ssh-access", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/ssh-access", "", Rule::Ws(WorkspaceExec)),
        c("DELETE", "/api/v1/workspaces/{ws}/ssh-access/{id}", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/terminal", "", Rule::Ws(WorkspaceExec)),
        // The toolbox's files: run inside the workspace, reads included, so exec's rule.
        c("GET", "/api/v1/workspaces/{ws}/toolbox/files", "", Rule::Ws(WorkspaceExec)),
        c("PUT", "/api/v1/workspaces/{ws}/toolbox/files", "", Rule::Ws(WorkspaceExec)),
        c("DELETE", "/api/v1/workspaces/{ws}/toolbox/files", "", Rule::Ws(WorkspaceExec)),
        c("PUT", "/api/v1/workspaces/{ws}/toolbox/files/tar", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/toolbox/files/list", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/toolbox/files/stat", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/toolbox/files/mkdir", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/toolbox/files/move", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/toolbox/files/chmod", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/toolbox/files/search", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/toolbox/files/watch", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/logs", "", Rule::Ws(WorkspaceRead)),
        c("GET", "/api/v1/workspaces/{ws}/activity", "", Rule::Ws(WorkspaceRead)),
        c("GET", "/api/v1/workspaces/{ws}/policy", "", Rule::Ws(WorkspaceRead)),
        c("PUT", "/api/v1/workspaces/{ws}/policy", "", Rule::Ws(WorkspaceWrite)),
        c("GET", "/api/v1/workspaces/{ws}/network", "", Rule::Ws(WorkspaceRead)),
        c("PUT", "/api/v1/workspaces/{ws}/network", "", Rule::Ws(WorkspaceWrite)),
        c("DELETE", "/api/v1/workspaces/{ws}/network", "", Rule::Ws(WorkspaceWrite)),
        c("POST", "/api/v1/workspaces/{ws}/keepalive", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/events", "", Rule::Ws(WorkspaceRead)),
        // Toolbox git: every operation runs git in the workspace, reads too.
        c("POST", "/api/v1/workspaces/{ws}/toolbox/git/clone", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/toolbox/git/status", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/toolbox/git/diff", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/toolbox/git/add", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/toolbox/git/commit", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/toolbox/git/branches", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/toolbox/git/branch", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/toolbox/git/checkout", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/toolbox/git/push", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/toolbox/git/pull", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/toolbox/git/log", "", Rule::Ws(WorkspaceExec)),
        // A workspace credential: minted by whoever may change the workspace (as themselves,
        // never broader than their token).
        c("POST", "/api/v1/workspaces/{ws}/credential", "", Rule::Ws(WorkspaceWrite)),
        // Secrets: one's own with the workspace write right (what using them needs), metadata
        // read with the read right; a template's are template administration. Team secrets
        // (members only, others 404) are attacked in tests/secrets.rs.
        c("GET", "/api/v1/secrets", "", Rule::Op(WorkspaceRead(Owner::Own))),
        c("PUT", "/api/v1/secrets/{scope}/{name}", "user", Rule::Op(WorkspaceWrite(Owner::Own))),
        c("PUT", "/api/v1/secrets/{scope}/{name}", "template", Rule::Op(TemplateWrite)),
        c("DELETE", "/api/v1/secrets/{scope}/{name}", "user", Rule::Op(WorkspaceWrite(Owner::Own))),
        c("DELETE", "/api/v1/secrets/{scope}/{name}", "template", Rule::Op(TemplateWrite)),
        // The toolbox runs code in the workspace: exec, reads too.
        c("POST", "/api/v1/workspaces/{ws}/toolbox/process/run", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/toolbox/processes", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/toolbox/processes", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/toolbox/processes/{id}", "", Rule::Ws(WorkspaceExec)),
        c("DELETE", "/api/v1/workspaces/{ws}/toolbox/processes/{id}", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/toolbox/processes/{id}/stdin", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/toolbox/processes/{id}/signal", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/toolbox/processes/{id}/wait", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/toolbox/processes/{id}/output", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/toolbox/sessions", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/toolbox/sessions", "", Rule::Ws(WorkspaceExec)),
        c("DELETE", "/api/v1/workspaces/{ws}/toolbox/sessions/{id}", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/toolbox/sessions/{id}/run", "", Rule::Ws(WorkspaceExec)),
        // Events: one's own (and one's teams'), or everyone's for those who see every workspace.
        c("GET", "/api/v1/events", "mine", Rule::Listing(WorkspaceRead(Owner::Own))),
        c("GET", "/api/v1/events", "owner=all", Rule::Listing(WorkspaceRead(Owner::Other))),
        c("GET", "/api/v1/workspaces/{ws}/ports", "", Rule::Ws(WorkspaceRead)),
        c("PUT", "/api/v1/workspaces/{ws}/ports/{port}", "", Rule::Ws(WorkspaceWrite)),
        // Whoever may reach the port gets a ticket; a port shared with its owner only is what
        // exec allows.
        c("POST", "/api/v1/workspaces/{ws}/ports/{port}/ticket", "", Rule::Ws(WorkspaceExec)),
        c("GET", "/api/v1/workspaces/{ws}/ports/{port}/connect", "", Rule::Ws(WorkspaceExec)),
        c("POST", "/api/v1/workspaces/{ws}/restart", "", Rule::Ws(WorkspaceWrite)),
        c("POST", "/api/v1/workspaces/{ws}/start", "", Rule::Ws(WorkspaceWrite)),
        c("POST", "/api/v1/workspaces/{ws}/stop", "", Rule::Ws(WorkspaceWrite)),
        // Webhooks: every matching event of the server goes to the URL, so owners and admins
        // manage them; auditors read them (never their secrets).
        c("GET", "/api/v1/webhooks", "", Rule::Op(WebhookRead)),
        c("POST", "/api/v1/webhooks", "", Rule::Op(WebhookAdmin)),
        c("GET", "/api/v1/webhooks/{id}", "", Rule::Op(WebhookRead)),
        c("PATCH", "/api/v1/webhooks/{id}", "", Rule::Op(WebhookAdmin)),
        c("DELETE", "/api/v1/webhooks/{id}", "", Rule::Op(WebhookAdmin)),
        c("POST", "/api/v1/webhooks/{id}/test", "", Rule::Op(WebhookAdmin)),
        c("GET", "/api/v1/webhooks/{id}/deliveries", "", Rule::Op(WebhookRead)),
        // MCP: any signed-in caller opens a session; its tools call the API with the same token,
        // which decides each of them (tests/mcp.rs).
        c("POST", "/api/v1/mcp", "", Rule::AnyCaller(Scope::WorkspaceRead)),
        c("DELETE", "/api/v1/mcp", "", Rule::AnyCaller(Scope::WorkspaceRead)),
    ]
}

/// Every (METHOD, path template) of the generated OpenAPI document.
fn openapi_operations() -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(&warren_server::app::openapi_json()).unwrap();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in [
            "get", "put", "post", "delete", "patch", "head", "options", "trace",
        ] {
            if item.get(method).is_some() {
                out.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// The user acting for each role.
fn actor(role: Role) -> &'static str {
    match role {
        Role::Owner => "mx-owner",
        Role::Admin => "mx-admin",
        Role::TemplateAdmin => "mx-tadmin",
        Role::Member => "mx-member",
        Role::Auditor => "mx-auditor",
    }
}

/// Owns the "other user's" workspaces, jobs and tokens.
const OTHER: &str = "mx-other";
/// An owner whose record is changed (PATCH an owner's name).
const OWNER_TARGET: &str = "mx-owner-target";
/// The template workspaces are created from.
const TEMPLATE: &str = "mx-tpl";
/// The team whose members change.
const TEAM: &str = "mx-team";
const DEVCONTAINER: &str = r#"{"image":"busybox"}"#;

/// A request body.
enum Body {
    None,
    Json(Value),
    Tar(Vec<u8>),
}

/// A concrete request.
struct Req {
    method: Method,
    path: String,
    body: Body,
    /// A WebSocket upgrade (GET .../exec/ws, .../ssh, .../terminal).
    websocket: bool,
}

impl Req {
    fn new(method: &str, path: impl Into<String>, body: Body) -> Req {
        Req {
            method: method.parse().unwrap(),
            path: path.into(),
            body,
            websocket: false,
        }
    }
}

/// Sends `req` with `authorization` as the Authorization header (when given); returns the
/// status and the JSON body (Null when not JSON).
async fn send(s: &TestServer, authorization: Option<&str>, req: &Req) -> (StatusCode, Value) {
    if req.websocket {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        use tokio_tungstenite::tungstenite::Error;
        let url = format!("{}{}", s.url.replace("http://", "ws://"), req.path);
        let mut r = url.into_client_request().unwrap();
        if let Some(a) = authorization {
            r.headers_mut().insert("authorization", a.parse().unwrap());
        }
        return match tokio_tungstenite::connect_async(r).await {
            Ok((ws, resp)) => {
                drop(ws);
                (resp.status(), Value::Null)
            }
            Err(Error::Http(resp)) => {
                let body = resp
                    .body()
                    .as_deref()
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .unwrap_or(Value::Null);
                (resp.status(), body)
            }
            Err(e) => panic!("websocket {}: {e}", req.path),
        };
    }
    let mut rb = s
        .http
        .request(req.method.clone(), format!("{}{}", s.url, req.path));
    if let Some(a) = authorization {
        rb = rb.header("authorization", a);
    }
    rb = match &req.body {
        Body::None => rb,
        Body::Json(v) => rb.json(v),
        Body::Tar(b) => rb
            .header("content-type", "application/x-tar")
            .body(b.clone()),
    };
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A well-formed ed25519 public key line, different for every `seed`.
fn ssh_key_line(seed: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut blob = Vec::new();
    for field in [
        &b"ssh-ed25519"[..],
        &sha2::Sha256::digest(seed.as_bytes())[..],
    ] {
        blob.extend_from_slice(&(field.len() as u32).to_be_bytes());
        blob.extend_from_slice(field);
    }
    format!(
        "ssh-ed25519 {} matrix",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

/// A webhook that receives nothing (no budget is exhausted in this test).
fn webhook_body() -> Value {
    json!({"url": "http://127.0.0.1:9/hook", "events": ["budget.exhausted"]})
}

/// A small tar archive holding a devcontainer.json.
fn tar_archive() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let data = DEVCONTAINER.as_bytes();
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, ".devcontainer/devcontainer.json", data)
        .unwrap();
    b.into_inner().unwrap()
}

/// Fixtures: users, tokens, workspace records, jobs, templates.
struct Fx<'a> {
    s: &'a TestServer,
    store: Store,
    org_id: String,
    /// username -> id
    users: HashMap<String, String>,
    /// (role, scope left out) -> token
    tokens: HashMap<(Role, Option<Scope>), String>,
    /// (owner username, what) -> path key of a shared, read-only fixture
    shared: HashMap<(String, &'static str), String>,
    n: u32,
}

impl<'a> Fx<'a> {
    async fn new(s: &'a TestServer) -> Fx<'a> {
        let store = Store::open(&s.state().join("warren.db")).await.unwrap();
        let admin = store.user_by_name("admin").await.unwrap().unwrap();
        let mut fx = Fx {
            s,
            store,
            org_id: admin.org_id,
            users: HashMap::new(),
            tokens: HashMap::new(),
            shared: HashMap::new(),
            n: 0,
        };
        for role in Role::ALL {
            fx.create_user(actor(role), role.as_str()).await;
        }
        fx.create_user(OTHER, "member").await;
        fx.create_user(OWNER_TARGET, "owner").await;
        fx.admin_ok("POST", "/api/v1/teams", json!({"name": TEAM}))
            .await;
        fx.push_template(TEMPLATE).await;
        fx.push_template("mx-scratch").await;
        fx
    }

    fn fresh(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}{}", self.n)
    }

    /// A request as the server's first owner, which must succeed.
    async fn admin_ok(&self, method: &str, path: &str, body: Value) -> Value {
        let req = Req::new(method, path, Body::Json(body));
        let (st, v) = send(self.s, Some(&format!("Bearer {}", self.s.admin)), &req).await;
        assert!(st.is_success(), "fixture {method} {path}: {st} {v}");
        v
    }

    async fn create_user(&mut self, username: &str, role: &str) -> String {
        let v = self
            .admin_ok(
                "POST",
                "/api/v1/users",
                json!({"username": username, "role": role}),
            )
            .await;
        let id = v["id"].as_str().unwrap().to_string();
        self.users.insert(username.to_string(), id.clone());
        id
    }

    async fn push_template(&self, name: &str) {
        self.admin_ok(
            "POST",
            &format!("/api/v1/templates/{name}/versions"),
            json!({"devcontainer": DEVCONTAINER}),
        )
        .await;
    }

    /// A token of `role`'s actor with all the role's scopes but `without`.
    async fn token(&mut self, role: Role, without: Option<Scope>) -> (String, ScopeSet) {
        let mut scopes = role.scopes();
        if let Some(x) = without {
            scopes.0.remove(&x);
        }
        if let Some(t) = self.tokens.get(&(role, without)) {
            return (t.clone(), scopes);
        }
        let names: Vec<&str> = scopes.0.iter().map(|s| s.as_str()).collect();
        let t = self.s.token_for(actor(role), Some(&names)).await;
        self.tokens.insert((role, without), t.clone());
        (t, scopes)
    }

    /// A new workspace record owned by `owner`, in state `pending`.
    async fn workspace(&mut self, owner: &str) -> (String, String) {
        let name = self.fresh("ws");
        let project = self.s.dir.path().join("projects").join(&name);
        let rec = self
            .store
            .create_workspace(NewWorkspace {
                name: WorkspaceName::new(name.clone()).unwrap(),
                project_dir: project.display().to_string(),
                config_path: project
                    .join(".devcontainer/devcontainer.json")
                    .display()
                    .to_string(),
                image: "busybox".into(),
                spec_json: String::new(),
                ownership: Ownership {
                    owner_id: self.users[owner].clone(),
                    org_id: self.org_id.clone(),
                    parameters_json: "{}".into(),
                    ..Default::default()
                },
            })
            .await
            .unwrap();
        (name, rec.id)
    }

    /// How a workspace of `owner` is named in a path by `caller`.
    fn ws_key(name: &str, owner: &str, caller: &str) -> String {
        if owner == caller {
            name.to_string()
        } else {
            format!("{name}.{owner}")
        }
    }

    /// A pending job (recorded directly; no task runs it) on a new workspace of `owner`.
    async fn job(&mut self, owner: &str) -> String {
        let (_, id) = self.workspace(owner).await;
        let job = self
            .store
            .create_job(&id, "start", Some(&self.users[owner].clone()))
            .await
            .unwrap();
        job.id
    }

    async fn shared_workspace(&mut self, owner: &str, caller: &str) -> String {
        let key = (owner.to_string(), "ws");
        if !self.shared.contains_key(&key) {
            let (name, _) = self.workspace(owner).await;
            self.shared.insert(key.clone(), name);
        }
        Self::ws_key(&self.shared[&key], owner, caller)
    }

    /// A running task of `owner` (recorded directly; no runner works on it, and the scheduler
    /// admits queued tasks only), with an artifacts tar holding `a.txt`.
    async fn task(&mut self, owner: &str) -> String {
        let id = format!("t_{}", self.fresh("").replace('-', ""));
        self.store
            .insert_task(&warren_store::TaskRecord {
                id: id.clone(),
                owner_id: self.users[owner].clone(),
                team_id: None,
                template: "fixture".into(),
                template_version: None,
                params_json: "{}".into(),
                repo_url: Some("http://198.19.0.1/r.git".into()),
                base_branch: None,
                branch: "warren/fixture".into(),
                command_json: None,
                shell: Some("true".into()),
                interactive: false,
                time_limit_s: 60,
                idle_limit_s: 60,
                labels_json: "{}".into(),
                secrets_json: "[]".into(),
                artifacts_json: "[]".into(),
                keep: false,
                state: warren_api::task::TaskState::Running,
                reason: None,
                workspace_id: None,
                repo_dir: None,
                credential_token_id: None,
                exit_code: None,
                pushed_branch: None,
                diff: None,
                collected_json: "[]".into(),
                created_at: warren_store::now(),
                started_at: None,
                finished_at: None,
                generation: 1,
            })
            .await
            .unwrap();
        let dir = self.s.state().join("tasks").join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "a.txt", &b"a\n"[..]).unwrap();
        std::fs::write(dir.join("artifacts.tar"), b.into_inner().unwrap()).unwrap();
        id
    }

    async fn shared_task(&mut self, owner: &str) -> String {
        let key = (owner.to_string(), "task");
        if !self.shared.contains_key(&key) {
            let id = self.task(owner).await;
            self.shared.insert(key.clone(), id);
        }
        self.shared[&key].clone()
    }

    async fn shared_job(&mut self, owner: &str) -> String {
        let key = (owner.to_string(), "job");
        if !self.shared.contains_key(&key) {
            let id = self.job(owner).await;
            self.shared.insert(key.clone(), id);
        }
        self.shared[&key].clone()
    }

    /// A token (id) of `username`, made by the admin.
    async fn token_id_of(&self, username: &str) -> String {
        let v = self
            .admin_ok(
                "POST",
                "/api/v1/tokens",
                json!({"user": username, "name": "fixture"}),
            )
            .await;
        v["info"]["id"].as_str().unwrap().to_string()
    }

    /// A new SSH key (id) of `username`, written straight into the store.
    async fn ssh_key_of(&mut self, username: &str) -> String {
        let n = self.fresh("");
        let k = warren_api::ssh_key::parse(&ssh_key_line(&n)).unwrap();
        self.store
            .add_ssh_key(NewSshKey {
                user_id: &self.users.get(username).cloned().unwrap_or_default(),
                name: "fixture",
                key_type: k.key_type.as_str(),
                public_key: &k.openssh(),
                fingerprint: &k.fingerprint(),
            })
            .await
            .unwrap()
            .id
    }

    /// Builds the concrete request of `case` for `caller` on a workspace of `owner`'s kind.
    async fn request(&mut self, case: &Case, caller: &str, owner: Owner) -> Req {
        let ws_owner = match owner {
            Owner::Own => caller,
            Owner::Other => OTHER,
        };
        let (m, path) = (case.method, case.path);
        let j = |v: Value| Body::Json(v);
        match (m, path, case.variant) {
            ("GET", "/api/v1/audit", _) => Req::new(m, "/api/v1/audit?limit=1", Body::None),
            ("GET", "/api/v1/audit/verify", _) => Req::new(m, path, Body::None),
            ("POST", "/api/v1/auth/device", _) => Req::new(m, path, Body::None),
            ("POST", "/api/v1/auth/device/token", _) => {
                Req::new(m, path, j(json!({"device_code": "not-a-device-code"})))
            }
            ("POST", "/api/v1/auth/device/approve", _) => {
                let (st, d) = send(
                    self.s,
                    None,
                    &Req::new("POST", "/api/v1/auth/device", Body::None),
                )
                .await;
                assert_eq!(st, StatusCode::OK, "{d}");
                Req::new(m, path, j(json!({"user_code": d["user_code"]})))
            }
            ("POST", "/api/v1/files", _) => Req::new(m, path, Body::Tar(tar_archive())),
            ("GET", "/api/v1/jobs/{id}", _) => {
                let id = self.shared_job(ws_owner).await;
                Req::new(m, format!("/api/v1/jobs/{id}"), Body::None)
            }
            ("GET", "/api/v1/jobs/{id}/logs", _) => {
                let id = self.shared_job(ws_owner).await;
                Req::new(m, format!("/api/v1/jobs/{id}/logs"), Body::None)
            }
            ("POST", "/api/v1/jobs/{id}/cancel", _) => {
                let id = self.job(ws_owner).await;
                Req::new(m, format!("/api/v1/jobs/{id}/cancel"), Body::None)
            }
            ("POST", "/api/v1/tasks", _) => Req::new(
                m,
                path,
                j(json!({"template": "no-such-template", "interactive": true})),
            ),
            ("GET", "/api/v1/tasks", _) => Req::new(m, path, Body::None),
            (
                "GET",
                "/api/v1/tasks/{id}"
                | "/api/v1/tasks/{id}/logs"
                | "/api/v1/tasks/{id}/artifacts"
                | "/api/v1/tasks/{id}/audit",
                _,
            ) => {
                let id = self.shared_task(ws_owner).await;
                Req::new(m, path.replace("{id}", &id), Body::None)
            }
            ("GET", "/api/v1/tasks/{id}/artifacts/{name}", _) => {
                let id = self.shared_task(ws_owner).await;
                Req::new(m, format!("/api/v1/tasks/{id}/artifacts/a.txt"), Body::None)
            }
            ("POST", "/api/v1/tasks/{id}/cancel" | "/api/v1/tasks/{id}/complete", _) => {
                let id = self.task(ws_owner).await;
                Req::new(m, path.replace("{id}", &id), j(json!({})))
            }
            ("GET", "/api/v1/me", _) => Req::new(m, path, Body::None),
            ("GET", "/api/v1/me/ssh-keys", _) => Req::new(m, path, Body::None),
            ("POST", "/api/v1/me/ssh-keys", _) => {
                let n = self.fresh("");
                Req::new(m, path, j(json!({"public_key": ssh_key_line(&n)})))
            }
            ("DELETE", "/api/v1/me/ssh-keys/{id}", _) => {
                let id = self.ssh_key_of(caller).await;
                Req::new(m, format!("/api/v1/me/ssh-keys/{id}"), Body::None)
            }
            ("POST", "/api/v1/me/ssh-keys/{id}/verify", _) => {
                // A signature that proves nothing: allowed callers get 400, the others 403.
                let id = self.ssh_key_of(caller).await;
                Req::new(
                    m,
                    format!("/api/v1/me/ssh-keys/{id}/verify"),
                    j(json!({"signature": "not a signature"})),
                )
            }
            ("GET", "/api/v1/users/{user}/ssh-keys", _) => {
                Req::new(m, format!("/api/v1/users/{OTHER}/ssh-keys"), Body::None)
            }
            ("DELETE", "/api/v1/users/{user}/ssh-keys/{id}", _) => {
                let id = self.ssh_key_of(OTHER).await;
                Req::new(
                    m,
                    format!("/api/v1/users/{OTHER}/ssh-keys/{id}"),
                    Body::None,
                )
            }
            ("GET", "/api/v1/me/quota", _) => Req::new(m, path, Body::None),
            ("GET", "/api/v1/usage", _) => Req::new(m, "/api/v1/usage?group_by=user", Body::None),
            ("GET" | "DELETE", "/api/v1/quotas/default", _) => {
                // Fresh: an allowed DELETE removes it.
                self.admin_ok("PUT", path, json!({"max_workspaces": 1000}))
                    .await;
                Req::new(m, path, Body::None)
            }
            ("PUT", "/api/v1/quotas/default", _) => {
                Req::new(m, path, j(json!({"max_workspaces": 1000})))
            }
            ("GET", "/api/v1/quotas/{kind}/{name}", "self") => {
                Req::new(m, format!("/api/v1/quotas/users/{caller}"), Body::None)
            }
            ("GET", "/api/v1/quotas/{kind}/{name}", "other user") => {
                Req::new(m, format!("/api/v1/quotas/users/{OTHER}"), Body::None)
            }
            ("GET", "/api/v1/quotas/{kind}/{name}", _) => {
                Req::new(m, format!("/api/v1/quotas/teams/{TEAM}"), Body::None)
            }
            ("PUT", "/api/v1/quotas/{kind}/{name}", _) => Req::new(
                m,
                format!("/api/v1/quotas/users/{OTHER}"),
                j(json!({"max_workspaces": 1000})),
            ),
            ("DELETE", "/api/v1/quotas/{kind}/{name}", _) => {
                let p = format!("/api/v1/quotas/users/{OTHER}");
                self.admin_ok("PUT", &p, json!({"max_workspaces": 1000}))
                    .await;
                Req::new(m, p, Body::None)
            }
            ("GET", "/api/v1/quotas/{kind}/{name}/overrides", "self") => Req::new(
                m,
                format!("/api/v1/quotas/users/{caller}/overrides"),
                Body::None,
            ),
            ("GET", "/api/v1/quotas/{kind}/{name}/overrides", _) => Req::new(
                m,
                format!("/api/v1/quotas/users/{OTHER}/overrides"),
                Body::None,
            ),
            ("POST", "/api/v1/quotas/{kind}/{name}/overrides", _) => Req::new(
                m,
                format!("/api/v1/quotas/users/{OTHER}/overrides"),
                j(json!({"extra_budget": 1, "duration": "1h"})),
            ),
            ("DELETE", "/api/v1/quotas/{kind}/{name}/overrides/{id}", _) => {
                let p = format!("/api/v1/quotas/users/{OTHER}/overrides");
                let o = self
                    .admin_ok("POST", &p, json!({"extra_budget": 1, "duration": "1h"}))
                    .await;
                Req::new(m, format!("{p}/{}", o["id"].as_str().unwrap()), Body::None)
            }
            ("GET", "/api/v1/teams", _) => Req::new(m, path, Body::None),
            ("POST", "/api/v1/teams", _) => {
                let name = self.fresh("team");
                Req::new(m, path, j(json!({ "name": name })))
            }
            ("DELETE", "/api/v1/teams/{team}", _) => {
                let name = self.fresh("team");
                self.admin_ok("POST", "/api/v1/teams", json!({ "name": name }))
                    .await;
                Req::new(m, format!("/api/v1/teams/{name}"), Body::None)
            }
            ("PUT" | "DELETE", "/api/v1/teams/{team}/members/{user}", _) => Req::new(
                m,
                format!("/api/v1/teams/{TEAM}/members/{OTHER}"),
                Body::None,
            ),
            ("GET", "/api/v1/templates", _) => Req::new(m, path, Body::None),
            ("POST", "/api/v1/templates", _) => {
                let name = self.fresh("tpl");
                Req::new(m, path, j(json!({ "name": name })))
            }
            ("GET", "/api/v1/templates/{template}", _) => {
                Req::new(m, format!("/api/v1/templates/{TEMPLATE}"), Body::None)
            }
            ("POST", "/api/v1/templates/{template}/active", _) => Req::new(
                m,
                format!("/api/v1/templates/{TEMPLATE}/active"),
                j(json!({"version": 1})),
            ),
            ("POST", "/api/v1/templates/{template}/archive", _) => {
                let name = self.fresh("tpl");
                self.push_template(&name).await;
                Req::new(m, format!("/api/v1/templates/{name}/archive"), Body::None)
            }
            ("POST", "/api/v1/templates/{template}/unarchive", _) => {
                let name = self.fresh("tpl");
                self.push_template(&name).await;
                self.admin_ok(
                    "POST",
                    &format!("/api/v1/templates/{name}/archive"),
                    json!({}),
                )
                .await;
                Req::new(m, format!("/api/v1/templates/{name}/unarchive"), Body::None)
            }
            ("GET", "/api/v1/templates/{template}/versions", _) => Req::new(
                m,
                format!("/api/v1/templates/{TEMPLATE}/versions"),
                Body::None,
            ),
            ("POST", "/api/v1/templates/{template}/versions", _) => Req::new(
                m,
                "/api/v1/templates/mx-scratch/versions",
                j(json!({"devcontainer": DEVCONTAINER, "activate": false})),
            ),
            ("GET", "/api/v1/templates/{template}/versions/{number}", _) => Req::new(
                m,
                format!("/api/v1/templates/{TEMPLATE}/versions/1"),
                Body::None,
            ),
            ("GET", "/api/v1/tokens", "own") => Req::new(m, path, Body::None),
            ("GET", "/api/v1/tokens", _) => {
                Req::new(m, format!("/api/v1/tokens?user={OTHER}"), Body::None)
            }
            ("POST", "/api/v1/tokens", "own, narrower") => {
                Req::new(m, path, j(json!({"name": "narrower", "lifetime": "1h"})))
            }
            ("POST", "/api/v1/tokens", _) => Req::new(
                m,
                path,
                j(json!({"name": "for-other", "user": OTHER, "lifetime": "1h"})),
            ),
            ("DELETE", "/api/v1/tokens/{id}", variant) => {
                let whose = if variant == "own" { caller } else { OTHER };
                let id = self.token_id_of(whose).await;
                Req::new(m, format!("/api/v1/tokens/{id}"), Body::None)
            }
            ("GET", "/api/v1/users", _) => Req::new(m, path, Body::None),
            ("POST", "/api/v1/users", role) => {
                let name = self.fresh("user");
                Req::new(m, path, j(json!({"username": name, "role": role})))
            }
            ("GET", "/api/v1/users/{user}", "self") => {
                Req::new(m, format!("/api/v1/users/{caller}"), Body::None)
            }
            ("GET", "/api/v1/users/{user}", _) => {
                Req::new(m, format!("/api/v1/users/{OTHER}"), Body::None)
            }
            ("PATCH", "/api/v1/users/{user}", "a member's name") => Req::new(
                m,
                format!("/api/v1/users/{OTHER}"),
                j(json!({"display_name": "Other"})),
            ),
            ("PATCH", "/api/v1/users/{user}", "promote to owner") => {
                let name = self.fresh("user");
                self.create_user(&name, "member").await;
                Req::new(
                    m,
                    format!("/api/v1/users/{name}"),
                    j(json!({"role": "owner"})),
                )
            }
            ("PATCH", "/api/v1/users/{user}", _) => Req::new(
                m,
                format!("/api/v1/users/{OWNER_TARGET}"),
                j(json!({"display_name": "Owner"})),
            ),
            ("GET", "/api/v1/secrets", _) => Req::new(m, path, Body::None),
            ("PUT", "/api/v1/secrets/{scope}/{name}", v) => {
                let scope = if v == "user" {
                    "user".to_string()
                } else {
                    format!("template:{TEMPLATE}")
                };
                let name = self.fresh("sec");
                Req::new(
                    m,
                    format!("/api/v1/secrets/{scope}/{name}"),
                    j(json!({"value": "v"})),
                )
            }
            ("DELETE", "/api/v1/secrets/{scope}/{name}", v) => {
                // Written straight into the store (the route never decrypts it).
                let name = self.fresh("sec");
                let (scope, scope_id, shown) = if v == "user" {
                    ("user", self.users[caller].clone(), "user".to_string())
                } else {
                    let t = self
                        .store
                        .template(&self.org_id, TEMPLATE)
                        .await
                        .unwrap()
                        .unwrap();
                    ("template", t.id, format!("template:{TEMPLATE}"))
                };
                self.store
                    .put_secret(&warren_store::SecretRecord {
                        id: String::new(),
                        name: name.clone(),
                        scope: scope.into(),
                        scope_id,
                        kind: "generic".into(),
                        git_host: None,
                        username: None,
                        nonce: vec![0; 12],
                        ciphertext: vec![0; 17],
                        created_by: None,
                        created_at: String::new(),
                        updated_at: String::new(),
                    })
                    .await
                    .unwrap();
                Req::new(m, format!("/api/v1/secrets/{shown}/{name}"), Body::None)
            }
            ("GET", "/api/v1/workspaces", "mine") => Req::new(m, path, Body::None),
            ("GET", "/api/v1/workspaces", "owner=all") => {
                Req::new(m, "/api/v1/workspaces?owner=all", Body::None)
            }
            ("GET", "/api/v1/workspaces", _) => {
                Req::new(m, format!("/api/v1/workspaces?owner={OTHER}"), Body::None)
            }
            ("GET", "/api/v1/events", "mine") => Req::new(m, path, Body::None),
            ("GET", "/api/v1/events", "owner=all") => {
                Req::new(m, "/api/v1/events?owner=all", Body::None)
            }
            ("POST", "/api/v1/workspaces", _) => {
                let name = self.fresh("ws");
                Req::new(m, path, j(json!({"name": name, "template": TEMPLATE})))
            }
            ("GET", "/api/v1/workspaces/{ws}", _) => {
                let ws = self.shared_workspace(ws_owner, caller).await;
                Req::new(m, format!("/api/v1/workspaces/{ws}"), Body::None)
            }
            (
                "GET",
                "/api/v1/workspaces/{ws}/jobs"
                | "/api/v1/workspaces/{ws}/logs"
                | "/api/v1/workspaces/{ws}/activity"
                | "/api/v1/workspaces/{ws}/policy"
                | "/api/v1/workspaces/{ws}/network"
                | "/api/v1/workspaces/{ws}/events"
                | "/api/v1/workspaces/{ws}/ports",
                _,
            ) => {
                let ws = self.shared_workspace(ws_owner, caller).await;
                Req::new(m, path.replace("{ws}", &ws), Body::None)
            }
            ("DELETE", "/api/v1/workspaces/{ws}/ssh-access/{id}", _) => {
                let (name, ws_id) = self.workspace(ws_owner).await;
                let t = self
                    .store
                    .create_ssh_access(
                        &ws_id,
                        &self.users[ws_owner],
                        &ws_id,
                        None,
                        "2999-01-01T00:00:00.000Z",
                    )
                    .await
                    .unwrap();
                let ws = Self::ws_key(&name, ws_owner, caller);
                Req::new(
                    m,
                    format!("/api/v1/workspaces/{ws}/ssh-access/{}", t.id),
                    Body::None,
                )
            }
            (_, p, _) if p.starts_with("/api/v1/workspaces/{ws}") => {
                // Everything else on a workspace may change it: a fresh one each time.
                let (name, _) = self.workspace(ws_owner).await;
                let ws = Self::ws_key(&name, ws_owner, caller);
                let body = match p {
                    "/api/v1/workspaces/{ws}/exec" => j(json!({"command": ["true"]})),
                    "/api/v1/workspaces/{ws}/toolbox/process/run" => {
                        j(json!({"command": ["true"]}))
                    }
                    "/api/v1/workspaces/{ws}/toolbox/processes" if m == "POST" => {
                        j(json!({"command": ["true"]}))
                    }
                    "/api/v1/workspaces/{ws}/toolbox/processes/{id}/signal" => {
                        j(json!({"signal": "TERM"}))
                    }
                    "/api/v1/workspaces/{ws}/toolbox/sessions" if m == "POST" => j(json!({})),
                    "/api/v1/workspaces/{ws}/toolbox/sessions/{id}/run" => {
                        j(json!({"command": "true"}))
                    }
                    "/api/v1/workspaces/{ws}/extend" => j(json!({"by": "1h"})),
                    "/api/v1/workspaces/{ws}/policy" => j(json!({"ttl": "30d"})),
                    "/api/v1/workspaces/{ws}/network" if m == "PUT" => {
                        j(json!({"deny": ["203.0.113.0/24"]}))
                    }
                    "/api/v1/workspaces/{ws}/ssh-access" if m == "POST" => j(json!({})),
                    "/api/v1/workspaces/{ws}/credential" => j(json!({})),
                    "/api/v1/workspaces/{ws}" if m == "PATCH" => j(json!({"parameters": {}})),
                    "/api/v1/workspaces/{ws}/ports/{port}" => j(json!({"sharing": "organization"})),
                    "/api/v1/workspaces/{ws}/toolbox/files/mkdir" => j(json!({"path": "/tmp/m"})),
                    "/api/v1/workspaces/{ws}/toolbox/files/move" => {
                        j(json!({"from": "/tmp/a", "to": "/tmp/b"}))
                    }
                    "/api/v1/workspaces/{ws}/toolbox/files/chmod" => {
                        j(json!({"path": "/tmp/a", "mode": "0644"}))
                    }
                    "/api/v1/workspaces/{ws}/toolbox/git/clone" => {
                        j(json!({"url": "https://git.example.com/r.git"}))
                    }
                    "/api/v1/workspaces/{ws}/toolbox/git/add" => j(json!({})),
                    "/api/v1/workspaces/{ws}/toolbox/git/commit" => j(json!({"message": "m"})),
                    "/api/v1/workspaces/{ws}/toolbox/git/branch" => j(json!({"name": "b"})),
                    "/api/v1/workspaces/{ws}/toolbox/git/checkout" => j(json!({"branch": "b"})),
                    "/api/v1/workspaces/{ws}/toolbox/git/push" => j(json!({"branch": "b"})),
                    "/api/v1/workspaces/{ws}/toolbox/git/pull" => j(json!({})),
                    _ => Body::None,
                };
                let query = if p.ends_with("/terminal") {
                    "?session=matrix"
                } else if p.ends_with("/toolbox/files/search") {
                    "?path=/tmp&glob=*"
                } else if p.ends_with("/toolbox/files") || p.contains("/toolbox/files/") {
                    "?path=/tmp"
                } else {
                    ""
                };
                // Toolbox ids live in the server's memory: an allowed caller gets 400 for a
                // malformed one, the others 403/404 before it is looked at.
                let path = p
                    .replace("{ws}", &ws)
                    .replace("{port}", "8080")
                    .replace("{id}", "bad");
                let mut req = Req::new(m, format!("{path}{query}"), body);
                req.websocket = p.ends_with("/exec/ws")
                    || p.ends_with("/ssh")
                    || p.ends_with("/terminal")
                    || p.ends_with("/connect");
                req
            }
            ("POST", "/api/v1/mcp", _) => Req::new(
                m,
                path,
                j(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                    "params": {"protocolVersion": "2025-06-18"}})),
            ),
            // No session named: 400, past authentication.
            ("DELETE", "/api/v1/mcp", _) => Req::new(m, path, Body::None),
            ("GET", "/api/v1/webhooks", _) => Req::new(m, path, Body::None),
            ("POST", "/api/v1/webhooks", _) => Req::new(m, path, j(webhook_body())),
            ("DELETE", "/api/v1/webhooks/{id}", _) => {
                let v = self
                    .admin_ok("POST", "/api/v1/webhooks", webhook_body())
                    .await;
                let id = v["webhook"]["id"].as_str().unwrap().to_owned();
                Req::new(m, format!("/api/v1/webhooks/{id}"), Body::None)
            }
            (_, p, _) if p.starts_with("/api/v1/webhooks/{id}") => {
                let key = ("admin".to_string(), "webhook");
                if !self.shared.contains_key(&key) {
                    let v = self
                        .admin_ok("POST", "/api/v1/webhooks", webhook_body())
                        .await;
                    let id = v["webhook"]["id"].as_str().unwrap().to_owned();
                    self.shared.insert(key.clone(), id);
                }
                let body = match m {
                    "POST" => j(json!({})),
                    "PATCH" => j(json!({"disabled": false})),
                    _ => Body::None,
                };
                Req::new(m, p.replace("{id}", &self.shared[&key]), body)
            }
            _ => panic!("no request builder for {m} {path} ({})", case.variant),
        }
    }
}

fn token_label(without: Option<Scope>) -> String {
    match without {
        None => "all scopes".into(),
        Some(x) => format!("-{x}"),
    }
}

/// A mismatch between the policy and the server.
struct Row {
    route: String,
    role: Role,
    token: String,
    owner: Owner,
    want: Class,
    got: Class,
    detail: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_role_scope_and_owner_follows_the_policy() {
    let t0 = Instant::now();
    // The reconciler would otherwise settle the fixture records (pending, no host state) behind
    // the test's back.
    let s = TestServer::start_with(ConfigLayer {
        reconcile_interval: Some("1h".into()),
        ..Default::default()
    })
    .await;
    let table = cases();

    // The table covers exactly the routes of the OpenAPI document.
    let documented = openapi_operations();
    let covered: BTreeSet<(String, String)> = table
        .iter()
        .map(|c| (c.method.to_string(), c.path.to_string()))
        .collect();
    let missing: Vec<_> = documented.difference(&covered).collect();
    let stale: Vec<_> = covered.difference(&documented).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "the matrix table is out of date:\n  routes without a matrix entry: {missing:?}\n  entries for no route: {stale:?}"
    );

    let mut fx = Fx::new(&s).await;
    // MATRIX_VERBOSE=1 prints every request and its answer.
    let verbose = std::env::var_os("MATRIX_VERBOSE").is_some();
    let mut rows: Vec<Row> = Vec::new();
    let mut requests = 0;
    for case in &table {
        let route = if case.variant.is_empty() {
            format!("{} {}", case.method, case.path)
        } else {
            format!("{} {} [{}]", case.method, case.path, case.variant)
        };
        if let Rule::Unauthenticated = case.rule {
            let req = fx.request(case, "admin", Owner::Own).await;
            let (st, body) = send(&s, None, &req).await;
            requests += 1;
            if classify(st) != Class::Allowed {
                rows.push(Row {
                    route: route.clone(),
                    role: Role::Owner,
                    token: "none".into(),
                    owner: Owner::Own,
                    want: Class::Allowed,
                    got: classify(st),
                    detail: format!("{st} {body}"),
                });
            }
            continue;
        }
        for role in Role::ALL {
            let caller = actor(role);
            // All of the role's scopes, then all but the one the route needs (when the role has
            // it at all; otherwise the two tokens are the same).
            let mut variants = vec![None];
            if let Some(x) = case.rule.needed_scope() {
                if role.scopes().has(x) {
                    variants.push(Some(x));
                }
            }
            for without in variants {
                let (token, scopes) = fx.token(role, without).await;
                let who = Principal {
                    role,
                    scopes,
                    workspaces: None,
                };
                let owners: &[Owner] = match case.rule {
                    Rule::Ws(_) => &[Owner::Own, Owner::Other],
                    _ => &[Owner::Own],
                };
                for &owner in owners {
                    let req = fx.request(case, caller, owner).await;
                    let (st, body) = send(&s, Some(&format!("Bearer {token}")), &req).await;
                    requests += 1;
                    // The fixtures never run: a port route that says so (503) got past
                    // authorization, which comes first.
                    let got = if body["code"] == "workspace_not_running" {
                        Class::Allowed
                    } else {
                        classify(st)
                    };
                    let want = case.rule.expected(&who, owner);
                    if verbose {
                        eprintln!(
                            "{route:<58} {:<14} {:<18} {owner:<5?} {st} {}",
                            role.as_str(),
                            token_label(without),
                            body["code"].as_str().unwrap_or("")
                        );
                    }
                    if got != want {
                        rows.push(Row {
                            route: route.clone(),
                            role,
                            token: token_label(without),
                            owner,
                            want,
                            got,
                            detail: format!("{st} {}", body["message"].as_str().unwrap_or("")),
                        });
                    } else if matches!(got, Class::Forbidden | Class::Hidden) {
                        // Refusals are proper API errors.
                        let code = body["code"].as_str().unwrap_or("");
                        let expect = if got == Class::Forbidden {
                            "permission_denied"
                        } else {
                            "not_found"
                        };
                        if code != expect {
                            rows.push(Row {
                                route: route.clone(),
                                role,
                                token: token_label(without),
                                owner,
                                want,
                                got,
                                detail: format!("code `{code}`, expected `{expect}`: {body}"),
                            });
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "matrix: {} cases, {requests} requests in {:.1}s",
        table.len(),
        t0.elapsed().as_secs_f64()
    );
    if !rows.is_empty() {
        let mut out = format!(
            "{} mismatch(es) between the server and the policy:\n{:<58} {:<14} {:<18} {:<5} {:<9} {:<9} detail\n",
            rows.len(),
            "route",
            "role",
            "token",
            "ws",
            "expected",
            "got"
        );
        for r in &rows {
            out += &format!(
                "{:<58} {:<14} {:<18} {:<5} {:<9} {:<9} {}\n",
                r.route,
                r.role.as_str(),
                r.token,
                format!("{:?}", r.owner),
                format!("{:?}", r.want),
                format!("{:?}", r.got),
                r.detail
            );
        }
        panic!("{out}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_authenticated_route_refuses_bad_tokens_with_401() {
    let s = TestServer::start_with(ConfigLayer {
        reconcile_interval: Some("1h".into()),
        ..Default::default()
    })
    .await;
    let mut fx = Fx::new(&s).await;

    // Revoked.
    let revoked = s.token_for("mx-member", None).await;
    let (st, me) = s.get(&revoked, "/api/v1/me").await;
    assert_eq!(st, StatusCode::OK, "{me}");
    let id = me["token"]["id"].as_str().unwrap();
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // Suspended user.
    fx.create_user("mx-suspended", "member").await;
    let suspended = s.token_for("mx-suspended", None).await;
    assert_eq!(s.get(&suspended, "/api/v1/me").await.0, StatusCode::OK);
    let (st, v) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/users/mx-suspended",
            Some(json!({"suspended": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Expired: a one-second token, then past its second.
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/tokens",
            json!({"user": "mx-member", "lifetime": "1s", "name": "short"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let expired = v["token"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let unknown = format!("wrn_{}_{}", "0123456789abcdef".repeat(2), "a".repeat(43));
    let wrong_secret = format!("{}x", &s.admin[..s.admin.len() - 1]);
    let bad: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("not bearer", Some(format!("Basic {}", s.admin))),
        ("malformed", Some("Bearer garbage".into())),
        (
            "malformed id",
            Some(format!("Bearer wrn_{}_{}", "z".repeat(32), "a".repeat(43))),
        ),
        ("unknown", Some(format!("Bearer {unknown}"))),
        ("wrong secret", Some(format!("Bearer {wrong_secret}"))),
        ("revoked", Some(format!("Bearer {revoked}"))),
        ("expired", Some(format!("Bearer {expired}"))),
        ("suspended", Some(format!("Bearer {suspended}"))),
    ];

    let mut failures = Vec::new();
    let mut requests = 0;
    for case in &cases() {
        if let Rule::Unauthenticated = case.rule {
            continue;
        }
        // Built as the owner would send it; none of these requests gets past authentication.
        let req = fx.request(case, actor(Role::Owner), Owner::Own).await;
        for (what, auth) in &bad {
            let (st, body) = send(&s, auth.as_deref(), &req).await;
            requests += 1;
            let ok = st == StatusCode::UNAUTHORIZED
                && body["code"] == "unauthenticated"
                && body["message"].as_str().is_some_and(|m| !m.is_empty())
                && body["hint"].as_str().is_some_and(|h| !h.is_empty());
            if !ok {
                failures.push(format!(
                    "{} {} [{}] with {what}: {st} {body}",
                    case.method, case.path, case.variant
                ));
            }
        }
    }
    assert!(requests > 0);
    assert!(
        failures.is_empty(),
        "{} request(s) with a bad token were not 401 unauthenticated with a hint:\n{}",
        failures.len(),
        failures.join("\n")
    );
    s.stop().await;
}
