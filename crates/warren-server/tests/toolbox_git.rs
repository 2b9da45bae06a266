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

/// `/api/v1/workspaces/{ws}/toolbox/git/{op}`.
fn git_path(ws: &str, op: &str) -> String {
    format!("/api/v1/workspaces/{ws}/toolbox/git/{op}")
}

/// A GET answered with text (the diff).
async fn get_text(s: &TestServer, token: &str, path: &str) -> (StatusCode, String) {
    let resp = s
        .http
        .get(format!("{}{path}", s.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let st = resp.status();
    (st, resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_edit_commit_branch_push_and_pull_through_the_toolbox() {
    let (s, alice) = setup().await;
    s.create_workspace(&alice, "w", "git").await;
    let repo = gitserve::server().create_repo(
        "proj",
        Access::open(),
        &[("README.md", "hello\n"), ("src/main.txt", "one\n")],
    );
    let dev = repo.commit_files("dev", "dev work", &[("dev.txt", "on dev\n")]);
    repo.commit_files("main", "second", &[("src/main.txt", "one\ntwo\n")]);

    // A shallow clone of one branch.
    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "clone"),
            json!({"url": repo.url(), "path": "shallow", "branch": "dev", "depth": 1}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["branch"], "dev");
    assert_eq!(v["commit"], dev.as_str());
    let shallow = v["path"].as_str().unwrap().to_string();
    assert!(
        shallow.starts_with('/') && shallow.ends_with("/shallow"),
        "{v}"
    );
    let (_, out, _) = exec(
        &s,
        &alice,
        "w",
        &[
            "git",
            "-C",
            &shallow,
            "rev-parse",
            "--is-shallow-repository",
        ],
    )
    .await;
    assert_eq!(out.trim(), "true");
    let (st, log) = s
        .get(&alice, &format!("{}?path=shallow", git_path("w", "log")))
        .await;
    assert_eq!(st, StatusCode::OK, "{log}");
    assert_eq!(log.as_array().unwrap().len(), 1, "{log}");
    let (_, out, _) = exec(&s, &alice, "w", &["cat", &format!("{shallow}/dev.txt")]).await;
    assert_eq!(out, "on dev\n");

    // A whole clone into the default directory (the repository's name).
    let (st, v) = s
        .post(&alice, &git_path("w", "clone"), json!({"url": repo.url()}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["branch"], "main");
    assert!(v["path"].as_str().unwrap().ends_with("/proj"), "{v}");
    let q = "?path=proj";
    let (st, status) = s
        .get(&alice, &format!("{}{q}", git_path("w", "status")))
        .await;
    assert_eq!(st, StatusCode::OK, "{status}");
    assert_eq!(status["branch"], "main");
    assert_eq!(status["upstream"], "origin/main");
    assert_eq!(status["clean"], true);
    assert_eq!(status["commit"], repo.commit("main").unwrap().as_str());
    let (_, log) = s.get(&alice, &format!("{}{q}", git_path("w", "log"))).await;
    let subjects: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["second", "initial commit"]);

    // Edits made in the workspace show in status and diff.
    let (code, _, err) = exec(
        &s,
        &alice,
        "w",
        &[
            "sh",
            "-c",
            "cd proj && echo more >> README.md && echo new > new.txt && rm src/main.txt",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let (_, status) = s
        .get(&alice, &format!("{}{q}", git_path("w", "status")))
        .await;
    assert_eq!(status["clean"], false);
    let files = status["files"].as_array().unwrap();
    let find = |p: &str| {
        files
            .iter()
            .find(|f| f["path"] == p)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(find("README.md")["worktree"], "modified", "{status}");
    assert_eq!(find("README.md")["index"], "unmodified", "{status}");
    assert_eq!(find("new.txt")["worktree"], "untracked", "{status}");
    assert_eq!(find("src/main.txt")["worktree"], "deleted", "{status}");
    let (st, diff) = get_text(&s, &alice, &format!("{}{q}", git_path("w", "diff"))).await;
    assert_eq!(st, StatusCode::OK, "{diff}");
    assert!(diff.contains("+more") && diff.contains("-two"), "{diff}");
    let (_, staged) = get_text(
        &s,
        &alice,
        &format!("{}{q}&staged=true", git_path("w", "diff")),
    )
    .await;
    assert_eq!(staged, "");

    // Stage one file: it moves to the index.
    let (st, status) = s
        .post(
            &alice,
            &git_path("w", "add"),
            json!({"path": "proj", "files": ["README.md"]}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{status}");
    let files = status["files"].as_array().unwrap();
    let readme = files.iter().find(|f| f["path"] == "README.md").unwrap();
    assert_eq!(readme["index"], "modified", "{status}");
    let (_, staged) = get_text(
        &s,
        &alice,
        &format!("{}{q}&staged=true", git_path("w", "diff")),
    )
    .await;
    assert!(
        staged.contains("+more") && !staged.contains("new.txt"),
        "{staged}"
    );

    // A commit with the author given.
    let (st, c1) = s
        .post(
            &alice,
            &git_path("w", "commit"),
            json!({"path": "proj", "message": "Say more\n\nA body.", "author_name": "Agent Smith", "author_email": "agent@example.com"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{c1}");
    assert_eq!(c1["branch"], "main");
    assert_eq!(c1["author"], "Agent Smith <agent@example.com>");
    // Everything else, as the workspace's owner by default.
    let (st, _) = s
        .post(&alice, &git_path("w", "add"), json!({"path": "proj"}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, c2) = s
        .post(
            &alice,
            &git_path("w", "commit"),
            json!({"path": "proj", "message": "The rest"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{c2}");
    assert_eq!(c2["author"], "alice <alice@users.warren.invalid>");
    let (_, log) = s
        .get(&alice, &format!("{}{q}&limit=2", git_path("w", "log")))
        .await;
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["commit"], c2["commit"]);
    assert_eq!(log[0]["author_email"], "alice@users.warren.invalid");
    assert_eq!(log[1]["author_name"], "Agent Smith");
    assert_eq!(log[1]["subject"], "Say more");
    // Nothing left to commit: a conflict with the repository's state, said plainly.
    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "commit"),
            json!({"path": "proj", "message": "empty"}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("nothing to commit"),
        "{v}"
    );
    assert!(v["hint"].is_string(), "{v}");
    let (_, status) = s
        .get(&alice, &format!("{}{q}", git_path("w", "status")))
        .await;
    assert_eq!(
        (status["ahead"].as_u64(), status["clean"].as_bool()),
        (Some(2), Some(true)),
        "{status}"
    );

    // Branches: create, refuse a duplicate, switch, create-and-switch.
    let (st, b) = s
        .post(
            &alice,
            &git_path("w", "branch"),
            json!({"path": "proj", "name": "feature"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{b}");
    assert_eq!(b["commit"], c2["commit"]);
    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "branch"),
            json!({"path": "proj", "name": "feature"}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("already exists"),
        "{v}"
    );
    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "checkout"),
            json!({"path": "proj", "branch": "feature"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["branch"], "feature");
    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "checkout"),
            json!({"path": "proj", "branch": "topic", "create": true}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["branch"], "topic");
    let (st, bs) = s
        .get(&alice, &format!("{}{q}", git_path("w", "branches")))
        .await;
    assert_eq!(st, StatusCode::OK, "{bs}");
    assert_eq!(bs["current"], "topic");
    let names: Vec<&str> = bs["branches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    for n in ["main", "feature", "topic", "origin/main", "origin/dev"] {
        assert!(names.contains(&n), "{n} in {bs}");
    }

    // Push the new branch, with its upstream set.
    let (st, p) = s
        .post(
            &alice,
            &git_path("w", "push"),
            json!({"path": "proj", "set_upstream": true}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{p}");
    assert_eq!(p["branch"], "topic");
    assert_eq!(p["remote"], "origin");
    assert_eq!(p["url"], repo.url().as_str());
    assert_eq!(p["commit"], c2["commit"]);
    assert_eq!(repo.commit("topic").as_deref(), p["commit"].as_str());
    assert_eq!(repo.file("topic", "README.md").unwrap(), "hello\nmore\n");
    assert_eq!(repo.file("topic", "new.txt").unwrap(), "new\n");
    assert!(repo.file("topic", "src/main.txt").is_none());
    assert_eq!(
        repo.author("topic").unwrap(),
        "alice <alice@users.warren.invalid>"
    );
    assert_eq!(repo.pushes().len(), 1);
    let (_, status) = s
        .get(&alice, &format!("{}{q}", git_path("w", "status")))
        .await;
    assert_eq!(status["upstream"], "origin/topic");
    assert_eq!(status["ahead"], 0);

    // Someone else pushes to topic: pull brings it in.
    let theirs = repo.commit_files(
        "topic",
        "their change",
        &[("theirs.txt", "from elsewhere\n")],
    );
    let (st, v) = s
        .post(&alice, &git_path("w", "pull"), json!({"path": "proj"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["updated"], true);
    assert_eq!(v["commit"], theirs.as_str());
    let (_, out, _) = exec(&s, &alice, "w", &["cat", "proj/theirs.txt"]).await;
    assert_eq!(out, "from elsewhere\n");
    let (st, v) = s
        .post(&alice, &git_path("w", "pull"), json!({"path": "proj"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["updated"], false);
    // Pull from a named remote branch (a merge commit, made as the owner).
    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "pull"),
            json!({"path": "proj", "remote": "origin", "branch": "dev"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["updated"], true);
    let (_, out, _) = exec(&s, &alice, "w", &["cat", "proj/dev.txt"]).await;
    assert_eq!(out, "on dev\n");

    // Both sides change the same line: the push is rejected, the pull conflicts (409 each).
    repo.commit_files("topic", "theirs again", &[("README.md", "theirs\n")]);
    let (code, _, err) = exec(
        &s,
        &alice,
        "w",
        &["sh", "-c", "cd proj && echo mine > README.md && git -c user.name=a -c user.email=a@b commit -qam mine"],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let before = repo.commit("topic");
    let (st, v) = s
        .post(&alice, &git_path("w", "push"), json!({"path": "proj"}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert!(v["hint"].as_str().unwrap().contains("pull"), "{v}");
    assert_eq!(repo.commit("topic"), before);
    let (st, v) = s
        .post(&alice, &git_path("w", "pull"), json!({"path": "proj"}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    let (_, status) = s
        .get(&alice, &format!("{}{q}", git_path("w", "status")))
        .await;
    let readme = status["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "README.md")
        .cloned()
        .unwrap();
    assert_eq!(readme["index"], "unmerged", "{status}");

    // The operations are in the audit log, the push with its URL.
    let (_, me) = s.get(&alice, "/api/v1/workspaces/w").await;
    let id = me["id"].as_str().unwrap().to_string();
    let (st, page) = s
        .get(
            &s.admin,
            &format!("/api/v1/audit?target={id}&action=workspace.git.*"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{page}");
    let actions: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for a in [
        "workspace.git.clone",
        "workspace.git.commit",
        "workspace.git.push",
        "workspace.git.pull",
    ] {
        assert!(actions.contains(&a), "{a} in {actions:?}");
    }
    let push = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["action"] == "workspace.git.push")
        .unwrap();
    assert!(push.to_string().contains(&repo.url()), "{push}");
    // And in the workspace's session audit: one push, the URL, branch and commit.
    let (st, page) = s
        .get(
            &s.admin,
            &format!("/api/v1/audit?target={id}&action=session.git_push"),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{page}");
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{page}");
    let details: Value =
        serde_json::from_str(records[0]["details_json"].as_str().unwrap_or("null"))
            .unwrap_or_else(|_| records[0]["details"].clone());
    assert_eq!(records[0]["actor_username"], "alice", "{page}");
    assert!(details.to_string().contains(&repo.url()), "{page}");
    assert!(details.to_string().contains("topic"), "{page}");
    assert!(
        details.to_string().contains(c2["commit"].as_str().unwrap()),
        "{page}"
    );
    s.stop().await;
}

/// Asserts a 4xx error answer with `code`, whose message contains `needle`, with a hint, and
/// without `secret` anywhere in it.
fn assert_error(st: StatusCode, v: &Value, want: StatusCode, code: &str, needle: &str) {
    assert_eq!(st, want, "{v}");
    assert_eq!(v["code"], code, "{v}");
    let msg = v["message"].as_str().unwrap_or("");
    assert!(msg.contains(needle), "`{needle}` in {v}");
    assert!(!v.to_string().contains("s3cret"), "a credential in {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_errors_are_clear_and_credentials_stay_out_of_repositories() {
    let (s, alice) = setup().await;
    s.import_busybox();
    s.push_template(
        "plain",
        json!({"image": "busybox", "overrideCommand": true, "remoteUser": "dev"}),
    )
    .await;
    let bob = s.user_token("bob", "member", None).await;
    s.create_workspace(&alice, "w", "git").await;
    s.create_workspace(&alice, "nogit", "plain").await;
    let srv = gitserve::server();
    let public = srv.create_repo("pub", Access::public(), &[("a.txt", "a\n")]);
    let private = srv.create_repo(
        "priv",
        Access::private("bot", "s3cret"),
        &[("a.txt", "a\n")],
    );
    let guarded = srv.create_repo(
        "guarded",
        Access::push_with("bot", "s3cret"),
        &[("a.txt", "a\n")],
    );
    let bad = StatusCode::BAD_REQUEST;
    let clone = |body: Value| {
        let s = &s;
        let alice = &alice;
        async move { s.post(alice, &git_path("w", "clone"), body).await }
    };

    // An image without git says so, whatever the operation.
    let (st, v) = s
        .post(
            &alice,
            &git_path("nogit", "clone"),
            json!({"url": public.url()}),
        )
        .await;
    assert_error(
        st,
        &v,
        bad,
        "invalid_request",
        "git is not installed in the workspace image",
    );
    assert!(v["hint"].is_string(), "{v}");
    let (st, v) = s.get(&alice, &git_path("nogit", "status")).await;
    assert_error(st, &v, bad, "invalid_request", "git is not installed");

    // Bad URLs and branches: git's own words.
    let (st, v) = clone(json!({"url": format!("{}/nope.git", srv.base_url())})).await;
    assert_error(st, &v, bad, "invalid_request", "git clone failed");
    assert!(v["message"].as_str().unwrap().contains("not found"), "{v}");
    let (st, v) = clone(json!({"url": "no such place"})).await;
    assert_error(st, &v, bad, "invalid_request", "git clone failed");
    let (st, v) = clone(json!({"url": public.url(), "branch": "nope", "path": "x1"})).await;
    assert_error(st, &v, bad, "invalid_request", "nope");
    let (st, v) = clone(json!({"url": "--upload-pack=touch /tmp/pwned", "path": "x2"})).await;
    assert_error(st, &v, bad, "invalid_request", "starts with `-`");
    let (st, v) = clone(json!({"url": public.url(), "depth": 0})).await;
    assert_error(st, &v, bad, "invalid_request", "depth");
    let (st, v) = clone(json!({"url": public.url(), "timeout": "2h"})).await;
    assert_error(st, &v, bad, "invalid_request", "timeout");
    // A URL with credentials in it would land in .git/config: refused, and not echoed.
    let (st, v) = clone(json!({"url": private.url_with("bot", "s3cret")})).await;
    assert_error(st, &v, bad, "invalid_request", "credentials");
    // A repository that wants credentials the workspace does not have: git fails at once
    // (no prompt), with a hint about secrets.
    let (st, v) = clone(json!({"url": private.url(), "path": "p"})).await;
    assert_error(st, &v, bad, "invalid_request", "git clone failed");
    assert!(v["hint"].as_str().unwrap().contains("secret"), "{v}");
    assert!(
        private.requests().iter().all(|r| r.status == 401),
        "{:?}",
        private.requests()
    );
    // Into a directory that is not empty: a conflict.
    let (st, v) = clone(json!({"url": public.url(), "path": "dup"})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, v) = clone(json!({"url": public.url(), "path": "dup"})).await;
    assert_error(st, &v, StatusCode::CONFLICT, "conflict", "already exists");

    // Paths are directories in the workspace; outside a repository it is git's error.
    for p in ["/etc", "/", "../../../../..", "%2e%2e/%2e%2e"] {
        let (st, v) = s
            .get(&alice, &format!("{}?path={p}", git_path("w", "status")))
            .await;
        assert_error(st, &v, bad, "invalid_request", "not a git repository");
    }
    let (st, v) = s
        .get(&alice, &format!("{}?path=missing", git_path("w", "status")))
        .await;
    assert_error(st, &v, bad, "invalid_request", "git status failed");
    let (st, v) = s
        .get(&alice, &format!("{}?path=", git_path("w", "status")))
        .await;
    assert_error(st, &v, bad, "invalid_request", "path");
    let (st, v) = s
        .get(&alice, &format!("{}?path=a%00b", git_path("w", "status")))
        .await;
    assert_error(st, &v, bad, "invalid_request", "NUL");
    let (st, v) = s
        .get(
            &alice,
            &format!("{}?path=dup&limit=0", git_path("w", "log")),
        )
        .await;
    assert_error(st, &v, bad, "invalid_request", "limit");
    let (st, v) = s
        .get(
            &alice,
            &format!("{}?path=dup&staged=maybe", git_path("w", "diff")),
        )
        .await;
    assert_error(st, &v, bad, "invalid_request", "staged");
    let (st, v) = s
        .get(
            &alice,
            &format!("{}?path=dup&color=always", git_path("w", "diff")),
        )
        .await;
    assert_error(st, &v, bad, "invalid_request", "color");
    let (st, v) = s
        .get(
            &alice,
            &format!("{}?path=dup&base=--output=/tmp/x", git_path("w", "diff")),
        )
        .await;
    assert_error(st, &v, bad, "invalid_request", "starts with `-`");
    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "checkout"),
            json!({"path": "dup", "branch": "nope"}),
        )
        .await;
    assert_error(st, &v, bad, "invalid_request", "git checkout failed");
    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "branch"),
            json!({"path": "dup", "name": "-D"}),
        )
        .await;
    assert_error(st, &v, bad, "invalid_request", "starts with `-`");
    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "commit"),
            json!({"path": "dup", "message": "  "}),
        )
        .await;
    assert_error(st, &v, bad, "invalid_request", "message");
    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "push"),
            json!({"path": "dup", "branch": "nope"}),
        )
        .await;
    assert_error(st, &v, bad, "invalid_request", "no local branch");

    // Another user's workspace does not exist for bob.
    for (m, op) in [("GET", "status"), ("POST", "clone")] {
        let (st, v) = s
            .call(
                Some(&bob),
                m.parse().unwrap(),
                &git_path("w.alice", op),
                (m == "POST").then(|| json!({"url": public.url()})),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{op}: {v}");
    }

    // A push the server refuses without credentials fails at once and changes nothing.
    let (st, v) = clone(json!({"url": guarded.url(), "path": "g"})).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (code, _, err) = exec(
        &s,
        &alice,
        "w",
        &[
            "sh",
            "-c",
            "cd g && echo b > a.txt && git -c user.name=a -c user.email=a@b commit -qam b",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let before = guarded.commit("main");
    let (st, v) = s
        .post(&alice, &git_path("w", "push"), json!({"path": "g"}))
        .await;
    assert_error(st, &v, bad, "invalid_request", "git push failed");
    assert!(v["hint"].as_str().unwrap().contains("secret"), "{v}");
    assert_eq!(guarded.commit("main"), before);
    assert!(guarded.pushes().is_empty());
    assert!(
        guarded.requests().iter().any(|r| r.push && r.status == 401),
        "{:?}",
        guarded.requests()
    );
    // Even a push to a URL with credentials is refused before git runs.
    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "push"),
            json!({"path": "g", "remote": guarded.url_with("bot", "s3cret")}),
        )
        .await;
    assert_error(st, &v, bad, "invalid_request", "credentials");
    assert!(guarded.pushes().is_empty());

    // No repository's configuration names a credential or a credential helper.
    for repo in ["dup", "g"] {
        let (code, config, err) =
            exec(&s, &alice, "w", &["cat", &format!("{repo}/.git/config")]).await;
        assert_eq!(code, 0, "{err}");
        assert!(
            !config.contains('@') && !config.contains("s3cret"),
            "{config}"
        );
        assert!(!config.contains("credential"), "{config}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_operation_past_its_time_limit_is_stopped_and_leaves_nothing() {
    let (s, alice) = setup().await;
    s.create_workspace(&alice, "w", "git").await;
    let slow = gitserve::server().create_repo(
        "slow",
        Access::public().slow(std::time::Duration::from_secs(30)),
        &[("a.txt", "a\n")],
    );
    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "clone"),
            json!({"url": slow.url(), "path": "slow", "timeout": "2s"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("did not finish in time"),
        "{v}"
    );
    assert!(v["hint"].as_str().unwrap().contains("timeout"), "{v}");
    // git was told to stop: no half-made clone, and no git process left behind.
    let (code, out, err) = exec(&s, &alice, "w", &["ls", "-a"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(!out.lines().any(|l| l == "slow"), "{out}");
    let mut left = String::new();
    for _ in 0..50 {
        let (_, ps, _) = exec(&s, &alice, "w", &["ps", "-o", "pid,args"]).await;
        left = ps
            .lines()
            .filter(|l| l.contains("git"))
            .collect::<Vec<_>>()
            .join("\n");
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(left.is_empty(), "still running: {left}");
    s.stop().await;
}

/// With a git secret for the server's host requested by the workspace and a workspace credential
/// minted, clone and push reach a repository that wants credentials, through Warren's credential
/// helper: the server sees the secret's user, the repository's configuration holds nothing, and
/// revoking the credential stops the next push at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_authenticate_through_warrens_credential_helper() {
    let (s, alice) = setup().await;
    let repo = gitserve::server().create_repo(
        "private",
        Access::private("bot", "s3cret"),
        &[("README.md", "hello\n")],
    );
    let (st, v) = s
        .call(
            Some(&alice),
            reqwest::Method::PUT,
            "/api/v1/secrets/user/gitbot",
            Some(json!({"value": "s3cret", "git_host": repo.host(), "username": "bot"})),
        )
        .await;
    assert!(st.is_success(), "{v}");
    let (st, v) = s
        .post(
            &alice,
            "/api/v1/workspaces",
            json!({"name": "w", "template": "git", "secrets": ["gitbot"]}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let job = s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (st, cred) = s
        .post(&alice, "/api/v1/workspaces/w/credential", json!({}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{cred}");

    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "clone"),
            json!({"url": repo.url(), "path": "p"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (code, _, err) = exec(&s, &alice, "w", &["sh", "-c", "echo more >> p/README.md"]).await;
    assert_eq!(code, 0, "{err}");
    let (st, v) = s
        .post(&alice, &git_path("w", "add"), json!({"path": "p"}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, c) = s
        .post(
            &alice,
            &git_path("w", "commit"),
            json!({"path": "p", "message": "more"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{c}");
    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "push"),
            json!({"path": "p", "branch": "main"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(repo.commit("main").as_deref(), c["commit"].as_str());
    assert_eq!(repo.file("main", "README.md").unwrap(), "hello\nmore\n");
    let pushes = repo.pushes();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].user.as_deref(), Some("bot"));
    assert!(!v.to_string().contains("s3cret"), "{v}");

    // Nothing of the credential in the repository, nor anywhere in its .git.
    let (code, out, err) = exec(
        &s,
        &alice,
        "w",
        &[
            "sh",
            "-c",
            "cat p/.git/config; grep -rl s3cret p/.git || true",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("s3cret") && !out.contains("bot@") && !out.contains("credential"),
        "{out}"
    );

    // Revoked: the next push is refused by the server (the helper answers nothing), at once.
    let (st, v) = s
        .call(
            Some(&alice),
            reqwest::Method::DELETE,
            &format!("/api/v1/tokens/{}", cred["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert!(st.is_success(), "{v}");
    repo.commit_files("other", "x", &[("x", "x\n")]);
    let (code, _, err) = exec(&s, &alice, "w", &["sh", "-c", "cd p && echo again >> README.md && git -c user.name=a -c user.email=a@b commit -qam again"]).await;
    assert_eq!(code, 0, "{err}");
    let (st, v) = s
        .post(
            &alice,
            &git_path("w", "push"),
            json!({"path": "p", "branch": "main"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(repo.pushes().len(), 1);
    s.stop().await;
}
