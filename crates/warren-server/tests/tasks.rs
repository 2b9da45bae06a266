//! Tasks against a real server: real workspaces (busybox + the host's git), a real git
//! smart-HTTP server (`git http-backend` in a network namespace of its own, basic auth), real
//! clients. Nothing is mocked.

mod common;
#[path = "common/gitimg.rs"]
mod gitimg;
#[path = "../../warren/src/bench/gitserve.rs"]
mod gitserve;

use std::process::Command;
use std::time::Duration;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use warren_server::config::ConfigLayer;

struct Env {
    s: TestServer,
    alice: String,
    git: gitserve::GitServer,
    _gitdir: tempfile::TempDir,
}

const TEST_SH: &str = "#!/bin/sh\n# the repository's test\ngrep -q '^fixed$' greeting.txt || { echo 'test failed: greeting is not fixed'; exit 1; }\necho 'test passed'\n";

async fn setup(layer: ConfigLayer) -> Env {
    let s = TestServer::start_with(layer).await;
    gitimg::import_gitbox(&s);
    s.push_template(
        "agent",
        json!({"image": "gitbox", "overrideCommand": true, "remoteUser": "dev"}),
    )
    .await;
    let alice = s.user_token("alice", "member", None).await;
    let gitdir = tempfile::tempdir().unwrap();
    let git = gitserve::GitServer::start(gitdir.path(), "bot", "s3cret-pass").unwrap();
    git.create_repo(
        "proj",
        &[
            ("greeting.txt", "hello\n", false),
            ("test.sh", TEST_SH, true),
        ],
    )
    .unwrap();
    // The git password is a secret of alice's, never in a URL.
    for (name, pw) in [("gitpw", "s3cret-pass"), ("gitwrong", "wrong")] {
        let (st, v) = s
            .call(
                Some(&alice),
                Method::PUT,
                &format!("/api/v1/secrets/user/{name}"),
                Some(json!({"value": pw, "git_host": git.host(), "username": "bot"})),
            )
            .await;
        assert!(st.is_success(), "{st} {v}");
    }
    Env {
        s,
        alice,
        git,
        _gitdir: gitdir,
    }
}

async fn create(e: &Env, body: Value) -> Value {
    let (st, v) = e.s.post(&e.alice, "/api/v1/tasks", body).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v
}

