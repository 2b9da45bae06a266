//! Git in workspaces against a real server: a busybox image with the host's git
//! (`common/gitimg.rs`) cloning from and pushing to a real git smart-HTTP server with basic auth
//! (`common/gitserve.rs`) that workspaces reach over their network.

mod common;
#[path = "common/gitimg.rs"]
mod gitimg;
#[path = "common/gitserve.rs"]
mod gitserve;

use common::TestServer;
use gitserve::Access;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Runs `command` in the workspace through the exec API; (exit code, stdout, stderr).
async fn exec(s: &TestServer, token: &str, ws: &str, command: &[&str]) -> (i32, String, String) {
    let resp = s
        .http
        .post(format!("{}/api/v1/workspaces/{ws}/exec", s.url))
        .bearer_auth(token)
        .json(&json!({"command": command, "timeout": "120s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let (mut code, mut out, mut err) = (-1, String::new(), String::new());
    for l in text.lines().filter(|l| !l.is_empty()) {
        let ev: Value = serde_json::from_str(l).unwrap();
        match ev["type"].as_str() {
            Some("stdout") => out.push_str(ev["text"].as_str().unwrap_or("")),
            Some("stderr") => err.push_str(ev["text"].as_str().unwrap_or("")),
            Some("exit") => code = ev["code"].as_i64().unwrap() as i32,
            Some("error") => err.push_str(ev["message"].as_str().unwrap_or("")),
            _ => {}
        }
    }
    (code, out, err)
}

/// A server with the git image as template `git` (remote user `dev`) and a member `alice`.
async fn setup() -> (TestServer, String) {
    let s = TestServer::start().await;
    gitimg::import_gitbox(&s);
    s.push_template(
        "git",
        json!({"image": gitimg::GITBOX, "overrideCommand": true, "remoteUser": "dev"}),
    )
    .await;
    let alice = s.user_token("alice", "member", None).await;
    (s, alice)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workspace_clones_and_pushes_over_http_with_the_image_git() {
    let (s, alice) = setup().await;
    s.create_workspace(&alice, "w", "git").await;
    let repo = gitserve::server().create_repo(
        "demo",
        Access::push_with("bot", "s3cret"),
        &[("README.md", "hello\n"), ("src/lib.txt", "one\n")],
    );
    let (code, out, err) = exec(&s, &alice, "w", &["git", "--version"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("git version"), "{out}");
    let (code, out, err) = exec(
        &s,
        &alice,
        "w",
        &["git", "clone", "-q", &repo.url(), "/tmp/demo"],
    )
    .await;
    assert_eq!(code, 0, "clone: {out}{err}");
    let (_, out, _) = exec(&s, &alice, "w", &["cat", "/tmp/demo/src/lib.txt"]).await;
    assert_eq!(out, "one\n");
    // A push without credentials is refused by the server; with them it lands.
    let script = "cd /tmp/demo && echo two >> src/lib.txt && \
        git -c user.name=A -c user.email=a@x commit -qam change && \
        GIT_TERMINAL_PROMPT=0 git push -q origin HEAD:refs/heads/feature";
    let (code, _, err) = exec(&s, &alice, "w", &["sh", "-c", script]).await;
    assert_ne!(code, 0);
    assert!(repo.commit("feature").is_none(), "{err}");
    let script = format!(
        "cd /tmp/demo && GIT_TERMINAL_PROMPT=0 git push -q {} HEAD:refs/heads/feature",
        repo.url_with("bot", "s3cret")
    );
    let (code, out, err) = exec(&s, &alice, "w", &["sh", "-c", &script]).await;
    assert_eq!(code, 0, "push: {out}{err}");
    assert_eq!(repo.file("feature", "src/lib.txt").unwrap(), "one\ntwo\n");
    assert_eq!(repo.file("main", "src/lib.txt").unwrap(), "one\n");
    let pushes = repo.pushes();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].user.as_deref(), Some("bot"));
}
