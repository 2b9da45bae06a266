//! Workspace ports against a real server with real workspaces: discovery, preview URLs through
//! the real `curl` for each sharing level (owner, another user, anonymous), the subdomain form,
//! tickets and cookies, large bodies both ways, a WebSocket echo, `warren port-forward`, and the
//! attacks: credentials never reach the workspace, another user's port is hidden, anonymous
//! requests reach only public ports, used and unknown tickets are refused.
//!
//! The servers inside the workspaces are busybox's `httpd` and `portsrv`
//! (`tests/fixtures/portsrv.rs`: HTTP/1.1 and WebSocket, std only), built by this test as a static
//! binary and put in the busybox image, so they run inside the workspace.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use warren_server::config::ConfigLayer;

const DOMAIN: &str = "preview.test";

/// `portsrv`, compiled once per test run as a static executable.
fn portsrv() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/portsrv.rs");
            let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("portsrv");
            let o = Command::new("rustc")
                .args([
                    "--edition",
                    "2021",
                    "-O",
                    "-C",
                    "target-feature=+crt-static",
                    "-o",
                ])
                .arg(&out)
                .arg(&src)
                .output()
                .expect("rustc runs");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            out
        })
        .clone()
}

/// A server whose busybox image also has `portsrv`, with a template `tiny` recording ports.
async fn server(layer: ConfigLayer) -> TestServer {
    let s = TestServer::start_with(layer).await;
    let rootfs = s.dir.path().join("rootfs");
    common::busybox_rootfs(&rootfs);
    std::fs::copy(portsrv(), rootfs.join("bin/portsrv")).unwrap();
    let o = Command::new(common::warren_exe())
        .args(["image", "import"])
        .arg(&rootfs)
        .arg("busybox")
        .env("WARREN_STATE_DIR", s.state())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dc = json!({
        "image": "busybox",
        "overrideCommand": true,
        "forwardPorts": [8080, 9000],
        "portsAttributes": {"8080": {"label": "app", "onAutoForward": "silent"}},
        "otherPortsAttributes": {"onAutoForward": "ignore"},
    })
    .to_string();
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/templates/tiny/versions",
            json!({"devcontainer": dc}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    s
}

fn preview_layer(max: &str) -> ConfigLayer {
    ConfigLayer {
        preview_domain: Some(DOMAIN.into()),
        max_port_sharing: Some(max.into()),
        ..Default::default()
    }
}

async fn create(s: &TestServer, token: &str, name: &str) {
    s.create_workspace(token, name, "tiny").await;
}

/// Starts `cmd` in the background inside the workspace and waits until `port` listens.
async fn daemon(s: &TestServer, token: &str, ws: &str, cmd: &str, port: u16) {
    let resp = s
        .http
        .post(format!("{}/api/v1/workspaces/{ws}/exec", s.url))
        .bearer_auth(token)
        .json(&json!({"command": ["sh", "-c", format!("{cmd} >/dev/null 2>&1 &")]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let _ = resp.text().await;
    for _ in 0..200 {
        let (_, v) = s
            .get(token, &format!("/api/v1/workspaces/{ws}/ports"))
            .await;
        if port_of(&v, port)["listening"] == true {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{cmd} did not listen on {port}");
}

fn port_of(list: &Value, port: u16) -> Value {
    list["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["port"] == port)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Runs the real curl with `args`; (HTTP status, headers, body).
async fn curl(args: Vec<String>) -> (u16, String, Vec<u8>) {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let headers = dir.path().join("h");
        let o: Output = Command::new("curl")
            .args(["-sS", "--max-time", "120", "-D"])
            .arg(&headers)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let h = std::fs::read_to_string(&headers).unwrap_or_default();
        // With -L there are several responses: the last one counts.
        let last = h
            .split("\r\n\r\n")
            .filter(|b| b.starts_with("HTTP/"))
            .last()
            .unwrap_or("")
            .to_string();
        let status = last
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, last.to_ascii_lowercase(), o.stdout)
    })
    .await
    .unwrap()
}

/// Runs the `warren` CLI against the server as `token`.
async fn warren(s: &TestServer, token: &str, a: &[&str]) -> Output {
    let home = s.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    tokio::process::Command::new(common::warren_exe())
        .args(a)
        .env("WARREN_URL", &s.url)
        .env("WARREN_TOKEN", token)
        .env("HOME", &home)
        .output()
        .await
        .unwrap()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn bearer(t: &str) -> String {
    format!("Authorization: Bearer {t}")
}

async fn share(
    s: &TestServer,
    token: &str,
    ws: &str,
    port: &str,
    level: &str,
) -> (StatusCode, Value) {
    s.call(
        Some(token),
        Method::PUT,
        &format!("/api/v1/workspaces/{ws}/ports/{port}"),
        Some(json!({ "sharing": level })),
    )
    .await
}

fn code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).unwrap_or_default()["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_are_discovered_and_previews_enforce_each_sharing_level() {
    let s = server(preview_layer("public")).await;
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    create(&s, &alice, "web").await;
    daemon(&s, &alice, "web", "portsrv 8080", 8080).await;
    daemon(&s, &alice, "web", "httpd -p 127.0.0.1:8081 -h /etc", 8081).await;

    // Discovery: what listens, with its process, merged with forwardPorts and portsAttributes.
    let (st, list) = s.get(&alice, "/api/v1/workspaces/web/ports").await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(list["running"], true);
    let app = port_of(&list, 8080);
    assert_eq!(app["process"], "portsrv", "{list}");
    assert_eq!(app["addresses"], json!(["127.0.0.1"]), "{list}");
    assert_eq!(app["label"], "app");
    assert_eq!(app["on_auto_forward"], "silent");
    assert_eq!(app["forwarded"], true);
    assert_eq!(app["sharing"], "owner");
    let port = s.url.rsplit(':').next().unwrap().to_string();
    assert_eq!(
        app["urls"],
        json!([
            format!("{}/p/web.alice/8080/", s.url),
            format!("http://8080--web--alice.{DOMAIN}:{port}/")
        ])
    );
    let httpd = port_of(&list, 8081);
    assert_eq!(httpd["process"], "httpd", "{list}");
    assert_eq!(
        httpd["on_auto_forward"], "ignore",
        "otherPortsAttributes: {list}"
    );
    let later = port_of(&list, 9000);
    assert_eq!(
        (later["listening"].clone(), later["forwarded"].clone()),
        (json!(false), json!(true))
    );
    // The same through the CLI: a table, and the API's JSON with --json.
    let o = warren(&s, &alice, &["ports", "web"]).await;
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(table.starts_with("PORT"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("8080"))
        .unwrap_or_else(|| panic!("{table}"));
    for want in [
        "127.0.0.1",
        "portsrv",
        "app",
        "owner",
        &format!("http://8080--web--alice.{DOMAIN}:"),
    ] {
        assert!(row.contains(want), "{want}: {table}");
    }
    let o = warren(&s, &alice, &["--json", "ports", "web"]).await;
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(port_of(&v, 8081)["process"], "httpd");
    let o = warren(&s, &alice, &["ports", "share", "web", "70000", "public"]).await;
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("70000"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = warren(&s, &alice, &["ports", "open", "web", "8080"]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("/p/web.alice/8080/__warren/auth?ticket="));
    // Another user does not see the workspace at all.
    let (st, _) = s.get(&bob, "/api/v1/workspaces/web.alice/ports").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    let path_url = |ws: &str, rest: &str| format!("{}/p/{ws}/8080{rest}", s.url);
    let sub_host = format!("8080--web--alice.{DOMAIN}:{port}");
    let sub_url = |rest: &str| format!("http://{sub_host}{rest}");
    let resolve = format!("8080--web--alice.{DOMAIN}:{port}:127.0.0.1");

    // Owner: through the path form with a bearer token. The workspace sees neither the token nor
    // Warren's cookie, and gets X-Forwarded-*; the response is sandboxed.
    let (st, h, body) = curl(args(&[
        "-H",
        &bearer(&alice),
        "-H",
        "Cookie: theirs=1; warren_preview=not-for-the-workspace",
        &path_url("web", "/headers?x=1"),
    ]))
    .await;
    let seen = String::from_utf8_lossy(&body).to_string();
    assert_eq!(st, 200, "{seen}");
    assert!(seen.starts_with("GET /headers?x=1 HTTP/1.1\n"), "{seen}");
    assert!(
        !seen.contains(&alice) && !seen.contains("authorization"),
        "{seen}"
    );
    assert!(
        !seen.contains("warren_preview") && seen.contains("cookie: theirs=1"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-prefix: /p/web/8080"), "{seen}");
    assert!(seen.contains("x-forwarded-for: 127.0.0.1"), "{seen}");
    assert!(seen.contains("host: localhost:8080"), "{seen}");
    assert!(
        h.contains("content-security-policy: sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"),
        "{h}"
    );
    // The bare path is redirected to the root; relative redirects stay under the prefix.
    let (st, h, _) = curl(args(&["-H", &bearer(&alice), &path_url("web", "")])).await;
    assert_eq!(st, 308);
    assert!(h.contains("location: /p/web/8080/\r\n"), "{h}");
    let (st, h, _) = curl(args(&[
        "-H",
        &bearer(&alice),
        &path_url("web", "/redirect"),
    ]))
    .await;
    assert_eq!(st, 302);
    assert!(h.contains("location: /p/web/8080/headers"), "{h}");
    // busybox httpd answers through its own preview too.
    let (st, _, body) = curl(args(&[
        "-H",
        &bearer(&alice),
        &format!("{}/p/web/8081/passwd", s.url),
    ]))
    .await;
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("root:x:0:0"));
    // The subdomain form: the workspace's own origin, no sandbox needed.
    let (st, h, body) = curl(args(&[
        "--resolve",
        &resolve,
        "-H",
        &bearer(&alice),
        &sub_url("/headers"),
    ]))
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    assert!(!h.contains("content-security-policy"), "{h}");
    assert!(String::from_utf8_lossy(&body).contains(&format!("x-forwarded-host: {sub_host}")));

    // The server restarted in the workspace: connections kept from earlier requests are dead,
    // and the next request gets a new one.
    let resp = s
        .http
        .post(format!("{}/api/v1/workspaces/web/exec", s.url))
        .bearer_auth(&alice)
        .json(&json!({"command": ["killall", "portsrv"]}))
        .send()
        .await
        .unwrap();
    let _ = resp.text().await;
    for _ in 0..200 {
        let (_, v) = s.get(&alice, "/api/v1/workspaces/web/ports").await;
        if port_of(&v, 8080)["listening"] != true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, _, body) = curl(args(&["-H", &bearer(&alice), &path_url("web", "/")])).await;
    assert_eq!((st, code(&body)), (502, "port_not_listening".into()));
    daemon(&s, &alice, "web", "portsrv 8080", 8080).await;
    for _ in 0..3 {
        let (st, _, body) = curl(args(&["-H", &bearer(&alice), &path_url("web", "/again")])).await;
        assert_eq!(
            (st, String::from_utf8_lossy(&body).as_ref()),
            (200, "hello from portsrv /again\n")
        );
    }

    // Owner-level: another user gets 404, anonymous 401, an admin (allowed to exec) gets through.
    let (st, _, body) = curl(args(&["-H", &bearer(&bob), &path_url("web.alice", "/")])).await;
    assert_eq!((st, code(&body)), (404, "not_found".into()));
    let (st, _, body) = curl(args(&[&path_url("web.alice", "/")])).await;
    assert_eq!((st, code(&body)), (401, "unauthenticated".into()));
    let (st, _, body) = curl(args(&["--resolve", &resolve, &sub_url("/")])).await;
    assert_eq!((st, code(&body)), (401, "unauthenticated".into()));
    let (st, _, _) = curl(args(&[
        "-H",
        &bearer(&s.admin),
        &path_url("web.alice", "/"),
    ]))
    .await;
    assert_eq!(st, 200);
    // A bad token is refused, not taken as anonymous.
    let (st, _, body) = curl(args(&[
        "-H",
        "Authorization: Bearer wrn_bogus",
        &path_url("web.alice", "/"),
    ]))
    .await;
    assert_eq!((st, code(&body)), (401, "unauthenticated".into()));
    // Browsers get a page.
    let (st, h, body) = curl(args(&[
        "-H",
        "Accept: text/html",
        &path_url("web.alice", "/"),
    ]))
    .await;
    assert_eq!(st, 401);
    assert!(h.contains("text/html") && String::from_utf8_lossy(&body).contains("unauthenticated"));

    // Only whoever may change the workspace changes sharing.
    let (st, _) = share(&s, &bob, "web.alice", "8080", "public").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Organization: any signed-in user, still not anonymous.
    let (st, v) = share(&s, &alice, "web", "8080", "organization").await;
    assert_eq!(
        (st, v["sharing"].as_str()),
        (StatusCode::OK, Some("organization")),
        "{v}"
    );
    let (st, _, _) = curl(args(&["-H", &bearer(&bob), &path_url("web.alice", "/")])).await;
    assert_eq!(st, 200);
    let (st, _, _) = curl(args(&[
        "--resolve",
        &resolve,
        "-H",
        &bearer(&bob),
        &sub_url("/"),
    ]))
    .await;
    assert_eq!(st, 200);
    let (st, _, _) = curl(args(&[&path_url("web.alice", "/")])).await;
    assert_eq!(st, 401);
    // The other port keeps its own level.
    let (st, _, _) = curl(args(&[
        "-H",
        &bearer(&bob),
        &format!("{}/p/web.alice/8081/passwd", s.url),
    ]))
    .await;
    assert_eq!(st, 404);

    // Public: anyone, through both forms.
    let o = warren(&s, &alice, &["ports", "share", "web", "8080", "public"]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (st, _, body) = curl(args(&[&path_url("web.alice", "/hi")])).await;
    assert_eq!(
        (st, String::from_utf8_lossy(&body).as_ref()),
        (200, "hello from portsrv /hi\n")
    );
    let (st, _, _) = curl(args(&["--resolve", &resolve, &sub_url("/")])).await;
    assert_eq!(st, 200);
    // An anonymous caller must name the owner: `web` alone means nothing without a user.
    let (st, _, _) = curl(args(&[&path_url("web", "/")])).await;
    assert_eq!(st, 401);

    // Back to owner: enforced on the next request.
    let (st, _) = share(&s, &alice, "web", "8080", "owner").await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = curl(args(&[&path_url("web.alice", "/")])).await;
    assert_eq!(st, 401);
    let (st, _, _) = curl(args(&["-H", &bearer(&bob), &path_url("web.alice", "/")])).await;
    assert_eq!(st, 404);

    // Browser sign-in: a one-time ticket link sets a cookie scoped to the preview and redirects.
    let (st, t) = s
        .post(
            &alice,
            "/api/v1/workspaces/web/ports/8080/ticket",
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{t}");
    let link = t["url"].as_str().unwrap().to_string();
    assert!(
        link.starts_with(&format!("{}/p/web.alice/8080/__warren/auth?ticket=", s.url)),
        "{link}"
    );
    assert!(!link.contains(&alice));
    let (st, h, _) = curl(args(&[&link])).await;
    assert_eq!(st, 303);
    assert!(h.contains("location: /p/web.alice/8080/\r\n"), "{h}");
    let set_cookie = h
        .lines()
        .find(|l| l.starts_with("set-cookie: warren_preview="))
        .unwrap_or_else(|| panic!("{h}"))
        .to_string();
    assert!(
        set_cookie.contains("path=/p/web.alice/8080/"),
        "{set_cookie}"
    );
    assert!(
        set_cookie.contains("httponly") && set_cookie.contains("samesite=lax"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains("secure"), "plain HTTP: {set_cookie}");
    // The link works once.
    let (st, _, body) = curl(args(&[&link])).await;
    assert_eq!((st, code(&body)), (401, "unauthenticated".into()));
    // A fresh link followed by a browser-like client (cookie jar): the preview, signed in.
    let jar = s.dir.path().join("jar");
    let jar_s = jar.display().to_string();
    let (_, t) = s
        .post(
            &alice,
            "/api/v1/workspaces/web/ports/8080/ticket",
            json!({}),
        )
        .await;
    let (st, _, body) = curl(args(&[
        "-L",
        "-c",
        &jar_s,
        "-b",
        &jar_s,
        t["url"].as_str().unwrap(),
    ]))
    .await;
    assert_eq!(
        (st, String::from_utf8_lossy(&body).as_ref()),
        (200, "hello from portsrv /\n")
    );
    let (st, _, body) = curl(args(&[
        "-c",
        &jar_s,
        "-b",
        &jar_s,
        &path_url("web.alice", "/headers"),
    ]))
    .await;
    let seen = String::from_utf8_lossy(&body).to_string();
    assert_eq!(st, 200, "{seen}");
    assert!(
        !seen.contains("warren_preview"),
        "the cookie reached the workspace: {seen}"
    );
    let cookie_value = std::fs::read_to_string(&jar)
        .unwrap()
        .lines()
        .find(|l| l.contains("warren_preview"))
        .and_then(|l| l.split('\t').next_back())
        .unwrap()
        .to_string();
    // The cookie is for that port only.
    let (st, _, _) = curl(args(&[
        "-H",
        &format!("Cookie: warren_preview={cookie_value}"),
        &format!("{}/p/web.alice/8081/passwd", s.url),
    ]))
    .await;
    assert_eq!(st, 401);
    // Bob's own session, replayed against Alice's port, grants nothing.
    create(&s, &bob, "mine").await;
    daemon(&s, &bob, "mine", "portsrv 8080", 8080).await;
    // (The value from a cookie jar: the headers `curl` returns here are lowercased.)
    let bobs = sign_in(&s, &bob, "mine", false).await;
    let (st, _, _) = curl(args(&[
        "-H",
        &format!("Cookie: warren_preview={bobs}"),
        &format!("{}/p/mine.bob/8080/", s.url),
    ]))
    .await;
    assert_eq!(st, 200, "Bob's session works on his own port");
    let (st, _, _) = curl(args(&[
        "-H",
        &format!("Cookie: warren_preview={bobs}"),
        &path_url("web.alice", "/"),
    ]))
    .await;
    assert_eq!(st, 401);
    // A ticket for a port Bob may not reach is not handed out; unknown tickets are refused.
    let (st, _) = s
        .post(
            &bob,
            "/api/v1/workspaces/web.alice/ports/8080/ticket",
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, body) = curl(args(&[&path_url(
        "web.alice",
        "/__warren/auth?ticket=made-up",
    )]))
    .await;
    assert_eq!((st, code(&body)), (401, "unauthenticated".into()));
    // Revoking the token that made the session ends the session.
    let (_, me) = s.get(&alice, "/api/v1/me").await;
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::DELETE,
            &format!("/api/v1/tokens/{}", me["token"]["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert!(st.is_success(), "{st}");
    let (st, _, _) = curl(args(&["-b", &jar_s, &path_url("web.alice", "/")])).await;
    assert_eq!(st, 401);
    let alice = s.token_for("alice", None).await;

    // Nothing listening: 502 with a code; the workspace stopped: 503 with a code and hint.
    let (st, _, body) = curl(args(&[
        "-H",
        &bearer(&alice),
        &format!("{}/p/web/8099/", s.url),
    ]))
    .await;
    assert_eq!((st, code(&body)), (502, "port_not_listening".into()));
    // Bad input.
    for (p, want) in [("0", 400), ("70000", 400), ("http", 400)] {
        let (st, _, body) = curl(args(&[
            "-H",
            &bearer(&alice),
            &format!("{}/p/web/{p}/", s.url),
        ]))
        .await;
        assert_eq!((st, code(&body)), (want, "invalid_request".into()), "{p}");
        let (st, v) = share(&s, &alice, "web", p, "public").await;
        assert_eq!(
            (st.as_u16(), v["code"].as_str()),
            (400, Some("invalid_request")),
            "{p}: {v}"
        );
    }
    let (st, v) = share(&s, &alice, "web", "8080", "everyone").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(v["message"].as_str().unwrap().contains("`everyone`"), "{v}");
    let (st, _, body) = curl(args(&[&format!("{}/p/Not_A_Name/8080/", s.url)])).await;
    assert_eq!((st, code(&body)), (404, "not_found".into()));

    // Share changes are audited with their diff; preview requests are counted.
    let (_, audit) = s
        .get(&s.admin, "/api/v1/audit?action=workspace.port.update")
        .await;
    let text = audit.to_string();
    assert!(
        text.contains("organization") && text.contains("alice"),
        "{audit}"
    );
    let metrics = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("warren_preview_requests_total{form=\"path\",status=\"200\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("warren_preview_requests_total{form=\"subdomain\",status=\"200\"}"),
        "{metrics}"
    );
    // Previews are activity of kind `port`.
    let (_, act) = s.get(&alice, "/api/v1/workspaces/web/activity").await;
    assert!(act["last"]["port"].is_string(), "{act}");

    let (st, v) = s
        .post(&alice, "/api/v1/workspaces/web/stop", json!({}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
    let (st, _, body) = curl(args(&["-H", &bearer(&alice), &path_url("web", "/")])).await;
    assert_eq!((st, code(&body)), (503, "workspace_not_running".into()));
    assert!(String::from_utf8_lossy(&body).contains("warren start web"));
    let (_, list) = s.get(&alice, "/api/v1/workspaces/web/ports").await;
    assert_eq!(list["running"], false);
    assert_eq!(port_of(&list, 8080)["listening"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_sharing_needs_the_administrators_consent() {
    let s = server(ConfigLayer::default()).await;
    let alice = s.user_token("alice", "member", None).await;
    create(&s, &alice, "web").await;
    daemon(&s, &alice, "web", "portsrv 8080", 8080).await;
    let (st, v) = share(&s, &alice, "web", "8080", "public").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("sharing_not_allowed")),
        "{v}"
    );
    assert!(
        v["hint"].as_str().unwrap().contains("max_port_sharing"),
        "{v}"
    );
    let (st, v) = share(&s, &alice, "web", "8080", "organization").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // No preview domain: only the path form.
    assert_eq!(v["urls"].as_array().unwrap().len(), 1, "{v}");
    // A level stored under a wider limit is capped when the limit narrows.
    let s = s
        .restart_with(ConfigLayer {
            max_port_sharing: Some("owner".into()),
            ..Default::default()
        })
        .await;
    let bob = s.user_token("bob", "member", None).await;
    let (st, _, _) = curl(args(&[
        "-H",
        &bearer(&bob),
        &format!("{}/p/web.alice/8080/", s.url),
    ]))
    .await;
    assert_eq!(st, 404);
    let (_, list) = s.get(&alice, "/api/v1/workspaces/web/ports").await;
    assert_eq!(port_of(&list, 8080)["sharing"], "owner", "{list}");
}

/// The FNV-1a 64 hash `portsrv /count` answers with.
fn fnv(data: &[u8]) -> String {
    let mut h = 0xcbf29ce484222325u64;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways_and_websockets_and_port_forwards_relay() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let s = server(preview_layer("organization")).await;
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    create(&s, &alice, "web").await;
    daemon(&s, &alice, "web", "portsrv 8080", 8080).await;
    // A server on IPv6 loopback only is reached too.
    daemon(&s, &alice, "web", "portsrv 8082 ::1", 8082).await;
    let url = |p: u16, rest: &str| format!("{}/p/web/{p}{rest}", s.url);

    // 64 MiB down.
    let size: u64 = 64 << 20;
    let (st, _, body) = curl(args(&[
        "-H",
        &bearer(&alice),
        &url(8080, &format!("/bytes/{size}")),
    ]))
    .await;
    assert_eq!(st, 200);
    assert_eq!(body.len() as u64, size);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    // 80 MiB up (more than the API's 64 MiB body limit, which previews do not have), with a
    // length and chunked.
    let data: Vec<u8> = (0..80u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let file = s.dir.path().join("up.bin");
    std::fs::write(&file, &data).unwrap();
    let want = format!("{} {}\n", data.len(), fnv(&data));
    let at_file = format!("@{}", file.display());
    for extra in [vec![], vec!["-H", "Transfer-Encoding: chunked"]] {
        let mut a = args(&["-H", &bearer(&alice), "--data-binary", &at_file]);
        a.extend(args(&extra));
        a.push(url(8080, "/count"));
        let (st, _, body) = curl(a).await;
        assert_eq!(
            (st, String::from_utf8_lossy(&body).to_string()),
            (200, want.clone()),
            "{extra:?}"
        );
    }
    let (st, _, body) = curl(args(&["-H", &bearer(&alice), &url(8082, "/v6")])).await;
    assert_eq!(
        (st, String::from_utf8_lossy(&body).as_ref()),
        (200, "hello from portsrv /v6\n")
    );

    // A WebSocket through the preview: echoed both ways, text and a large binary message.
    let ws_url = url(8080, "/ws").replace("http://", "ws://");
    let mut r = ws_url.as_str().into_client_request().unwrap();
    r.headers_mut()
        .insert("authorization", format!("Bearer {alice}").parse().unwrap());
    let (mut sock, resp) = tokio_tungstenite::connect_async(r).await.unwrap();
    assert_eq!(resp.status().as_u16(), 101);
    sock.send(Message::Text("hello".into())).await.unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    sock.send(Message::Binary(big.clone().into()))
        .await
        .unwrap();
    let m1 = sock.next().await.unwrap().unwrap();
    let m2 = sock.next().await.unwrap().unwrap();
    assert_eq!(m1, Message::Text("hello".into()));
    assert_eq!(m2, Message::Binary(big.into()));
    // While it is open it counts as a port session.
    let (_, act) = s.get(&alice, "/api/v1/workspaces/web/activity").await;
    assert_eq!(act["open_sessions"]["port"], 1, "{act}");
    sock.close(None).await.unwrap();
    while sock.next().await.is_some() {}
    drop(sock);
    // Another user's WebSocket upgrade is refused like any request.
    let mut r = url(8080, "/ws")
        .replace("/p/web/", "/p/web.alice/")
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    r.headers_mut()
        .insert("authorization", format!("Bearer {bob}").parse().unwrap());
    match tokio_tungstenite::connect_async(r).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 404)
        }
        other => panic!("{:?}", other.map(|(_, r)| r.status())),
    }

    // `warren port-forward` with curl through it: two pairs, one of them REMOTE alone (a port
    // free on the host, where portsrv also listens in the workspace), until Ctrl-C.
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (local, same) = (free(), free());
    daemon(&s, &alice, "web", &format!("portsrv {same}"), same).await;
    let home = s.dir.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut pf = tokio::process::Command::new(common::warren_exe())
        .args([
            "port-forward",
            "web",
            &format!("{local}:8080"),
            &same.to_string(),
        ])
        .env("WARREN_URL", &s.url)
        .env("WARREN_TOKEN", &alice)
        .env("HOME", &home)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut err = tokio::io::BufReader::new(pf.stderr.take().unwrap());
    let mut lines = vec![];
    for _ in 0..2 {
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut err, &mut line)
            .await
            .unwrap();
        lines.push(line);
    }
    assert_eq!(
        lines,
        [
            format!("Forwarding 127.0.0.1:{local} -> web:8080\n"),
            format!("Forwarding 127.0.0.1:{same} -> web:{same}\n")
        ]
    );
    let (st, _, body) = curl(args(&[&format!(
        "http://127.0.0.1:{local}/through-the-forward"
    )]))
    .await;
    assert_eq!(
        (st, String::from_utf8_lossy(&body).as_ref()),
        (200, "hello from portsrv /through-the-forward\n")
    );
    let (st, _, body) = curl(args(&[&format!("http://127.0.0.1:{same}/six")])).await;
    assert_eq!(
        (st, String::from_utf8_lossy(&body).as_ref()),
        (200, "hello from portsrv /six\n")
    );
    let (st, _, body) = curl(args(&[
        "--data-binary",
        &at_file,
        &format!("http://127.0.0.1:{local}/count"),
    ]))
    .await;
    assert_eq!(
        (st, String::from_utf8_lossy(&body).to_string()),
        (200, want.clone())
    );
    // Ctrl-C stops it cleanly.
    let st = Command::new("kill")
        .args(["-INT", &pf.id().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = pf.wait().await.unwrap();
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut err, &mut rest)
        .await
        .unwrap();
    assert!(rest.contains("Stopped forwarding."), "{rest}");
    // Port-forward refusals: another user's workspace, nothing listening.
    let o = Command::new(common::warren_exe())
        .args(["port-forward", "web.alice", &format!("{local}:8080")])
        .env("WARREN_URL", &s.url)
        .env("WARREN_TOKEN", &bob)
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not_found")
            || String::from_utf8_lossy(&o.stderr).contains("no workspace"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let connect = |ws: &str, port: &str, token: &str| {
        let mut r = format!(
            "{}/api/v1/workspaces/{ws}/ports/{port}/connect",
            s.url.replace("http://", "ws://")
        )
        .into_client_request()
        .unwrap();
        r.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    for (ws, port, token, want) in [
        ("web", "8099", &alice, 502),
        ("web", "0", &alice, 400),
        ("web.alice", "8080", &bob, 404),
    ] {
        match tokio_tungstenite::connect_async(connect(ws, port, token)).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), want, "{ws} {port}")
            }
            other => panic!("{ws} {port}: {:?}", other.map(|(_, r)| r.status())),
        }
    }

    // Port forwards and preview WebSockets are audited with who, from where, which port, how long.
    for action in ["workspace.port_forward", "workspace.preview_websocket"] {
        // Written when the connection ends, which the server notices a moment after the client.
        let mut audit = Value::Null;
        for _ in 0..100 {
            audit = s
                .get(&s.admin, &format!("/api/v1/audit?action={action}"))
                .await
                .1;
            if audit["records"].as_array().is_some_and(|r| !r.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rec = &audit["records"][0];
        assert_eq!(rec["actor_username"], "alice", "{audit}");
        assert_eq!(rec["source_ip"], "127.0.0.1", "{audit}");
        let details: Value =
            serde_json::from_str(rec["details_json"].as_str().unwrap_or("{}")).unwrap_or_default();
        assert_eq!(details["port"], 8080, "{audit}");
        assert!(details["duration_ms"].is_u64(), "{audit}");
    }
}

/// Signs in to a preview with a ticket link as a browser would (the subdomain form's link when
/// `subdomain`): the `warren_preview` cookie's value.
async fn sign_in(s: &TestServer, token: &str, ws: &str, subdomain: bool) -> String {
    let (st, t) = s
        .post(
            token,
            &format!("/api/v1/workspaces/{ws}/ports/8080/ticket"),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{t}");
    let mut a = vec![];
    let link = if subdomain {
        let link = t["subdomain_url"].as_str().unwrap().to_string();
        let authority = link.split('/').nth(2).unwrap().to_string();
        a.extend(args(&["--resolve", &format!("{authority}:127.0.0.1")]));
        link
    } else {
        t["url"].as_str().unwrap().to_string()
    };
    // The headers `curl` returns are lowercased: the cookie's value comes from a cookie jar.
    let jar = tempfile::NamedTempFile::new_in(s.dir.path()).unwrap();
    a.extend(args(&["-c", &jar.path().display().to_string()]));
    a.push(link);
    let (st, h, _) = curl(a).await;
    assert_eq!(st, 303, "{h}");
    std::fs::read_to_string(jar.path())
        .unwrap()
        .lines()
        .find(|l| l.contains("\twarren_preview\t"))
        .and_then(|l| l.split('\t').next_back())
        .unwrap_or_else(|| panic!("{h}"))
        .to_string()
}

/// The Set-Cookie lines of a (lowercased) header block.
fn set_cookies(h: &str) -> Vec<&str> {
    h.lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .map(str::trim)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_resist_other_previews_planted_cookies_and_hostile_headers() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let s = server(preview_layer("organization")).await;
    let alice = s.user_token("alice", "member", None).await;
    let mallory = s.user_token("mallory", "member", None).await;
    create(&s, &alice, "web").await;
    daemon(&s, &alice, "web", "portsrv 8080", 8080).await;
    create(&s, &mallory, "web").await;
    daemon(&s, &mallory, "web", "portsrv 8080", 8080).await;
    let port = s.url.rsplit(':').next().unwrap().to_string();
    let host = |user: &str| format!("8080--web--{user}.{DOMAIN}:{port}");
    let resolve = |user: &str| format!("8080--web--{user}.{DOMAIN}:{port}:127.0.0.1");
    let sub = |user: &str, rest: &str| format!("http://{}{rest}", host(user));
    let path_url = |ws: &str, rest: &str| format!("{}/p/{ws}/8080{rest}", s.url);

    // 1. Every preview under the preview domain is the same site, so SameSite=Lax lets Mallory's
    // preview page send requests to Alice's with Alice's cookie. Browsers say so in
    // Sec-Fetch-Site: only top-level navigations from elsewhere are taken.
    let a_sub = sign_in(&s, &alice, "web", true).await;
    let a_cookie = format!("Cookie: warren_preview={a_sub}");
    let with_cookie = |extra: &[&str]| {
        let mut a = args(&["--resolve", &resolve("alice"), "-H", &a_cookie]);
        a.extend(args(extra));
        a.push(sub("alice", "/"));
        a
    };
    for extra in [
        vec![],
        vec![
            "-H",
            "Sec-Fetch-Site: same-origin",
            "-H",
            "Sec-Fetch-Mode: cors",
        ],
        vec![
            "-H",
            "Sec-Fetch-Site: none",
            "-H",
            "Sec-Fetch-Mode: navigate",
        ],
        vec![
            "-H",
            "Sec-Fetch-Site: cross-site",
            "-H",
            "Sec-Fetch-Mode: navigate",
            "-H",
            "Sec-Fetch-Dest: document",
        ],
    ] {
        let (st, _, body) = curl(with_cookie(&extra)).await;
        assert_eq!(st, 200, "{extra:?}: {}", String::from_utf8_lossy(&body));
    }
    for site in ["same-site", "cross-site"] {
        for (method, mode, dest) in [
            ("GET", "cors", "empty"),
            ("POST", "cors", "empty"),
            ("GET", "no-cors", "script"),
            ("POST", "navigate", "document"),
            ("GET", "navigate", "iframe"),
        ] {
            let (st, _, body) = curl(with_cookie(&[
                "-X",
                method,
                "-H",
                &format!("Sec-Fetch-Site: {site}"),
                "-H",
                &format!("Sec-Fetch-Mode: {mode}"),
                "-H",
                &format!("Sec-Fetch-Dest: {dest}"),
            ]))
            .await;
            assert_eq!(
                (st, code(&body)),
                (403, "permission_denied".into()),
                "{site} {method} {mode} {dest}"
            );
        }
    }
    // A bearer token is no ambient credential: not concerned.
    let (st, _, _) = curl(args(&[
        "--resolve",
        &resolve("alice"),
        "-H",
        &bearer(&alice),
        "-H",
        "Sec-Fetch-Site: cross-site",
        &sub("alice", "/"),
    ]))
    .await;
    assert_eq!(st, 200);

    // WebSockets with the cookie: only from the preview's own origin.
    let ws_connect = |url: String, cookie: String, origin: Option<String>| {
        let s_port = port.clone();
        async move {
            let mut r = url.as_str().into_client_request().unwrap();
            r.headers_mut().insert("cookie", cookie.parse().unwrap());
            if let Some(o) = origin {
                r.headers_mut().insert("origin", o.parse().unwrap());
            }
            let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{s_port}"))
                .await
                .unwrap();
            tokio_tungstenite::client_async(r, tcp).await
        }
    };
    let refused = |r: Result<_, tokio_tungstenite::tungstenite::Error>, what: &str| match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), 403, "{what}")
        }
        Ok(_) => panic!("{what}: the WebSocket was accepted"),
        Err(e) => panic!("{what}: {e}"),
    };
    let a_ws = format!("ws://{}/ws", host("alice"));
    let a_pair = format!("warren_preview={a_sub}");
    for origin in [
        Some(format!("http://{}", host("mallory"))),
        Some("null".to_string()),
        None,
    ] {
        let r = ws_connect(a_ws.clone(), a_pair.clone(), origin.clone()).await;
        refused(r, &format!("{origin:?}"));
    }
    let (mut sock, resp) = ws_connect(
        a_ws.clone(),
        a_pair.clone(),
        Some(format!("http://{}", host("alice"))),
    )
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 101);
    sock.send(Message::Text("mine".into())).await.unwrap();
    assert_eq!(
        sock.next().await.unwrap().unwrap(),
        Message::Text("mine".into())
    );
    drop(sock);
    // The path form: the API's own origin only (a sandboxed preview page's origin is `null`).
    let a_path = sign_in(&s, &alice, "web", false).await;
    let p_ws = format!("{}/ws", path_url("web.alice", "")).replace("http://", "ws://");
    let p_pair = format!("warren_preview={a_path}");
    let r = ws_connect(p_ws.clone(), p_pair.clone(), Some("null".into())).await;
    refused(r, "path form, null origin");
    let (sock, resp) = ws_connect(p_ws, p_pair, Some(s.url.clone())).await.unwrap();
    assert_eq!(resp.status().as_u16(), 101);
    drop(sock);

    // 2. Workspace cookies are read like a browser reads them: no Domain ever (host-only), no
    // nameless cookies, nothing carrying Warren's cookie name; in the path form the path is
    // kept under the prefix even when spelled `Path =/`.
    let (st, h, _) = curl(args(&[
        "--resolve",
        &resolve("alice"),
        "-H",
        &bearer(&alice),
        &sub("alice", "/evil-cookies"),
    ]))
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        set_cookies(&h),
        ["sid=1; path=/", "wide=2; path=/", "ok=3; path=/a; httponly"],
        "{h}"
    );
    let (st, h, _) = curl(args(&[
        "-H",
        &bearer(&alice),
        &path_url("web", "/evil-cookies"),
    ]))
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        set_cookies(&h),
        [
            "sid=1; path=/p/web/8080/",
            "wide=2; path=/p/web/8080/",
            "ok=3; path=/p/web/8080/a; httponly"
        ],
        "{h}"
    );

    // 3. A planted or left-over session for another preview neither displaces nor impersonates:
    // the session for this very workspace and port is the one taken, whatever the order.
    let m_sub = sign_in(&s, &mallory, "web", true).await;
    for user in ["alice", "mallory"] {
        for pair in [
            format!("warren_preview={m_sub}; warren_preview={a_sub}"),
            format!("warren_preview={a_sub}; warren_preview={m_sub}"),
        ] {
            let (st, _, body) = curl(args(&[
                "--resolve",
                &resolve(user),
                "-H",
                &format!("Cookie: {pair}"),
                &sub(user, "/who"),
            ]))
            .await;
            assert_eq!(
                (st, String::from_utf8_lossy(&body).as_ref()),
                (200, "hello from portsrv /who\n"),
                "{user}: {pair}"
            );
        }
    }
    // Mallory's session alone on Alice's owner-level preview grants nothing.
    let (st, _, _) = curl(args(&[
        "--resolve",
        &resolve("alice"),
        "-H",
        &format!("Cookie: warren_preview={m_sub}"),
        &sub("alice", "/"),
    ]))
    .await;
    assert_eq!(st, 401);

    // 4. Login CSRF: Mallory's ticket on Alice's bare-form path (`/p/web/...` is the visitor's
    // own `web`) would sign Alice's preview in as Mallory. Only the canonical `web.mallory`
    // redeems, and the refused attempt does not use the ticket up.
    let (_, t) = s
        .post(
            &mallory,
            "/api/v1/workspaces/web/ports/8080/ticket",
            json!({}),
        )
        .await;
    let link = t["url"].as_str().unwrap().to_string();
    let ticket = link.split("ticket=").nth(1).unwrap().to_string();
    let (st, h, body) = curl(args(&[&path_url(
        "web",
        &format!("/__warren/auth?ticket={ticket}"),
    )]))
    .await;
    assert_eq!((st, code(&body)), (404, "not_found".into()), "{h}");
    assert!(set_cookies(&h).is_empty(), "{h}");
    let (st, h, _) = curl(args(&[&link])).await;
    assert_eq!(st, 303, "{h}");
    assert!(h.contains("location: /p/web.mallory/8080/\r\n"), "{h}");

    // 5. Every Authorization value is looked at and Warren tokens are removed from all of them,
    // and from WebSocket subprotocols.
    let (st, _, body) = curl(args(&[
        "-H",
        "Authorization: Basic YTpi",
        "-H",
        &bearer(&alice),
        "-H",
        &format!("Sec-WebSocket-Protocol: chat, warren.bearer.{alice}"),
        &path_url("web", "/headers"),
    ]))
    .await;
    let seen = String::from_utf8_lossy(&body).to_string();
    assert_eq!(st, 200, "{seen}");
    assert!(!seen.contains(&alice) && !seen.contains("wrn_"), "{seen}");
    assert!(seen.contains("authorization: Basic YTpi\n"), "{seen}");
    assert!(seen.contains("sec-websocket-protocol: chat\n"), "{seen}");

    // 6. Minting tickets evicts only the minter's own oldest: no one else is signed out.
    let mut links = vec![];
    for _ in 0..65 {
        let (st, t) = s
            .post(
                &mallory,
                "/api/v1/workspaces/web/ports/8080/ticket",
                json!({}),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
        links.push(t["url"].as_str().unwrap().to_string());
    }
    let (st, _, body) = curl(args(&[&links[0]])).await;
    assert_eq!((st, code(&body)), (401, "unauthenticated".into()));
    let (st, _, _) = curl(args(&[links.last().unwrap()])).await;
    assert_eq!(st, 303);
    let first = sign_in(&s, &mallory, "web", false).await;
    for _ in 0..64 {
        let _ = sign_in(&s, &mallory, "web", false).await;
    }
    let (st, _, _) = curl(args(&[
        "-H",
        &format!("Cookie: warren_preview={first}"),
        &path_url("web.mallory", "/"),
    ]))
    .await;
    assert_eq!(st, 401, "Mallory's oldest session was evicted");
    let (st, _, _) = curl(with_cookie(&[])).await;
    assert_eq!(st, 200, "Alice's session outlived Mallory's sign-ins");

    // 7. The workspace redirecting to itself by its inside name lands on its preview; other
    // absolute redirects pass unchanged (see README).
    let (st, h, _) = curl(args(&[
        "-H",
        &bearer(&alice),
        &path_url("web", "/self-redirect"),
    ]))
    .await;
    assert_eq!(st, 302);
    assert!(h.contains("location: /p/web/8080/headers\r\n"), "{h}");
    let (st, h, _) = curl(args(&[
        "--resolve",
        &resolve("alice"),
        "-H",
        &bearer(&alice),
        &sub("alice", "/self-redirect"),
    ]))
    .await;
    assert_eq!(st, 302);
    assert!(h.contains("location: /headers\r\n"), "{h}");
    let (st, h, _) = curl(args(&["-H", &bearer(&alice), &path_url("web", "/away")])).await;
    assert_eq!(st, 302);
    assert!(
        h.contains("location: https://elsewhere.example/\r\n"),
        "{h}"
    );
}