/// Waits until the task has finished; returns it.
async fn wait_done(e: &Env, id: &str) -> Value {
    for _ in 0..1800 {
        let (st, t) = e.s.get(&e.alice, &format!("/api/v1/tasks/{id}")).await;
        assert_eq!(st, StatusCode::OK, "{t}");
        if matches!(
            t["state"].as_str(),
            Some("succeeded" | "failed" | "timed-out" | "canceled")
        ) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("task {id} did not finish");
}

/// Waits until the task is in `state`.
async fn wait_state(e: &Env, id: &str, state: &str) -> Value {
    for _ in 0..1800 {
        let (_, t) = e.s.get(&e.alice, &format!("/api/v1/tasks/{id}")).await;
        if t["state"] == state {
            return t;
        }
        assert!(
            !matches!(
                t["state"].as_str(),
                Some("succeeded" | "failed" | "timed-out" | "canceled")
            ),
            "finished before reaching {state}: {t}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("task {id} never reached {state}");
}

async fn logs(e: &Env, id: &str) -> String {
    e.s.http
        .get(format!("{}/api/v1/tasks/{id}/logs", e.s.url))
        .bearer_auth(&e.alice)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Nothing of workspace `ws` is left on the host: no record (or a deleted one), no directory, no
/// supervisor, no veth, no nftables chain.
async fn assert_gone(e: &Env, ws: &str) {
    let (st, v) =
        e.s.get(&e.s.admin, &format!("/api/v1/workspaces/{ws}"))
            .await;
    assert!(
        st == StatusCode::NOT_FOUND || v["state"] == "deleted",
        "workspace still there: {st} {v}"
    );
    assert!(
        !e.s.state().join("workspaces").join(ws).exists(),
        "its directory remains"
    );
    assert!(e.s.supervisors().is_empty(), "a supervisor remains");
    let veth = warren_runtime::network::veth_name(ws);
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains(&veth),
        "veth {veth} remains"
    );
    let nft = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&nft.stdout).contains(&format!("ws_{ws}")),
        "its nftables chain remains"
    );
}

/// THE end-to-end test of issue 8: an agent command clones a private repository over smart HTTP,
/// edits a file, runs the repository's test, commits and pushes a branch; the branch is on the
/// remote with the change, the session audit has the process and the push, and nothing of the
/// workspace remains.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_task_edits_tests_commits_and_pushes_a_branch_then_nothing_remains() {
    let e = setup(ConfigLayer::default()).await;
    let script = "set -e\n\
        test \"$WARREN_BASE_BRANCH\" = main\n\
        echo fixed >> greeting.txt\n\
        sed -i '1d' greeting.txt\n\
        ./test.sh\n\
        git add -A\n\
        git commit -q -m 'Fix the greeting'\n\
        test -z \"$(git config --local --get-all credential.helper)\"\n\
        git push -q origin \"HEAD:refs/heads/$WARREN_TASK_BRANCH\"\n\
        echo \"token $(cat /run/secrets/warren-token)\"\n\
        echo \"pushed $WARREN_TASK_BRANCH for $WARREN_TASK_ID\"";
    let v = create(
        &e,
        json!({
            "template": "agent", "repo": e.git.url("proj"), "secrets": ["gitpw"], "base_branch": "main",
            "shell": script, "time_limit": "5m", "labels": {"issue": "8"},
        }),
    )
    .await;
    let id = v["task"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["task"]["state"], "queued", "{v}");
    let branch = v["task"]["branch"].as_str().unwrap().to_string();
    assert!(branch.starts_with("warren/task-"), "{branch}");
    assert!(
        v.get("credential").is_none(),
        "a command task gets no credential in the answer"
    );
    let t = wait_done(&e, &id).await;
    let log = logs(&e, &id).await;
    assert_eq!(t["state"], "succeeded", "{t}\n{log}");
    assert_eq!(t["exit_code"], 0);
    assert!(log.contains("test passed"), "{log}");
    assert!(log.contains(&format!("pushed {branch} for {id}")), "{log}");
    assert_eq!(t["pushed_branch"], branch.as_str(), "{t}");
    let diff = t["diff"].as_str().unwrap();
    assert!(diff.contains("-hello") && diff.contains("+fixed"), "{diff}");
    // On the remote: the branch with the change; main untouched.
    let content = e
        .git
        .git("proj", &["show", &format!("{branch}:greeting.txt")])
        .unwrap();
    assert_eq!(content, "fixed\n");
    let main = e.git.git("proj", &["show", "main:greeting.txt"]).unwrap();
    assert_eq!(main, "hello\n");
    let msg = e
        .git
        .git("proj", &["log", "-1", "--format=%s %an", &branch])
        .unwrap();
    assert_eq!(msg.trim(), "Fix the greeting alice");
    // The session audit of its workspace: the process (argv, exit code) and the push.
    let ws = t["workspace_id"].as_str().unwrap().to_string();
    let (st, audit) =
        e.s.get(&e.alice, &format!("/api/v1/tasks/{id}/audit"))
            .await;
    assert_eq!(st, StatusCode::OK, "{audit}");
    let recs = audit.as_array().unwrap();
    let find = |action: &str| {
        recs.iter()
            .find(|r| r["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {audit}"))
            .clone()
    };
    let started = find("session.process_start");
    assert_eq!(started["target_id"], ws.as_str());
    let d: Value = serde_json::from_str(started["details_json"].as_str().unwrap()).unwrap();
    assert_eq!(d["argv"][2], script, "{d}");
    assert_eq!(d["task_id"], id.as_str());
    assert_eq!(d["via"], "task");
    assert_eq!(started["actor_username"], "alice");
    let ended = find("session.process_end");
    let d: Value = serde_json::from_str(ended["details_json"].as_str().unwrap()).unwrap();
    assert_eq!(d["exit_code"], 0, "{d}");
    let push = find("session.git_push");
    let d: Value = serde_json::from_str(push["details_json"].as_str().unwrap()).unwrap();
    assert_eq!(d["branch"], branch.as_str());
    assert_eq!(d["task_id"], id.as_str());
    let head = e.git.git("proj", &["rev-parse", &branch]).unwrap();
    assert_eq!(d["commit"], head.trim());
    assert_eq!(
        d["remote"],
        e.git.url("proj"),
        "the password is not in the audit: {d}"
    );
    assert!(!audit.to_string().contains("s3cret-pass"));
    // Exported as JSON lines, and the chain verifies.
    let jsonl =
        e.s.http
            .get(format!("{}/api/v1/tasks/{id}/audit?format=jsonl", e.s.url))
            .bearer_auth(&e.alice)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    assert_eq!(jsonl.lines().count(), recs.len());
    let (st, ver) = e.s.get(&e.s.admin, "/api/v1/audit/verify").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(ver["ok"], true, "{ver}");
    // The same through the general audit query.
    let (_, q) =
        e.s.get(
            &e.s.admin,
            &format!("/api/v1/audit?target={ws}&action=session.*"),
        )
        .await;
    assert!(q.to_string().contains("session.git_push"), "{q}");
    // Nothing of the workspace remains.
    assert_gone(&e, &ws).await;
    // Its credential died with it: the workspace token is refused, its agent socket (where git's
    // credential helper asked for the password) is gone, while alice's secret stays hers.
    let token = log
        .lines()
        .find_map(|l| l.strip_prefix("token "))
        .unwrap_or_else(|| panic!("no token in {log}"))
        .trim()
        .to_string();
    assert!(token.starts_with("wrn_"), "{token}");
    let (st, _) = e.s.get(&token, &format!("/api/v1/workspaces/{ws}")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = e.s.get(&token, "/api/v1/workspaces").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(!e
        .s
        .state()
        .join("workspaces")
        .join(&ws)
        .join("agent/agent.sock")
        .exists());
    let (_, secrets) = e.s.get(&e.alice, "/api/v1/secrets").await;
    assert!(secrets.to_string().contains("gitpw"), "{secrets}");
    assert!(!log.contains("s3cret-pass"), "{log}");
    assert!(!t.to_string().contains("s3cret-pass"), "{t}");
    // Labels filter the list.
    let (_, l) = e.s.get(&e.alice, "/api/v1/tasks?label=issue=8").await;
    assert_eq!(l["tasks"].as_array().unwrap().len(), 1, "{l}");
    let (_, l) = e.s.get(&e.alice, "/api/v1/tasks?label=issue=9").await;
    assert_eq!(l["tasks"].as_array().unwrap().len(), 0, "{l}");
    // Another user does not see it.
    let bob = e.s.user_token("bob", "member", None).await;
    let (st, _) = e.s.get(&bob, &format!("/api/v1/tasks/{id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) =
        e.s.post(&bob, &format!("/api/v1/tasks/{id}/cancel"), json!({}))
            .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// A failing command: failed with its exit code; a wrong password: the clone fails and says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_command_fails_with_its_exit_code_and_a_refused_clone_says_why() {
    let e = setup(ConfigLayer::default()).await;
    let v = create(
        &e,
        json!({"template": "agent", "repo": e.git.url("proj"), "secrets": ["gitpw"], "command": ["sh", "-c", "./test.sh; exit 3"]}),
    )
    .await;
    let id = v["task"]["id"].as_str().unwrap();
    let t = wait_done(&e, id).await;
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["exit_code"], 3);
    assert_eq!(t["reason"], "exit code 3");
    assert!(t["pushed_branch"].is_null());
    assert!(logs(&e, id)
        .await
        .contains("test failed: greeting is not fixed"));
    assert_gone(&e, t["workspace_id"].as_str().unwrap()).await;

    let v = create(
        &e,
        json!({"template": "agent", "repo": e.git.url("proj"), "secrets": ["gitwrong"], "shell": "true"}),
    )
    .await;
    let id = v["task"]["id"].as_str().unwrap();
    let t = wait_done(&e, id).await;
    assert_eq!(t["state"], "failed", "{t}");
    let reason = t["reason"].as_str().unwrap();
    assert!(reason.starts_with("git clone failed:"), "{reason}");
    assert!(!reason.contains("wrong"), "{reason}");
    assert_gone(&e, t["workspace_id"].as_str().unwrap()).await;
}

/// Five tasks with a per-user limit of two: never more than two active at once, checked on the
/// recorded times (admission and end), not on timing; all five finish, in FIFO order of admission.
#[tokio::test(flavor = "multi_thread")]
async fn tasks_over_the_limit_wait_queued_in_fifo_order() {
    let e = setup(ConfigLayer {
        max_tasks_per_user: Some(2),
        ..Default::default()
    })
    .await;
    let mut ids = vec![];
    for i in 0..5 {
        let v = create(
            &e,
            json!({"template": "agent", "repo": e.git.url("proj"), "secrets": ["gitpw"], "shell": format!("echo task {i}; sleep 1")}),
        )
        .await;
        ids.push(v["task"]["id"].as_str().unwrap().to_string());
    }
    let mut done = vec![];
    for id in &ids {
        let t = wait_done(&e, id).await;
        assert_eq!(t["state"], "succeeded", "{t}");
        done.push(t);
    }
    let at = |t: &Value, k: &str| t[k].as_str().unwrap().to_string();
    for t in &done {
        let start = at(t, "started_at");
        let overlapping = done
            .iter()
            .filter(|o| at(o, "started_at") <= start && at(o, "finished_at") > start)
            .count();
        assert!(
            overlapping <= 2,
            "{overlapping} tasks active at {start}: {done:?}"
        );
    }
    let mut starts: Vec<String> = done.iter().map(|t| at(t, "started_at")).collect();
    let sorted = {
        let mut s = starts.clone();
        s.sort();
        s
    };
    assert_eq!(starts, sorted, "admitted in creation order");
    starts.clear();
}

/// Time limit and idle limit: the command is killed, the task timed out with the reason, and the
/// workspace is gone.
#[tokio::test(flavor = "multi_thread")]
async fn time_and_idle_limits_kill_the_command_and_remove_the_workspace() {
    let e = setup(ConfigLayer::default()).await;
    let a = create(
        &e,
        json!({"template": "agent", "repo": e.git.url("proj"), "secrets": ["gitpw"], "command": ["sleep", "1000"], "time_limit": "2s"}),
    )
    .await;
    // Prints every 300ms: never idle, until the time limit.
    let b = create(
        &e,
        json!({"template": "agent", "repo": e.git.url("proj"), "secrets": ["gitpw"],
               "shell": "while :; do echo tick; sleep 0.3; done", "time_limit": "4s", "idle_limit": "2s"}),
    )
    .await;
    let c = create(
        &e,
        json!({"template": "agent", "repo": e.git.url("proj"), "secrets": ["gitpw"], "shell": "echo start; sleep 1000", "idle_limit": "2s"}),
    )
    .await;
    let id = |v: &Value| v["task"]["id"].as_str().unwrap().to_string();
    let ta = wait_done(&e, &id(&a)).await;
    assert_eq!(ta["state"], "timed-out", "{ta}");
    assert_eq!(ta["reason"], "time limit");
    let tb = wait_done(&e, &id(&b)).await;
    assert_eq!(tb["state"], "timed-out", "{tb}");
    assert_eq!(
        tb["reason"], "time limit",
        "output kept it from idling: {tb}"
    );
    let tc = wait_done(&e, &id(&c)).await;
    assert_eq!(tc["state"], "timed-out", "{tc}");
    assert_eq!(tc["reason"], "idle");
    assert!(logs(&e, &id(&c)).await.contains("idle limit reached"));
    for t in [&ta, &tb, &tc] {
        assert_gone(&e, t["workspace_id"].as_str().unwrap()).await;
    }
}

/// Cancel: a queued task at once (it never gets a workspace), a running one's process is killed
/// and its workspace removed, a finished one is a 409.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_works_in_each_state() {
    let e = setup(ConfigLayer {
        max_tasks: Some(1),
        ..Default::default()
    })
    .await;
    let running = create(
        &e,
        json!({"template": "agent", "repo": e.git.url("proj"), "secrets": ["gitpw"], "shell": "echo started; sleep 1000"}),
    )
    .await;
    let queued = create(
        &e,
        json!({"template": "agent", "repo": e.git.url("proj"), "secrets": ["gitpw"], "shell": "true"}),
    )
    .await;
    let rid = running["task"]["id"].as_str().unwrap();
    let qid = queued["task"]["id"].as_str().unwrap();
    wait_state(&e, rid, "running").await;
    let (_, q) = e.s.get(&e.alice, &format!("/api/v1/tasks/{qid}")).await;
    assert_eq!(q["state"], "queued", "the limit of 1 holds it: {q}");
    let (st, v) =
        e.s.post(&e.alice, &format!("/api/v1/tasks/{qid}/cancel"), json!({}))
            .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["state"], "canceled", "{v}");
    assert!(v["workspace_id"].is_null());
    let (st, v) =
        e.s.post(&e.alice, &format!("/api/v1/tasks/{rid}/cancel"), json!({}))
            .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let t = wait_done(&e, rid).await;
    assert_eq!(t["state"], "canceled", "{t}");
    assert_eq!(t["reason"], "canceled");
    assert_gone(&e, t["workspace_id"].as_str().unwrap()).await;
    let (st, v) =
        e.s.post(&e.alice, &format!("/api/v1/tasks/{rid}/cancel"), json!({}))
            .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "invalid_state");
}

