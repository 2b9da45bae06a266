//! Bad input against a real server: unknown fields and wrong types in every JSON body, bodies that
//! are not JSON, oversized bodies, invalid names, unknown routes and methods, concurrent
//! conflicting transitions, and a database that is unusable at start-up (the real binary).
//!
//! Every error answer must be JSON with a stable `code` and a `message`, and must not leak
//! internals: paths of the state directory, database driver names, Rust type names.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{warren_exe, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use warren_server::config::ConfigLayer;

/// A real public key, made by `ssh-keygen -t ed25519`.
const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC6uojqC60a9RKdYNYPiV2yjCzRBjcukyIhUrvGPJZTw bad-input";

/// Checks an error answer: status, JSON `code`, a message, and nothing internal in it.
fn check_error(
    state_dir: &Path,
    what: &str,
    status: StatusCode,
    body: &Value,
    want_status: StatusCode,
    want_code: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    if status != want_status || body["code"] != want_code {
        problems.push(format!(
            "{what}: expected {want_status} `{want_code}`, got {status} {body}"
        ));
    }
    problems.extend(internals(state_dir, what, body));
    problems
}

/// Whatever in an error body looks like an internal: a path under the state directory, the
/// database driver, Rust type or module names, panics. Also checks the body's shape.
fn internals(state_dir: &Path, what: &str, body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if !body["code"].is_string() || body["message"].as_str().is_none_or(|m| m.is_empty()) {
        problems.push(format!(
            "{what}: not a JSON error with code and message: {body}"
        ));
        return problems;
    }
    let text = body.to_string();
    let state = state_dir.display().to_string();
    let mut leaks: Vec<&str> = Vec::new();
    if text.contains(&state) {
        leaks.push("the state directory");
    }
    for needle in [
        "sqlx",
        "sqlite",
        "SQLITE",
        "StoreError",
        "EngineError",
        "panicked",
        "warren_",
        "::",
        "/tmp/",
    ] {
        if text.contains(needle) {
            leaks.push(needle);
        }
    }
    // serde's default wording for derived types: "expected struct Ceilings", "enum Role".
    for kw in ["struct ", "enum ", "tuple struct "] {
        for (i, _) in text.match_indices(kw) {
            if text[i + kw.len()..].starts_with(|c: char| c.is_ascii_uppercase()) {
                leaks.push("a Rust type name");
            }
        }
    }
    // Rust's primitive types: "expected i64", "expected u16".
    let words: Vec<&str> = text.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    for prim in [
        "i8", "i16", "i32", "i64", "i128", "isize", "u8", "u16", "u32", "u64", "u128", "usize",
        "f32", "f64",
    ] {
        if words.contains(&prim) {
            leaks.push("a Rust primitive type name");
        }
    }
    if !leaks.is_empty() {
        problems.push(format!(
            "{what}: the error shows internals ({leaks:?}): {body}"
        ));
    }
    problems
}

/// A JSON-body route: where to send it, a valid body, and a known field with a value of the
/// wrong type.
struct JsonRoute {
    method: &'static str,
    route: &'static str,
    path: String,
    valid: Value,
    field: &'static str,
    wrong: Value,
    /// Sent without a token (device login polling).
    anonymous: bool,
}