/// keep: the workspace stays (and runs); artifacts are collected, listed and downloadable.
#[tokio::test(flavor = "multi_thread")]
async fn keep_leaves_the_workspace_and_artifacts_are_collected() {
    let e = setup(ConfigLayer::default()).await;
    let v = create(
        &e,
        json!({"template": "agent", "repo": e.git.url("proj"), "secrets": ["gitpw"], "keep": true,
               "shell": "mkdir -p out && echo report > out/a.txt && echo other > out/b.log && ln -s /etc/passwd out/link.txt",
               "artifacts": ["out/*.txt", "missing/*"]}),
    )
    .await;
    let id = v["task"]["id"].as_str().unwrap();
    let t = wait_done(&e, id).await;
    assert_eq!(t["state"], "succeeded", "{t}");
    let ws = t["workspace_id"].as_str().unwrap();
    let (st, w) = e.s.get(&e.alice, &format!("/api/v1/workspaces/{ws}")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(w["state"], "running", "{w}");
    let (_, list) =
        e.s.get(&e.alice, &format!("/api/v1/tasks/{id}/artifacts"))
            .await;
    let paths: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    // The symlink to /etc/passwd is taken as the file it names inside the workspace (tar of the
    // workspace's own view), never the host's.
    assert!(paths.contains(&"out/a.txt"), "{list}");
    assert!(!paths.contains(&"out/b.log"), "{list}");
    let body =
        e.s.http
            .get(format!(
                "{}/api/v1/tasks/{id}/artifacts/out%2Fa.txt",
                e.s.url
            ))
            .bearer_auth(&e.alice)
            .send()
            .await
            .unwrap();
    assert_eq!(body.status(), StatusCode::OK);
    assert_eq!(body.text().await.unwrap(), "report\n");
    let (st, _) =
        e.s.get(&e.alice, &format!("/api/v1/tasks/{id}/artifacts/nope"))
            .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// An interactive task: no command; the answer carries a credential that drives exactly the
/// task's workspace; `complete` ends it, and afterwards the credential is refused (401) and the
/// workspace gone.
#[tokio::test(flavor = "multi_thread")]
async fn an_interactive_task_drives_its_workspace_with_its_credential_until_complete() {
    let e = setup(ConfigLayer::default()).await;
    e.s.create_workspace(&e.alice, "mine", "agent").await;
    let v = create(
        &e,
        json!({"template": "agent", "repo": e.git.url("proj"), "secrets": ["gitpw"], "interactive": true}),
    )
    .await;
    let id = v["task"]["id"].as_str().unwrap().to_string();
    let cred = v["credential"].as_str().unwrap().to_string();
    let t = wait_state(&e, &id, "running").await;
    let ws = t["workspace_id"].as_str().unwrap().to_string();
    let repo = t["repo_dir"].as_str().unwrap().to_string();
    let exec = |token: String, ws: String, cmd: String| {
        let http = e.s.http.clone();
        let url = e.s.url.clone();
        async move {
            let r = http
                .post(format!("{url}/api/v1/workspaces/{ws}/exec"))
                .bearer_auth(token)
                .json(&json!({"command": ["sh", "-c", cmd]}))
                .send()
                .await
                .unwrap();
            let st = r.status();
            (st, r.text().await.unwrap())
        }
    };
    let (st, out) = exec(
        cred.clone(),
        ws.clone(),
        format!("cd {repo} && git branch --show-current && cat greeting.txt"),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{out}");
    assert!(
        out.contains("warren/task-") && out.contains("hello"),
        "{out}"
    );
    // Only its own workspace.
    let (st, _) = exec(cred.clone(), "mine".into(), "true".into()).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // It cannot make tasks or workspaces.
    let (st, _) =
        e.s.post(
            &cred,
            "/api/v1/tasks",
            json!({"template": "agent", "interactive": true}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // A command task cannot be completed; this one can, once.
    let (st, v) =
        e.s.post(
            &e.alice,
            &format!("/api/v1/tasks/{id}/complete"),
            json!({"exit_code": 0}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let t = wait_done(&e, &id).await;
    assert_eq!(t["state"], "succeeded", "{t}");
    assert_eq!(t["exit_code"], 0);
    let (st, _) = exec(cred.clone(), ws.clone(), "true".into()).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "the credential is revoked");
    let (st, _) = e.s.get(&cred, &format!("/api/v1/tasks/{id}")).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_gone_but_mine(&e, &ws).await;
}

/// Like [`assert_gone`] when another workspace of the test still runs.
async fn assert_gone_but_mine(e: &Env, ws: &str) {
    let (st, v) =
        e.s.get(&e.s.admin, &format!("/api/v1/workspaces/{ws}"))
            .await;
    assert!(
        st == StatusCode::NOT_FOUND || v["state"] == "deleted",
        "{st} {v}"
    );
    assert!(!e.s.state().join("workspaces").join(ws).exists());
    let veth = warren_runtime::network::veth_name(ws);
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&veth));
}

/// Bad input: 400 naming the field, with nothing queued.
#[tokio::test(flavor = "multi_thread")]
async fn bad_task_input_is_refused_naming_the_field() {
    let s = TestServer::start().await;
    s.import_busybox();
    s.push_template("bb", json!({"image": "busybox", "overrideCommand": true}))
        .await;
    let repo = "http://198.19.0.1/x.git";
    let cases = [
        (json!({"template": "bb", "shell": "true"}), "repo"),
        (json!({"template": "bb", "repo": repo}), "command"),
        (
            json!({"template": "bb", "repo": repo, "shell": "x", "command": ["y"]}),
            "command",
        ),
        (
            json!({"template": "bb", "repo": repo, "command": []}),
            "command",
        ),
        (
            json!({"template": "bb", "repo": "file:///etc", "shell": "x"}),
            "repo",
        ),
        (
            json!({"template": "bb", "repo": "ext::sh -c id", "shell": "x"}),
            "repo",
        ),
        (
            json!({"template": "bb", "repo": "/srv/repo", "shell": "x"}),
            "repo",
        ),
        (
            json!({"template": "bb", "repo": repo, "shell": "x", "time_limit": "soon"}),
            "time_limit",
        ),
        (
            json!({"template": "bb", "repo": repo, "shell": "x", "time_limit": "0s"}),
            "time_limit",
        ),
        (
            json!({"template": "bb", "repo": repo, "shell": "x", "time_limit": "30d"}),
            "time_limit",
        ),
        (
            json!({"template": "bb", "repo": repo, "shell": "x", "idle_limit": "-1m"}),
            "idle_limit",
        ),
        (
            json!({"template": "nope", "repo": repo, "shell": "x"}),
            "template",
        ),
        (
            json!({"template": "bb", "repo": repo, "shell": "x", "labels": {"Bad Key": "v"}}),
            "labels",
        ),
        (
            json!({"template": "bb", "repo": repo, "shell": "x", "labels": {"k": "a,b"}}),
            "labels",
        ),
        (
            json!({"template": "bb", "repo": repo, "shell": "x", "branch": "-rf"}),
            "branch",
        ),
        (
            json!({"template": "bb", "repo": repo, "shell": "x", "branch": "a..b"}),
            "branch",
        ),
        (
            json!({"template": "bb", "repo": repo, "shell": "x", "base_branch": "x y"}),
            "base_branch",
        ),
        (
            json!({"template": "bb", "repo": repo, "shell": "x", "artifacts": ["../../etc/passwd"]}),
            "artifacts",
        ),
        (
            json!({"template": "bb", "repo": repo, "shell": "x", "artifacts": ["/etc/*"]}),
            "artifacts",
        ),
        (
            json!({"template": "bb", "interactive": true, "branch": "b"}),
            "branch",
        ),
        (
            json!({"template": "bb", "repo": "https://bot:pw@git.example/x.git", "shell": "x"}),
            "repo",
        ),
        (
            json!({"template": "bb", "repo": "https://token@git.example/x.git", "shell": "x"}),
            "repo",
        ),
        (
            json!({"template": "bb", "repo": repo, "shell": "x", "secrets": ["nope"]}),
            "secrets",
        ),
    ];
    for (body, field) in cases {
        let (st, v) = s.post(&s.admin, "/api/v1/tasks", body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["code"], "invalid_request", "{body}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.starts_with(field), "{body}: {msg}");
    }
    // Credentials in the URL: refused with the way to do it instead.
    let (_, v) = s
        .post(
            &s.admin,
            "/api/v1/tasks",
            json!({"template": "bb", "repo": "https://bot:pw@git.example/x.git", "shell": "x"}),
        )
        .await;
    assert!(v["hint"].as_str().unwrap().contains("secret"), "{v}");
    assert!(!v.to_string().contains("pw@"), "{v}");
    // Unknown fields, bad queries.
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/tasks",
            json!({"template": "bb", "interactive": true, "colour": 1}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    for q in ["state=done", "label=nolabel", "label=K=v"] {
        let (st, v) = s.get(&s.admin, &format!("/api/v1/tasks?{q}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {v}");
    }
    let (st, _) = s.get(&s.admin, "/api/v1/tasks/t_nope").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, l) = s.get(&s.admin, "/api/v1/tasks").await;
    assert_eq!(
        l["tasks"].as_array().unwrap().len(),
        0,
        "nothing was queued: {l}"
    );
}

/// A server that stops while a task runs: at the next start the task is failed with reason
/// `server restarted` and its workspace removed.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_fails_the_tasks_it_interrupted_and_removes_their_workspaces() {
    let e = setup(ConfigLayer::default()).await;
    let v = create(
        &e,
        json!({"template": "agent", "repo": e.git.url("proj"), "secrets": ["gitpw"], "shell": "echo up; sleep 1000"}),
    )
    .await;
    let id = v["task"]["id"].as_str().unwrap().to_string();
    let t = wait_state(&e, &id, "running").await;
    let ws = t["workspace_id"].as_str().unwrap().to_string();
    let Env {
        s,
        alice,
        git,
        _gitdir,
    } = e;
    let s = s.restart().await;
    let e = Env {
        s,
        alice,
        git,
        _gitdir,
    };
    let t = wait_done(&e, &id).await;
    assert_eq!(t["state"], "failed", "{t}");
    assert_eq!(t["reason"], "server restarted");
    for _ in 0..600 {
        let (st, v) =
            e.s.get(&e.s.admin, &format!("/api/v1/workspaces/{ws}"))
                .await;
        if st == StatusCode::NOT_FOUND || v["state"] == "deleted" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_gone(&e, &ws).await;
}