/// Every (METHOD, path) of the OpenAPI document whose request body is JSON.
fn json_operations() -> BTreeSet<(String, String)> {
    let doc: Value = serde_json::from_str(&warren_server::app::openapi_json()).unwrap();
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        // MCP speaks JSON-RPC, whose errors are JSON-RPC error objects, and whose arrays are
        // batches: `mcp_bad_json_rpc_is_refused` below and tests/mcp.rs cover its bad input.
        if path == "/api/v1/mcp" {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            if op["requestBody"]["content"]["application/json"].is_object() {
                out.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out
}

async fn send_raw(
    s: &TestServer,
    token: Option<&str>,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let mut rb = s
        .http
        .request(method.parse().unwrap(), format!("{}{path}", s.url));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        rb = rb.header("content-type", ct);
    }
    let resp = rb.body(body).send().await.unwrap();
    let st = resp.status();
    let text = resp.text().await.unwrap();
    (st, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// One row per known field of every JSON route worth a wrong-type check (at least one row per
/// route). Fixtures: user `bi-user`, template `bi-tpl`.
#[rustfmt::skip]
fn json_routes() -> Vec<JsonRoute> {
    let r = |method, route, path: &str, valid, field, wrong| JsonRoute {
        method, route, path: path.to_string(), valid, field, wrong, anonymous: false,
    };
    let dc = json!({"devcontainer": "{\"image\":\"busybox\"}"});
    let versions = "/api/v1/templates/bi-tpl/versions";
    let ws = json!({"name": "bi-ws", "template": "bi-tpl"});
    vec![
        r("POST", "/api/v1/users", "/api/v1/users", json!({"username": "bi-new", "role": "member"}), "username", json!(5)),
        r("POST", "/api/v1/users", "/api/v1/users", json!({"username": "bi-new"}), "role", json!(5)),
        r("PATCH", "/api/v1/users/{user}", "/api/v1/users/bi-user", json!({"display_name": "B"}), "suspended", json!("yes")),
        r("POST", "/api/v1/tokens", "/api/v1/tokens", json!({"name": "t"}), "scopes", json!("admin")),
        r("POST", "/api/v1/tokens", "/api/v1/tokens", json!({"name": "t"}), "lifetime", json!(30)),
        r("POST", "/api/v1/teams", "/api/v1/teams", json!({"name": "bi-team"}), "name", json!(["a"])),
        r("POST", "/api/v1/me/ssh-keys", "/api/v1/me/ssh-keys", json!({"public_key": ED25519}), "public_key", json!(5)),
        r("POST", "/api/v1/me/ssh-keys", "/api/v1/me/ssh-keys", json!({"public_key": ED25519}), "name", json!(["a"])),
        r("POST", "/api/v1/me/ssh-keys/{id}/verify", "/api/v1/me/ssh-keys/x/verify", json!({"signature": "x"}), "signature", json!(5)),
        r("POST", "/api/v1/auth/device/approve", "/api/v1/auth/device/approve", json!({"user_code": "BCDF-GHJK"}), "user_code", json!(true)),
        JsonRoute {
            anonymous: true,
            ..r("POST", "/api/v1/auth/device/token", "/api/v1/auth/device/token", json!({"device_code": "x"}), "device_code", json!(1))
        },
        r("POST", "/api/v1/workspaces", "/api/v1/workspaces", ws.clone(), "template_version", json!("one")),
        r("POST", "/api/v1/workspaces", "/api/v1/workspaces", ws.clone(), "limits", json!("big")),
        r("POST", "/api/v1/workspaces", "/api/v1/workspaces", ws.clone(), "parameters", json!([1])),
        r("POST", "/api/v1/workspaces", "/api/v1/workspaces", ws.clone(), "secrets", json!("gh")),
        r("POST", "/api/v1/workspaces/{ws}/extend", "/api/v1/workspaces/bi-ws/extend", json!({"by": "1h"}), "by", json!(3600)),
        r("PUT", "/api/v1/workspaces/{ws}/policy", "/api/v1/workspaces/bi-ws/policy", json!({"ttl": "7d"}), "ttl", json!(604800)),
        r("PUT", "/api/v1/workspaces/{ws}/policy", "/api/v1/workspaces/bi-ws/policy", json!({"ttl": "7d"}), "autostart", json!("on")),
        r("PUT", "/api/v1/workspaces/{ws}/policy", "/api/v1/workspaces/bi-ws/policy", json!({"ttl": "7d"}), "delete_on_stop", json!("yes")),
        r("POST", "/api/v1/workspaces", "/api/v1/workspaces", ws.clone(), "policy", json!({"idle": "1h"})),
        r("POST", "/api/v1/workspaces", "/api/v1/workspaces", ws, "network", json!({"egress": "open"})),
        r("PUT", "/api/v1/workspaces/{ws}/network", "/api/v1/workspaces/bi-ws/network", json!({"deny": ["203.0.113.0/24"]}), "deny", json!("203.0.113.0/24")),
        r("PUT", "/api/v1/workspaces/{ws}/network", "/api/v1/workspaces/bi-ws/network", json!({}), "egress", json!("block")),
        r("PUT", "/api/v1/workspaces/{ws}/network", "/api/v1/workspaces/bi-ws/network", json!({}), "max_connections", json!(-1)),
        r("PATCH", "/api/v1/workspaces/{ws}", "/api/v1/workspaces/bi-ws", json!({"parameters": {}}), "template_version", json!("two")),
        r("PATCH", "/api/v1/workspaces/{ws}", "/api/v1/workspaces/bi-ws", json!({"parameters": {}}), "parameters", json!([1])),
        r("POST", "/api/v1/workspaces/{ws}/exec", "/api/v1/workspaces/bi-ws/exec", json!({"command": ["true"]}), "command", json!("true")),
        r("PUT", "/api/v1/workspaces/{ws}/ports/{port}", "/api/v1/workspaces/bi-ws/ports/8080", json!({"sharing": "organization"}), "sharing", json!(5)),
        r("POST", "/api/v1/workspaces/{ws}/exec", "/api/v1/workspaces/bi-ws/exec", json!({"command": ["true"]}), "tty", json!("80x24")),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/git/clone", "/api/v1/workspaces/bi-ws/toolbox/git/clone", json!({"url": "https://git.example.com/r.git"}), "depth", json!("one")),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/git/clone", "/api/v1/workspaces/bi-ws/toolbox/git/clone", json!({"url": "https://git.example.com/r.git"}), "url", json!(["x"])),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/git/add", "/api/v1/workspaces/bi-ws/toolbox/git/add", json!({}), "files", json!("a.txt")),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/git/commit", "/api/v1/workspaces/bi-ws/toolbox/git/commit", json!({"message": "m"}), "message", json!(5)),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/git/commit", "/api/v1/workspaces/bi-ws/toolbox/git/commit", json!({"message": "m"}), "allow_empty", json!("yes")),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/git/branch", "/api/v1/workspaces/bi-ws/toolbox/git/branch", json!({"name": "b"}), "name", json!(5)),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/git/checkout", "/api/v1/workspaces/bi-ws/toolbox/git/checkout", json!({"branch": "b"}), "create", json!("yes")),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/git/push", "/api/v1/workspaces/bi-ws/toolbox/git/push", json!({}), "set_upstream", json!("yes")),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/git/pull", "/api/v1/workspaces/bi-ws/toolbox/git/pull", json!({}), "rebase", json!(1)),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/process/run", "/api/v1/workspaces/bi-ws/toolbox/process/run", json!({"command": ["true"]}), "command", json!("true")),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/process/run", "/api/v1/workspaces/bi-ws/toolbox/process/run", json!({"shell": "true"}), "env", json!(["A=1"])),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/process/run", "/api/v1/workspaces/bi-ws/toolbox/process/run", json!({"shell": "true"}), "timeout", json!(30)),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/processes", "/api/v1/workspaces/bi-ws/toolbox/processes", json!({"shell": "true"}), "name", json!(5)),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/processes/{id}/signal", "/api/v1/workspaces/bi-ws/toolbox/processes/p_0000000000000000/signal", json!({"signal": "TERM"}), "signal", json!(true)),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/sessions", "/api/v1/workspaces/bi-ws/toolbox/sessions", json!({}), "cwd", json!(5)),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/sessions/{id}/run", "/api/v1/workspaces/bi-ws/toolbox/sessions/s_0000000000000000/run", json!({"command": "true"}), "command", json!(["true"])),
        r("POST", "/api/v1/workspaces/{ws}/ssh-access", "/api/v1/workspaces/bi-ws/ssh-access", json!({}), "lifetime", json!(3600)),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/files/mkdir", "/api/v1/workspaces/bi-ws/toolbox/files/mkdir", json!({"path": "/tmp/d"}), "parents", json!("yes")),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/files/move", "/api/v1/workspaces/bi-ws/toolbox/files/move", json!({"from": "/tmp/a", "to": "/tmp/b"}), "overwrite", json!(1)),
        r("POST", "/api/v1/workspaces/{ws}/toolbox/files/chmod", "/api/v1/workspaces/bi-ws/toolbox/files/chmod", json!({"path": "/tmp/a", "mode": "0644"}), "mode", json!(420)),
        r("POST", "/api/v1/workspaces/{ws}/credential", "/api/v1/workspaces/bi-ws/credential", json!({}), "lifetime", json!(3600)),
        r("PUT", "/api/v1/secrets/{scope}/{name}", "/api/v1/secrets/user/bi-secret", json!({"value": "v"}), "value", json!(5)),
        r("PUT", "/api/v1/secrets/{scope}/{name}", "/api/v1/secrets/user/bi-secret", json!({"value": "v"}), "git_host", json!(["h"])),
        r("PUT", "/api/v1/secrets/{scope}/{name}", "/api/v1/secrets/user/bi-secret", json!({"value": "v", "git_host": "h"}), "username", json!(5)),
        r("POST", "/api/v1/templates", "/api/v1/templates", json!({"name": "bi-tpl2"}), "description", json!(5)),
        r("POST", "/api/v1/templates/{template}/versions", versions, dc.clone(), "activate", json!("yes")),
        r("POST", "/api/v1/templates/{template}/versions", versions, dc.clone(), "ceilings", json!("x")),
        r("POST", "/api/v1/templates/{template}/versions", versions, dc.clone(), "parameters", json!({"a": 1})),
        r("POST", "/api/v1/templates/{template}/versions", versions, dc.clone(), "parameters", json!([5])),
        r("POST", "/api/v1/templates/{template}/versions", versions, dc, "policy", json!("x")),
        r("POST", "/api/v1/templates/{template}/active", "/api/v1/templates/bi-tpl/active", json!({"version": 1}), "version", json!("latest")),
        r("POST", "/api/v1/webhooks", "/api/v1/webhooks", json!({"url": "https://hooks.example.com/x"}), "url", json!(5)),
        r("POST", "/api/v1/webhooks", "/api/v1/webhooks", json!({"url": "https://hooks.example.com/x"}), "events", json!("workspace.*")),
        r("POST", "/api/v1/webhooks", "/api/v1/webhooks", json!({"url": "https://hooks.example.com/x"}), "secret", json!(1234567890)),
        r("PATCH", "/api/v1/webhooks/{id}", "/api/v1/webhooks/bi-hook", json!({"disabled": true}), "disabled", json!("yes")),
        r("PATCH", "/api/v1/webhooks/{id}", "/api/v1/webhooks/bi-hook", json!({"disabled": false}), "skip_backlog", json!(1)),
        r("POST", "/api/v1/templates/{template}/versions", versions, json!({"devcontainer": "{\"image\":\"busybox\"}"}), "cost", json!("free")),
        r("POST", "/api/v1/workspaces", "/api/v1/workspaces", json!({"name": "bi-ws", "template": "bi-tpl"}), "team", json!(5)),
        r("POST", "/api/v1/tasks", "/api/v1/tasks", json!({"template": "bi-tpl", "interactive": true}), "interactive", json!("yes")),
        r("POST", "/api/v1/tasks", "/api/v1/tasks", json!({"template": "bi-tpl", "interactive": true}), "command", json!("make")),
        r("POST", "/api/v1/tasks", "/api/v1/tasks", json!({"template": "bi-tpl", "interactive": true}), "labels", json!(["a=b"])),
        r("POST", "/api/v1/tasks/{id}/complete", "/api/v1/tasks/t_x/complete", json!({"exit_code": 0}), "exit_code", json!("zero")),
        r("PUT", "/api/v1/quotas/default", "/api/v1/quotas/default", json!({"max_workspaces": 2}), "budget", json!("lots")),
        r("PUT", "/api/v1/quotas/{kind}/{name}", "/api/v1/quotas/users/bi-user", json!({"max_workspaces": 2}), "budget_period", json!(5)),
        r("PUT", "/api/v1/quotas/{kind}/{name}", "/api/v1/quotas/users/bi-user", json!({"max_workspaces": 2}), "max_workspaces", json!(-1)),
        r("POST", "/api/v1/quotas/{kind}/{name}/overrides", "/api/v1/quotas/users/bi-user/overrides", json!({"extra_budget": 5, "duration": "1h"}), "unlimited", json!("yes")),
        r("POST", "/api/v1/quotas/{kind}/{name}/overrides", "/api/v1/quotas/users/bi-user/overrides", json!({"extra_budget": 5, "duration": "1h"}), "extra_budget", json!("5")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_name_unknown_fields_and_wrong_types() {
    let s = TestServer::start().await;
    let a = s.admin.clone();
    s.user_token("bi-user", "member", None).await;
    let (st, v) = s
        .post(
            &a,
            "/api/v1/templates/bi-tpl/versions",
            json!({"devcontainer": "{\"image\":\"busybox\"}"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let routes = json_routes();

    // Every JSON route of the API has a row.
    let listed: BTreeSet<(String, String)> = routes
        .iter()
        .map(|r| (r.method.to_string(), r.route.to_string()))
        .collect();
    let documented = json_operations();
    let missing: Vec<_> = documented.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&documented).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "JSON routes without a bad-input row: {missing:?}; rows for no JSON route: {stale:?}"
    );

    let state = s.state();
    let mut problems = Vec::new();
    let bad = StatusCode::BAD_REQUEST;
    for r in &routes {
        let token = if r.anonymous { None } else { Some(a.as_str()) };
        let label = |what: &str| format!("{} {} {what}", r.method, r.path);

        // An unknown field, next to valid ones.
        let mut body = r.valid.clone();
        body["frobnicate"] = json!(1);
        let (st, v) = send_raw(
            &s,
            token,
            r.method,
            &r.path,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await;
        let what = label("with an unknown field");
        problems.extend(check_error(&state, &what, st, &v, bad, "invalid_request"));
        if !v["message"].as_str().unwrap_or("").contains("frobnicate") {
            problems.push(format!("{what}: the message does not name the field: {v}"));
        }

        // A known field of the wrong type.
        let mut body = r.valid.clone();
        body[r.field] = r.wrong.clone();
        let (st, v) = send_raw(
            &s,
            token,
            r.method,
            &r.path,
            Some("application/json"),
            body.to_string().into_bytes(),
        )
        .await;
        let what = label(&format!("with `{}` = {}", r.field, r.wrong));
        problems.extend(check_error(&state, &what, st, &v, bad, "invalid_request"));
        if !v["message"].as_str().unwrap_or("").contains(r.field) {
            problems.push(format!("{what}: the message does not name the field: {v}"));
        }

        // Not JSON at all.
        let (st, v) = send_raw(
            &s,
            token,
            r.method,
            &r.path,
            Some("application/json"),
            b"{this is not json".to_vec(),
        )
        .await;
        problems.extend(check_error(
            &state,
            &label("with a body that is not JSON"),
            st,
            &v,
            bad,
            "invalid_request",
        ));

        // JSON text, but no Content-Type.
        let (st, v) = send_raw(
            &s,
            token,
            r.method,
            &r.path,
            None,
            r.valid.to_string().into_bytes(),
        )
        .await;
        problems.extend(check_error(
            &state,
            &label("without Content-Type"),
            st,
            &v,
            bad,
            "invalid_request",
        ));

        // A JSON body that is not an object.
        let (st, v) = send_raw(
            &s,
            token,
            r.method,
            &r.path,
            Some("application/json"),
            b"[1, 2]".to_vec(),
        )
        .await;
        problems.extend(check_error(
            &state,
            &label("with an array body"),
            st,
            &v,
            bad,
            "invalid_request",
        ));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    s.stop().await;
}

/// Webhooks that cannot be: URLs that are not absolute http(s) or carry credentials, unknown
/// event kinds or prefixes, weak secrets. 400 `invalid_request` naming the field (and the
/// pattern), with a hint; nothing stored; unknown ids are 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_are_refused_with_a_reason() {
    let s = TestServer::start().await;
    let state = s.state();
    let ok = "https://hooks.example.com/x";
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"url": "ftp://example.com/"}),
            "`url`: the scheme `ftp`",
        ),
        (
            json!({"url": "relative/path"}),
            "`url`: `relative/path` is not an absolute URL",
        ),
        (
            json!({"url": "https://me:secret@example.com/"}),
            "`url`: it carries credentials",
        ),
        (
            json!({"url": "https://me@example.com/"}),
            "`url`: it carries credentials",
        ),
        (
            json!({"url": format!("https://e.com/{}", "a".repeat(3000))}),
            "`url`: longer than",
        ),
        (
            json!({"url": ok, "events": ["nope.*"]}),
            "`events`: `nope.*`: unknown event kind prefix `nope`",
        ),
        (
            json!({"url": ok, "events": ["budget.warnings"]}),
            "`events`: `budget.warnings`: no event kind",
        ),
        (json!({"url": ok, "events": ["*.*"]}), "`events`: `*.*`"),
        (json!({"url": ok, "secret": "x"}), "`secret`"),
        (json!({"url": ok, "name": "a\u{1}b"}), "`name`"),
    ];
    let mut problems = Vec::new();
    for (body, needle) in cases {
        let (st, v) = s.post(&s.admin, "/api/v1/webhooks", body.clone()).await;
        let what = format!("webhook {body}");
        problems.extend(check_error(
            &state,
            &what,
            st,
            &v,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ));
        let msg = v["message"].as_str().unwrap_or("");
        if !msg.contains(needle) || msg.contains('\n') {
            problems.push(format!(
                "{what}: the message does not say `{needle}` in one line: {v}"
            ));
        }
        if v["hint"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{what}: no hint: {v}"));
        }
    }
    for (m, path) in [
        (Method::GET, "/api/v1/webhooks/nope"),
        (Method::DELETE, "/api/v1/webhooks/nope"),
        (Method::POST, "/api/v1/webhooks/nope/test"),
        (Method::GET, "/api/v1/webhooks/nope/deliveries"),
    ] {
        let (st, v) = s.call(Some(&s.admin), m.clone(), path, None).await;
        problems.extend(check_error(
            &state,
            &format!("{m} {path}"),
            st,
            &v,
            StatusCode::NOT_FOUND,
            "not_found",
        ));
    }
    let (st, v) = s.get(&s.admin, "/api/v1/webhooks").await;
    if st != StatusCode::OK || v != json!([]) {
        problems.push(format!("refused webhooks were stored: {st} {v}"));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    s.stop().await;
}

/// SSH keys that are not keys, or not acceptable ones: 400 `invalid_ssh_key` naming what is
/// wrong, with a hint, and nothing stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ssh_keys_are_refused_with_a_reason() {
    let s = TestServer::start().await;
    let state = s.state();
    let t = s.user_token("bk-user", "member", None).await;
    let b64 = ED25519.split_whitespace().nth(1).unwrap();
    let cut = format!("ssh-ed25519 {}", &b64[..40]);
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty", String::new(), "empty"),
        ("a word", "hello".into(), "not a public key line"),
        ("unknown type", format!("ssh-foo {b64}"), "unknown key type"),
        ("DSA", format!("ssh-dss {b64}"), "DSA"),
        ("bad base64", format!("ssh-ed25519 {}!!", &b64[..20]), "base64"),
        ("type mismatch", format!("ssh-rsa {b64}"), "`ssh-ed25519` key"),
        ("truncated", cut, "truncated"),
        (
            "private key",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n".into(),
            "private key",
        ),
        ("two keys", format!("{ED25519}\n{ED25519}"), "one key at a time"),
        ("options", format!("no-pty {ED25519}"), "unknown key type"),
        ("huge", "A".repeat(20_000), "at most"),
    ];
    let mut problems = Vec::new();
    for (what, key, needle) in cases {
        let (st, v) = s
            .post(&t, "/api/v1/me/ssh-keys", json!({ "public_key": key }))
            .await;
        let what = format!("SSH key: {what}");
        problems.extend(check_error(
            &state,
            &what,
            st,
            &v,
            StatusCode::BAD_REQUEST,
            "invalid_ssh_key",
        ));
        let msg = v["message"].as_str().unwrap_or("");
        if !msg.contains(needle) || msg.contains('\n') {
            problems.push(format!(
                "{what}: the message does not say `{needle}` in one line: {v}"
            ));
        }
        if v["hint"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{what}: no hint: {v}"));
        }
    }
    // Bad names: too long, control characters.
    for name in ["x".repeat(101), "a\u{7}b".into(), "  ".into()] {
        let (st, v) = s
            .post(
                &t,
                "/api/v1/me/ssh-keys",
                json!({ "public_key": ED25519, "name": name }),
            )
            .await;
        problems.extend(check_error(
            &state,
            &format!("SSH key name {name:?}"),
            st,
            &v,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ));
    }
    // Unknown ids.
    for path in [
        "/api/v1/me/ssh-keys/nope",
        "/api/v1/users/admin/ssh-keys/nope",
    ] {
        let (st, v) = s.call(Some(&s.admin), Method::DELETE, path, None).await;
        problems.extend(check_error(
            &state,
            &format!("DELETE {path}"),
            st,
            &v,
            StatusCode::NOT_FOUND,
            "not_found",
        ));
    }
    let (st, v) = s.get(&t, "/api/v1/me/ssh-keys").await;
    if st != StatusCode::OK || v != json!([]) {
        problems.push(format!("refused keys were stored: {st} {v}"));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_as_json() {
    let s = TestServer::start_with(ConfigLayer {
        max_body_bytes: Some(1024),
        ..Default::default()
    })
    .await;
    let state = s.state();
    let a = s.admin.clone();
    let mut problems = Vec::new();
    let big_json = json!({"devcontainer": format!("{{\"image\":\"{}\"}}", "x".repeat(4096))})
        .to_string()
        .into_bytes();
    let big_tar = vec![0u8; 8192];
    let too_large = StatusCode::PAYLOAD_TOO_LARGE;

    // With a Content-Length.
    let (st, v) = send_raw(
        &s,
        Some(&a),
        "POST",
        "/api/v1/templates/big/versions",
        Some("application/json"),
        big_json.clone(),
    )
    .await;
    problems.extend(check_error(
        &state,
        "JSON route, Content-Length",
        st,
        &v,
        too_large,
        "payload_too_large",
    ));
    let (st, v) = send_raw(
        &s,
        Some(&a),
        "POST",
        "/api/v1/files",
        Some("application/x-tar"),
        big_tar.clone(),
    )
    .await;
    problems.extend(check_error(
        &state,
        "POST /files, Content-Length",
        st,
        &v,
        too_large,
        "payload_too_large",
    ));

    // Streamed (chunked, no Content-Length): the limit holds while reading.
    for (what, path, ct, bytes) in [
        (
            "JSON route, chunked",
            "/api/v1/templates/big/versions",
            "application/json",
            big_json,
        ),
        (
            "POST /files, chunked",
            "/api/v1/files",
            "application/x-tar",
            big_tar,
        ),
    ] {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(256).map(|c| Ok(c.to_vec())).collect();
        let resp = s
            .http
            .post(format!("{}{path}", s.url))
            .bearer_auth(&a)
            .header("content-type", ct)
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
        let st = resp.status();
        let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null);
        problems.extend(check_error(
            &state,
            what,
            st,
            &v,
            too_large,
            "payload_too_large",
        ));
    }

    // Nothing of the refused template was recorded, and bodies under the limit still work.
    let (st, _) = s.get(&a, "/api/v1/templates/big").await;
    if st != StatusCode::NOT_FOUND {
        problems.push(format!("the refused template exists: GET answered {st}"));
    }
    let (st, v) = s
        .post(
            &a,
            "/api/v1/templates/small/versions",
            json!({"devcontainer": "{\"image\":\"busybox\"}"}),
        )
        .await;
    if st != StatusCode::CREATED {
        problems.push(format!("a small body was refused: {st} {v}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_follow_dns_label_rules() {
    let s = TestServer::start().await;
    let state = s.state();
    let a = s.admin.clone();
    let (st, v) = s
        .post(
            &a,
            "/api/v1/templates/nm-tpl/versions",
            json!({"devcontainer": "{\"image\":\"busybox\"}"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let long = "a".repeat(64);
    let bad_names: [(&str, &str); 7] = [
        ("uppercase", "Upper"),
        ("leading digit", "1abc"),
        ("trailing dash", "abc-"),
        ("64 characters", &long),
        ("empty", ""),
        ("unicode", "héllo"),
        ("underscore", "a_b"),
    ];
    let mut problems = Vec::new();
    for (why, name) in bad_names {
        let mut attempts: Vec<(&str, String, Value)> = vec![
            (
                "workspace name",
                "/api/v1/workspaces".into(),
                json!({"name": name, "template": "nm-tpl"}),
            ),
            (
                "template name",
                "/api/v1/templates".into(),
                json!({"name": name}),
            ),
            ("team name", "/api/v1/teams".into(), json!({"name": name})),
            (
                "username",
                "/api/v1/users".into(),
                json!({"username": name}),
            ),
        ];
        if !name.is_empty() {
            // The template named in the path of a push.
            attempts.push((
                "template name",
                format!("/api/v1/templates/{name}/versions"),
                json!({"devcontainer": "{\"image\":\"busybox\"}"}),
            ));
        }
        for (kind, path, body) in attempts {
            let (st, v) = s.post(&a, &path, body).await;
            let what = format!("{kind} {why} ({name:?}) at POST {path}");
            problems.extend(check_error(
                &state,
                &what,
                st,
                &v,
                StatusCode::BAD_REQUEST,
                "invalid_name",
            ));
            let msg = v["message"].as_str().unwrap_or("");
            if !(msg.contains(kind)
                && msg.contains("1-63 characters")
                && msg.contains("start with a letter"))
            {
                problems.push(format!(
                    "{what}: the message does not name the {kind} and state the rule: {msg:?}"
                ));
            }
        }
    }
    // The rule's edges are accepted: 63 characters, digits and inner dashes.
    let ok = format!("a1-{}", "b".repeat(60));
    assert_eq!(ok.len(), 63);
    let (st, v) = s.post(&a, "/api/v1/teams", json!({"name": ok})).await;
    if st != StatusCode::CREATED {
        problems.push(format!("a valid 63-character name was refused: {st} {v}"));
    }
    // Nothing invalid was recorded.
    let (_, teams) = s.get(&a, "/api/v1/teams").await;
    if teams.as_array().map(Vec::len) != Some(1) {
        problems.push(format!("teams recorded: {teams}"));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_json() {
    let s = TestServer::start().await;
    let state = s.state();
    let a = s.admin.clone();
    let mut problems = Vec::new();
    for (token, method, path) in [
        (None, Method::GET, "/api/v1/nope"),
        (Some(a.as_str()), Method::GET, "/api/v1/nope"),
        (Some(a.as_str()), Method::GET, "/nope"),
        (
            Some(a.as_str()),
            Method::POST,
            "/api/v1/workspaces/x/frobnicate",
        ),
        (Some(a.as_str()), Method::GET, "/api/v2/workspaces"),
    ] {
        let (st, v) = s.call(token, method.clone(), path, None).await;
        problems.extend(check_error(
            &state,
            &format!("{method} {path}"),
            st,
            &v,
            StatusCode::NOT_FOUND,
            "not_found",
        ));
    }
    for (method, path) in [
        (Method::DELETE, "/api/v1/me"),
        (Method::PUT, "/api/v1/workspaces"),
        (Method::PATCH, "/api/v1/templates"),
        (Method::GET, "/api/v1/workspaces/x/start"),
        (Method::POST, "/api/v1/workspaces/x/ssh"),
        (Method::POST, "/api/v1/audit"),
    ] {
        let (st, v) = s.call(Some(&a), method.clone(), path, None).await;
        problems.extend(check_error(
            &state,
            &format!("{method} {path}"),
            st,
            &v,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ));
    }
    // Errors of other kinds, for the no-internals rule: not found, conflict, bad parameters.
    let checks: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "/api/v1/workspaces/nope", None),
        // The SSH tunnel: an unknown workspace, and a plain GET that is no WebSocket upgrade.
        (Method::GET, "/api/v1/workspaces/nope/ssh", None),
        // Ports: an unknown workspace, a port out of range, a plain GET to the port forward.
        (Method::GET, "/api/v1/workspaces/nope/ports", None),
        (
            Method::PUT,
            "/api/v1/workspaces/nope/ports/70000",
            Some(json!({"sharing": "public"})),
        ),
        (
            Method::GET,
            "/api/v1/workspaces/nope/ports/80/connect",
            None,
        ),
        (
            Method::POST,
            "/api/v1/workspaces/nope/ports/80/ticket",
            None,
        ),
        (
            Method::GET,
            "/api/v1/jobs/0123456789abcdef0123456789abcdef",
            None,
        ),
        (Method::GET, "/api/v1/templates/nope/versions/x", None),
        (Method::GET, "/api/v1/workspaces?limit=0", None),
        (Method::GET, "/api/v1/workspaces?bogus=1", None),
        (Method::GET, "/api/v1/audit?bogus=1", None),
        (
            Method::POST,
            "/api/v1/workspaces",
            Some(json!({"name": "w", "file_id": "../../etc/passwd"})),
        ),
        (
            Method::POST,
            "/api/v1/workspaces",
            Some(json!({"name": "w", "file_id": "0".repeat(64)})),
        ),
        (
            Method::POST,
            "/api/v1/templates/t/versions",
            Some(json!({"devcontainer": "{not json"})),
        ),
        (
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "admin"})),
        ),
        (
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"lifetime": "forever"})),
        ),
    ];
    for (method, path, body) in checks {
        let (st, v) = s.call(Some(&a), method.clone(), path, body).await;
        let what = format!("{method} {path}");
        if !(st.is_client_error()) {
            problems.push(format!("{what}: expected a 4xx, got {st} {v}"));
        }
        problems.extend(internals(&state, &what, &v));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    s.stop().await;
}

/// Fires `n` concurrent start/stop/restart requests at `ws`; returns (status, code) of each.
async fn storm(s: &TestServer, ws: &str, n: usize) -> Vec<(StatusCode, String, Value)> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let verb = ["start", "stop", "restart"][i % 3];
        let url = format!("{}/api/v1/workspaces/{ws}/{verb}", s.url);
        let req = s.http.post(url).bearer_auth(&s.admin);
        tasks.push(tokio::spawn(async move {
            let resp = req.send().await.unwrap();
            let st = resp.status();
            let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null);
            (st, verb.to_string(), v)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Waits until none of the workspace's jobs is pending or running; returns them.
async fn settle(s: &TestServer, ws: &str) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let (st, jobs) = s
            .get(&s.admin, &format!("/api/v1/workspaces/{ws}/jobs"))
            .await;
        assert_eq!(st, StatusCode::OK, "{jobs}");
        let jobs = jobs.as_array().unwrap().clone();
        if jobs
            .iter()
            .all(|j| !matches!(j["status"].as_str(), Some("pending" | "running")))
        {
            return jobs;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "jobs did not finish: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn check_storm(state: &Path, answers: &[(StatusCode, String, Value)]) -> (usize, Vec<String>) {
    let mut problems = Vec::new();
    let mut accepted = 0;
    for (st, verb, v) in answers {
        match *st {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::CONFLICT => {
                problems.extend(check_error(
                    state,
                    &format!("concurrent {verb}"),
                    *st,
                    v,
                    StatusCode::CONFLICT,
                    "transition_in_progress",
                ));
            }
            _ => problems.push(format!(
                "concurrent {verb}: expected 202 or 409, got {st} {v}"
            )),
        }
    }
    (accepted, problems)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_conflicting_transitions_get_409_and_state_stays_consistent() {
    let s = TestServer::start().await;
    s.import_busybox();
    let state = s.state();
    let dc = json!({"image": "busybox", "overrideCommand": true, "waitFor": "postStartCommand", "postStartCommand": "sleep 2"})
        .to_string();
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/templates/slow/versions",
            json!({"devcontainer": dc}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, created) = s
        .post(
            &s.admin,
            "/api/v1/workspaces",
            json!({"name": "race", "template": "slow"}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{created}");
    let create_job = created["job"]["id"].as_str().unwrap().to_string();

    // While the create job runs (its postStartCommand sleeps 2 s).
    let answers = storm(&s, "race", 10).await;
    let (_, create_now) = s.get(&s.admin, &format!("/api/v1/jobs/{create_job}")).await;
    let (accepted, mut problems) = check_storm(&state, &answers);
    if accepted > 1 {
        problems.push(format!(
            "{accepted} concurrent transitions were accepted: {answers:?}"
        ));
    }
    eprintln!(
        "during create: {accepted} accepted, {} refused; create job now {}",
        answers.len() - accepted,
        create_now["status"]
    );
    let jobs = settle(&s, "race").await;
    problems.extend(consistent(&s, "race", &jobs, 1 + accepted).await);
    let create = jobs
        .iter()
        .find(|j| j["id"] == create_job.as_str())
        .unwrap();
    if create["status"] != "succeeded" {
        problems.push(format!("the create job did not succeed: {create}"));
    }

    // Once settled: the same storm again; whatever is accepted runs, the rest is refused.
    let before = jobs.len();
    let answers = storm(&s, "race", 10).await;
    let (accepted, more) = check_storm(&state, &answers);
    problems.extend(more);
    if accepted == 0 {
        problems.push(format!(
            "no transition of a settled workspace was accepted: {answers:?}"
        ));
    }
    eprintln!(
        "settled: {accepted} accepted, {} refused",
        answers.len() - accepted
    );
    let jobs = settle(&s, "race").await;
    problems.extend(consistent(&s, "race", &jobs, before + accepted).await);

    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
    let (st, v) = s
        .call(
            Some(&s.admin),
            Method::DELETE,
            "/api/v1/workspaces/race",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    s.wait_job(&s.admin, v["job"]["id"].as_str().unwrap()).await;
    s.stop().await;
}

/// The workspace is running or stopped, its jobs are all final, and there are `want_jobs` of
/// them (one per accepted request: a refused one left nothing behind).
async fn consistent(s: &TestServer, ws: &str, jobs: &[Value], want_jobs: usize) -> Vec<String> {
    let mut problems = Vec::new();
    let (st, w) = s.get(&s.admin, &format!("/api/v1/workspaces/{ws}")).await;
    assert_eq!(st, StatusCode::OK, "{w}");
    let state = w["state"].as_str().unwrap_or("");
    if !matches!(state, "running" | "stopped") {
        problems.push(format!("workspace state after the jobs finished: {w}"));
    }
    for j in jobs {
        if !matches!(
            j["status"].as_str(),
            Some("succeeded" | "failed" | "canceled")
        ) {
            problems.push(format!("job not final: {j}"));
        }
    }
    if jobs.len() != want_jobs {
        problems.push(format!(
            "{} jobs, expected {want_jobs}: {jobs:?}",
            jobs.len()
        ));
    }
    problems
}

/// Runs `warren server` on `state_dir`; it must fail within a few seconds with one `error:` line
/// naming the problem, a `hint:` line, and no panic or backtrace.
fn server_must_refuse(case: &str, state_dir: &Path, names: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut child = std::process::Command::new(warren_exe())
        .arg("server")
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("WARREN_CONFIG")
        .env_remove("WARREN_LISTEN")
        .env("RUST_BACKTRACE", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    match status {
        None => problems.push(format!("{case}: the server was still running after 10 s")),
        Some(st) if st.success() => problems.push(format!("{case}: exit status 0")),
        Some(_) => {}
    }
    // Strip colors, should there be any.
    let plain: String = {
        let mut s = String::new();
        let mut chars = stderr.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                s.push(c);
            }
        }
        s
    };
    let errors: Vec<&str> = plain.lines().filter(|l| l.starts_with("error:")).collect();
    let hints: Vec<&str> = plain.lines().filter(|l| l.starts_with("hint:")).collect();
    if errors.len() != 1 || !errors[0].contains(names) {
        problems.push(format!(
            "{case}: expected one `error:` line naming {names:?}:\n{plain}"
        ));
    }
    if hints.is_empty() {
        problems.push(format!("{case}: no `hint:` line:\n{plain}"));
    }
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "stack backtrace"] {
        if plain.contains(bad) {
            problems.push(format!("{case}: {bad:?} on stderr:\n{plain}"));
        }
    }
    problems
}

#[test]
fn an_unusable_database_at_startup_is_a_clear_error() {
    let dir = tempfile::Builder::new()
        .prefix("warren-baddb-")
        .tempdir_in(std::env::var("WARREN_TEST_TMP").unwrap_or_else(|_| "/tmp".into()))
        .unwrap();
    let mut problems = Vec::new();

    // The state directory is a regular file.
    let file = dir.path().join("state-file");
    std::fs::write(&file, "hello").unwrap();
    problems.extend(server_must_refuse(
        "state dir is a file",
        &file,
        &file.display().to_string(),
    ));

    // The database is a directory.
    let d1 = dir.path().join("db-dir");
    std::fs::create_dir_all(d1.join("warren.db")).unwrap();
    problems.extend(server_must_refuse(
        "warren.db is a directory",
        &d1,
        &d1.display().to_string(),
    ));

    // The database is garbage.
    let d2 = dir.path().join("db-garbage");
    std::fs::create_dir_all(&d2).unwrap();
    std::fs::write(d2.join("warren.db"), "not a database").unwrap();
    problems.extend(server_must_refuse(
        "warren.db is garbage",
        &d2,
        &d2.display().to_string(),
    ));
    // ... and is left as it was.
    assert_eq!(
        std::fs::read(d2.join("warren.db")).unwrap(),
        b"not a database"
    );

    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_must_be_json_objects() {
    let s = common::TestServer::start().await;
    for body in [
        serde_json::json!([]),
        serde_json::json!("x"),
        serde_json::json!(null),
    ] {
        let (st, v) = s
            .call(
                Some(&s.admin),
                reqwest::Method::PATCH,
                "/api/v1/users/admin",
                Some(body.clone()),
            )
            .await;
        assert_eq!(st, reqwest::StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["code"], "invalid_request");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_routes_take_only_small_bodies() {
    let s = common::TestServer::start().await;
    let big = serde_json::json!({"device_code": "x".repeat(10_000)});
    let (st, v) = s
        .call(
            None,
            reqwest::Method::POST,
            "/api/v1/auth/device/token",
            Some(big),
        )
        .await;
    assert_eq!(st, reqwest::StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["code"], "payload_too_large");
    s.stop().await;
}

/// MCP's bad input (the JSON-RPC error objects its protocol prescribes, not `ErrorBody`): a body
/// that is not JSON, not JSON-RPC, an unknown method, bad params, a missing or unknown session.
/// tests/mcp.rs has the rest (batches, versions, tool arguments).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_bad_json_rpc_is_refused() {
    let s = TestServer::start().await;
    let a = s.admin.clone();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18"}});
    let resp = s
        .http
        .post(format!("{}/api/v1/mcp", s.url))
        .bearer_auth(&a)
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let sid = resp.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    let send = |body: &'static str, session: bool| {
        let mut rb = s
            .http
            .post(format!("{}/api/v1/mcp", s.url))
            .bearer_auth(&a)
            .header("content-type", "application/json")
            .body(body);
        if session {
            rb = rb.header("mcp-session-id", sid.clone());
        }
        async move {
            let r = rb.send().await.unwrap();
            let st = r.status();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    for (body, session, status, code) in [
        ("{this is not json", true, StatusCode::BAD_REQUEST, -32700),
        ("[1, 2]", true, StatusCode::BAD_REQUEST, -32600),
        (
            r#"{"jsonrpc":"2.0","id":1}"#,
            true,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"frobnicate"}"#,
            true,
            StatusCode::OK,
            -32601,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":5}}"#,
            true,
            StatusCode::OK,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_file","arguments":{"frobnicate":1}}}"#,
            true,
            StatusCode::OK,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            false,
            StatusCode::BAD_REQUEST,
            -32600,
        ),
    ] {
        let (st, v) = send(body, session).await;
        assert_eq!(st, status, "{body}: {v}");
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            !msg.is_empty() && !msg.contains("::") && !msg.contains("panicked"),
            "{body}: {v}"
        );
    }
    s.stop().await;
}
