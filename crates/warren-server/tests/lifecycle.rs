//! Lifecycle policies on a real server with real workspaces, driven by a fake clock: idle
//! shutdown (open but silent SSH sessions, agent keep-alives, CPU use), deadlines and their
//! extension up to the max lifetime, TTL, dormancy with its warning, ephemeral workspaces, stuck
//! starts and failure cleanup, autostart schedules, a server restart around a scheduled stop,
//! and the events that say what happened and why.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use warren_api::policy::{Reason, Verdict};
use warren_store::clock::Clock;

const MIN: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// Pushes template `name` (a busybox workspace) with lifecycle `policy`.
async fn template(s: &TestServer, name: &str, policy: Value) {
    template_with(
        s,
        name,
        json!({"image": "busybox", "overrideCommand": true}),
        policy,
    )
    .await;
}

async fn template_with(s: &TestServer, name: &str, dc: Value, policy: Value) {
    let (st, v) = s
        .post(
            &s.admin,
            &format!("/api/v1/templates/{name}/versions"),
            json!({"devcontainer": dc.to_string(), "policy": policy}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

async fn server() -> (TestServer, String) {
    let s = TestServer::start_fake_clock().await;
    s.import_busybox();
    let alice = s.user_token("alice", "member", None).await;
    (s, alice)
}

async fn ws(s: &TestServer, token: &str, name: &str) -> Value {
    let (st, v) = s.get(token, &format!("/api/v1/workspaces/{name}")).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

async fn policy(s: &TestServer, token: &str, name: &str) -> Value {
    let (st, v) = s
        .get(token, &format!("/api/v1/workspaces/{name}/policy"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

/// Waits until the workspace has no active job (a policy's action finished).
async fn settle(s: &TestServer, token: &str, name: &str) {
    for _ in 0..600 {
        let (st, jobs) = s
            .get(token, &format!("/api/v1/workspaces/{name}/jobs"))
            .await;
        if st == StatusCode::NOT_FOUND {
            return;
        }
        let active = jobs.as_array().unwrap().iter().any(|j| {
            matches!(
                j["status"].as_str(),
                Some("pending" | "running" | "canceling")
            )
        });
        if !active {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name}: a job is still active");
}

/// The workspace's events as (kind, reason).
async fn events(s: &TestServer, token: &str, name: &str) -> Vec<(String, String)> {
    let (st, v) = s
        .get(token, &format!("/api/v1/workspaces/{name}/events"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn acted(r: &warren_server::governor::PassReport, name: &str) -> Option<Verdict> {
    r.acted.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

fn count(evs: &[(String, String)], kind: &str) -> usize {
    evs.iter().filter(|(k, _)| k == kind).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_workspace_is_warned_then_stopped_unless_an_agent_keeps_it_alive() {
    let (s, alice) = server().await;
    template(&s, "idle", json!({"idle_timeout": "30m"})).await;
    s.create_workspace(&alice, "agent", "idle").await;
    let st = policy(&s, &alice, "agent").await;
    assert_eq!(st["next"]["action"], "stop", "{st}");
    assert_eq!(st["next"]["reason"], "idle", "{st}");
    // A follower of the events sees what happens from now on.
    let follower = {
        let (url, token) = (s.url.clone(), alice.clone());
        tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .get(format!("{url}/api/v1/events?follow=true"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(
                resp.headers()["content-type"],
                "text/event-stream",
                "{resp:?}"
            );
            let mut body = String::new();
            let mut stream = resp.bytes_stream();
            use futures_util::StreamExt;
            while let Some(Ok(chunk)) = stream.next().await {
                body.push_str(&String::from_utf8_lossy(&chunk));
                if body.contains("event: workspace.stopped") {
                    break;
                }
            }
            body
        })
    };

    // 20 minutes of thinking, then a keep-alive: the idle clock starts again.
    s.advance(20 * MIN);
    assert!(s.pass().await.acted.is_empty());
    let (st, kept) = s
        .post(&alice, "/api/v1/workspaces/agent/keepalive", json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{kept}");
    assert_eq!(kept["next"]["reason"], "idle");
    s.advance(26 * MIN);
    let r = s.pass().await;
    assert!(r.acted.is_empty(), "{r:?}");
    assert_eq!(
        r.warned,
        vec![("agent".into(), Verdict::Stop(Reason::Idle))]
    );
    // The warning is recorded once, however many passes see it.
    assert!(s.pass().await.warned.is_empty());
    // Past the timeout since the keep-alive: stopped, for idleness.
    s.advance(5 * MIN);
    let r = s.pass().await;
    assert_eq!(
        acted(&r, "agent"),
        Some(Verdict::Stop(Reason::Idle)),
        "{r:?}"
    );
    settle(&s, &alice, "agent").await;
    assert_eq!(ws(&s, &alice, "agent").await["state"], "stopped");
    let st = policy(&s, &alice, "agent").await;
    assert_eq!(st["stop_reason"], "idle", "{st}");
    // Acting is once: later passes find nothing to do.
    s.advance(HOUR);
    assert!(s.pass().await.acted.is_empty());
    let evs = events(&s, &alice, "agent").await;
    let tail: Vec<(String, String)> = evs
        .iter()
        .filter(|(k, _)| k != "workspace.created" && k != "workspace.starting")
        .cloned()
        .collect();
    assert_eq!(
        tail,
        [
            ("workspace.started".into(), "user".into()),
            ("workspace.stop_warning".into(), "idle".into()),
            ("workspace.stopping".into(), "idle".into()),
            ("workspace.stopped".into(), "idle".into()),
        ],
        "{evs:?}"
    );
    let streamed = tokio::time::timeout(Duration::from_secs(60), follower)
        .await
        .expect("the event stream delivers the stop")
        .unwrap();
    assert!(
        streamed.contains("event: workspace.stop_warning"),
        "{streamed}"
    );
    assert!(streamed.contains("\"reason\":\"idle\""), "{streamed}");
    // Successful keep-alives leave no audit record (they are frequent); the stop by policy has
    // no user behind it.
    let keepalives = || async {
        let (_, audit) = s
            .get(&s.admin, "/api/v1/audit?action=workspace.keepalive")
            .await;
        audit["records"].as_array().unwrap().len()
    };
    assert_eq!(keepalives().await, 0);
    // Someone else sees none of it, and cannot keep it alive (that attempt is audited).
    let bob = s.user_token("bob", "member", None).await;
    let (st, _) = s
        .post(&bob, "/api/v1/workspaces/agent.alice/keepalive", json!({}))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(keepalives().await, 1);
    let (_, theirs) = s.get(&bob, "/api/v1/events").await;
    assert_eq!(theirs["events"], json!([]), "{theirs}");
    let (st, _) = s.get(&bob, "/api/v1/workspaces/agent.alice/events").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}

/// Opens a silent SSH session (`sleep`) to `name`; kill the child to close it.
fn silent_ssh(port: u16, key: &std::path::Path, name: &str) -> std::process::Child {
    Command::new("ssh")
        .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(key)
        .args(["-p", &port.to_string()])
        .arg(format!("{name}@127.0.0.1"))
        .arg("sleep 3600")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_but_silent_ssh_session_counts_only_if_the_policy_says_so() {
    let (s, alice) = server().await;
    template(&s, "counts", json!({"idle_timeout": "30m"})).await;
    template(
        &s,
        "ignores",
        json!({"idle_timeout": "30m", "activity": {"open_sessions": false}}),
    )
    .await;
    s.create_workspace(&alice, "kept", "counts").await;
    s.create_workspace(&alice, "dropped", "ignores").await;
    let keys = tempfile::tempdir().unwrap();
    let key = common::keygen(keys.path(), "alice");
    s.register_ssh_key(&alice, &key).await;
    let port = s.ssh_port().await;
    let mut sessions = vec![
        silent_ssh(port, &key, "kept"),
        silent_ssh(port, &key, "dropped"),
    ];
    for name in ["kept", "dropped"] {
        let mut open = false;
        for _ in 0..200 {
            let (_, a) = s
                .get(&alice, &format!("/api/v1/workspaces/{name}/activity"))
                .await;
            if a["open_sessions"]["ssh"].as_u64().unwrap_or(0) > 0 {
                open = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(open, "{name}: the SSH session never opened");
    }
    s.advance(31 * MIN);
    let r = s.pass().await;
    assert_eq!(
        acted(&r, "dropped"),
        Some(Verdict::Stop(Reason::Idle)),
        "{r:?}"
    );
    assert_eq!(acted(&r, "kept"), None, "{r:?}");
    settle(&s, &alice, "dropped").await;
    assert_eq!(ws(&s, &alice, "dropped").await["state"], "stopped");
    assert_eq!(ws(&s, &alice, "kept").await["state"], "running");
    // The session ends: its end is the last activity, so idleness counts from there.
    for c in &mut sessions {
        let _ = c.kill();
        let _ = c.wait();
    }
    for _ in 0..200 {
        let (_, a) = s.get(&alice, "/api/v1/workspaces/kept/activity").await;
        if a["open_sessions"].as_object().is_some_and(|m| m.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.advance(29 * MIN);
    assert_eq!(acted(&s.pass().await, "kept"), None);
    s.advance(2 * MIN);
    assert_eq!(
        acted(&s.pass().await, "kept"),
        Some(Verdict::Stop(Reason::Idle))
    );
    settle(&s, &alice, "kept").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_extends_but_never_past_the_max_lifetime() {
    let (s, alice) = server().await;
    template(&s, "day", json!({"autostop": "1h", "max_lifetime": "3h"})).await;
    s.create_workspace(&alice, "w", "day").await;
    let st = policy(&s, &alice, "w").await;
    assert_eq!(st["next"]["reason"], "deadline", "{st}");
    assert_eq!(st["deadline_at"], st["next"]["at"], "{st}");
    // Past the run's max lifetime: refused with the limit and how much is left.
    let (code, e) = s
        .post(&alice, "/api/v1/workspaces/w/extend", json!({"by": "4h"}))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{e}");
    assert_eq!(e["code"], "limit_exceeded", "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("maximum lifetime of 3h"),
        "{e}"
    );
    assert!(e["hint"].as_str().unwrap().contains("at most 3h"), "{e}");
    assert_eq!(
        policy(&s, &alice, "w").await["deadline_at"],
        st["deadline_at"]
    );
    // Within it: the deadline moves.
    let (code, v) = s
        .post(&alice, "/api/v1/workspaces/w/extend", json!({"by": "2h"}))
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    s.advance(HOUR + MIN);
    assert_eq!(acted(&s.pass().await, "w"), None);
    s.advance(HOUR);
    let r = s.pass().await;
    assert_eq!(
        acted(&r, "w"),
        Some(Verdict::Stop(Reason::Deadline)),
        "{r:?}"
    );
    settle(&s, &alice, "w").await;
    assert_eq!(policy(&s, &alice, "w").await["stop_reason"], "deadline");
    // A stopped workspace has no deadline to extend.
    let (code, e) = s
        .post(&alice, "/api/v1/workspaces/w/extend", json!({"by": "1h"}))
        .await;
    assert_eq!(
        (code, e["code"].as_str()),
        (StatusCode::CONFLICT, Some("invalid_state")),
        "{e}"
    );
    // The next run gets a fresh deadline (the extension was this run's).
    let (code, v) = s
        .post(&alice, "/api/v1/workspaces/w/start", json!({}))
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    settle(&s, &alice, "w").await;
    s.advance(59 * MIN);
    assert_eq!(acted(&s.pass().await, "w"), None);
    s.advance(MIN);
    assert_eq!(
        acted(&s.pass().await, "w"),
        Some(Verdict::Stop(Reason::Deadline))
    );
    settle(&s, &alice, "w").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_values_stay_within_the_template_ceilings() {
    let (s, alice) = server().await;
    template(
        &s,
        "capped",
        json!({"idle_timeout": "30m", "ceilings": {"idle_timeout": "2h"}}),
    )
    .await;
    // At creation: ttl is free (the template sets none), idle beyond its ceiling is refused.
    let (code, e) = s
        .post(
            &alice,
            "/api/v1/workspaces",
            json!({"name": "x", "template": "capped", "policy": {"idle_timeout": "3h"}}),
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("`idle_timeout` (3h)"),
        "{e}"
    );
    s.create_workspace(&alice, "x", "capped").await;
    let (code, e) = s
        .call(
            Some(&alice),
            Method::PUT,
            "/api/v1/workspaces/x/policy",
            Some(json!({"idle_timeout": "5h"})),
        )
        .await;
    assert_eq!(
        (code, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("limit_exceeded")),
        "{e}"
    );
    let (code, e) = s
        .call(
            Some(&alice),
            Method::PUT,
            "/api/v1/workspaces/x/policy",
            Some(json!({"autostart": {"schedule": "0 25 * * *"}})),
        )
        .await;
    assert_eq!(
        (code, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_request")),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("autostart.schedule"),
        "{e}"
    );
    let (code, st) = s
        .call(
            Some(&alice),
            Method::PUT,
            "/api/v1/workspaces/x/policy",
            Some(json!({"idle_timeout": "2h"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{st}");
    assert_eq!(st["effective"]["idle_timeout"], "2h");
    // The longer timeout is the one applied.
    s.advance(HOUR);
    assert_eq!(acted(&s.pass().await, "x"), None);
    s.advance(HOUR);
    assert_eq!(
        acted(&s.pass().await, "x"),
        Some(Verdict::Stop(Reason::Idle))
    );
    settle(&s, &alice, "x").await;
    // A member cannot change someone else's policy; an admin can.
    let bob = s.user_token("bob", "member", None).await;
    let (code, _) = s
        .call(
            Some(&bob),
            Method::PUT,
            "/api/v1/workspaces/x.alice/policy",
            Some(json!({})),
        )
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dormant_workspaces_are_warned_then_deleted_and_nothing_remains() {
    let (s, alice) = server().await;
    template(&s, "dorm", json!({"dormancy": "7d"})).await;
    s.create_workspace(&alice, "old", "dorm").await;
    let (code, v) = s
        .post(&alice, "/api/v1/workspaces/old/stop", json!({}))
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    settle(&s, &alice, "old").await;
    let id = ws(&s, &alice, "old").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.advance(5 * DAY);
    let r = s.pass().await;
    assert!(r.acted.is_empty() && r.warned.is_empty(), "{r:?}");
    s.advance(DAY + MIN);
    let r = s.pass().await;
    assert_eq!(
        r.warned,
        vec![("old".into(), Verdict::Delete(Reason::Dormancy))]
    );
    s.advance(DAY);
    let r = s.pass().await;
    assert_eq!(
        acted(&r, "old"),
        Some(Verdict::Delete(Reason::Dormancy)),
        "{r:?}"
    );
    settle(&s, &alice, "old").await;
    let (code, _) = s.get(&alice, "/api/v1/workspaces/old").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(!s.state().join("workspaces").join(&id).exists());
    // Its events outlive it, with the reason.
    let (_, v) = s.get(&alice, "/api/v1/events?kind=workspace.delet").await;
    let kinds: Vec<(&str, &str)> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("workspace.delete_warning", "dormancy"),
            ("workspace.deleting", "dormancy"),
            ("workspace.deleted", "dormancy")
        ],
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_and_ephemeral_workspaces_are_deleted() {
    let (s, alice) = server().await;
    template(&s, "short", json!({"ttl": "2h"})).await;
    template(&s, "ephemeral", json!({"delete_on_stop": true})).await;
    s.create_workspace(&alice, "brief", "short").await;
    s.create_workspace(&alice, "once", "ephemeral").await;
    let (code, v) = s
        .post(&alice, "/api/v1/workspaces/once/stop", json!({}))
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    settle(&s, &alice, "once").await;
    s.advance(HOUR);
    let r = s.pass().await;
    assert_eq!(
        acted(&r, "once"),
        Some(Verdict::Delete(Reason::DeleteOnStop)),
        "{r:?}"
    );
    assert_eq!(acted(&r, "brief"), None, "{r:?}");
    s.advance(HOUR);
    let r = s.pass().await;
    assert_eq!(
        acted(&r, "brief"),
        Some(Verdict::Delete(Reason::Ttl)),
        "{r:?}"
    );
    settle(&s, &alice, "brief").await;
    settle(&s, &alice, "once").await;
    let (_, list) = s.get(&alice, "/api/v1/workspaces").await;
    assert_eq!(list["workspaces"], json!([]), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_start_fails_and_a_failed_workspace_is_cleaned_up() {
    let (s, alice) = server().await;
    template_with(
        &s,
        "stuck",
        json!({"image": "busybox", "overrideCommand": true, "onCreateCommand": "sleep 3600"}),
        json!({"start_timeout": "10m", "failure_cleanup": "1h"}),
    )
    .await;
    let (code, v) = s
        .post(
            &alice,
            "/api/v1/workspaces",
            json!({"name": "hang", "template": "stuck"}),
        )
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    let job = v["job"]["id"].as_str().unwrap().to_string();
    // Wait until the create job runs the hook (a loaded machine may take a while to get there).
    let mut hooked = false;
    for _ in 0..1200 {
        let (_, j) = s.get(&alice, &format!("/api/v1/jobs/{job}")).await;
        if j["status"] == "running" && ws(&s, &alice, "hang").await["state"] == "running" {
            hooked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(hooked, "the create job never reached the hook");
    s.advance(9 * MIN);
    assert_eq!(acted(&s.pass().await, "hang"), None);
    s.advance(2 * MIN);
    let r = s.pass().await;
    assert_eq!(
        acted(&r, "hang"),
        Some(Verdict::FailStart(Reason::StartTimeout)),
        "{r:?}"
    );
    let j = s.wait_job(&alice, &job).await;
    assert_eq!(j["status"], "canceled", "{j}");
    let w = ws(&s, &alice, "hang").await;
    assert_eq!(w["state"], "failed", "{w}");
    assert_eq!(
        policy(&s, &alice, "hang").await["stop_reason"],
        "start_timeout"
    );
    // No process of the workspace is left running.
    assert!(s.supervisors().is_empty(), "{:?}", s.supervisors());
    s.advance(HOUR);
    let r = s.pass().await;
    assert_eq!(
        acted(&r, "hang"),
        Some(Verdict::Delete(Reason::FailureCleanup)),
        "{r:?}"
    );
    settle(&s, &alice, "hang").await;
    let (code, _) = s.get(&alice, "/api/v1/workspaces/hang").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autostart_starts_a_stopped_workspace_on_its_schedule() {
    let (s, alice) = server().await;
    template(
        &s,
        "office",
        json!({"autostart": {"schedule": "0 9 * * *", "timezone": "Europe/Berlin"}}),
    )
    .await;
    s.create_workspace(&alice, "desk", "office").await;
    let (code, v) = s
        .post(&alice, "/api/v1/workspaces/desk/stop", json!({}))
        .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{v}");
    settle(&s, &alice, "desk").await;
    let st = policy(&s, &alice, "desk").await;
    assert!(st["next"].is_null(), "{st}");
    // The next 09:00 in Berlin, computed independently: 08:00 UTC in winter (CET, UTC+1).
    let now = s.clock.as_ref().unwrap().now();
    let mut nine = now.replace_time(time::Time::from_hms(8, 0, 0).unwrap());
    if nine <= now {
        nine += time::Duration::days(1);
    }
    assert!(
        (now.month() as u8) >= 11 || (now.month() as u8) <= 2,
        "this check assumes winter time; now is {now}"
    );
    s.clock
        .as_ref()
        .unwrap()
        .set(nine - time::Duration::minutes(1));
    assert_eq!(acted(&s.pass().await, "desk"), None);
    s.clock
        .as_ref()
        .unwrap()
        .set(nine + time::Duration::minutes(1));
    let r = s.pass().await;
    assert_eq!(
        acted(&r, "desk"),
        Some(Verdict::Start(Reason::Autostart)),
        "{r:?}"
    );
    settle(&s, &alice, "desk").await;
    assert_eq!(ws(&s, &alice, "desk").await["state"], "running");
    assert!(s.pass().await.acted.is_empty());
    let evs = events(&s, &alice, "desk").await;
    assert_eq!(
        evs.last().unwrap(),
        &("workspace.started".to_string(), "autostart".to_string())
    );
    // The workspace can turn the template's schedule off.
    let (code, st) = s
        .call(
            Some(&alice),
            Method::PUT,
            "/api/v1/workspaces/desk/policy",
            Some(json!({"autostart": "off"})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{st}");
    assert!(st["effective"]["autostart"].is_null(), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_around_scheduled_stops_acts_once() {
    let (s, alice) = server().await;
    template(&s, "idle", json!({"idle_timeout": "30m"})).await;
    template(&s, "later", json!({"autostop": "2h"})).await;
    s.create_workspace(&alice, "now", "idle").await;
    s.create_workspace(&alice, "soon", "later").await;
    s.advance(31 * MIN);
    let r = s.pass().await;
    assert_eq!(acted(&r, "now"), Some(Verdict::Stop(Reason::Idle)), "{r:?}");
    // Restart while the stop job runs (a graceful shutdown finishes it or leaves it to the
    // next start's reconciliation) and before the other's deadline.
    let s = s.restart().await;
    settle(&s, &alice, "now").await;
    let r = s.pass().await;
    assert!(r.acted.is_empty(), "{r:?}");
    assert_eq!(ws(&s, &alice, "now").await["state"], "stopped");
    let evs = events(&s, &alice, "now").await;
    assert_eq!(count(&evs, "workspace.stopping"), 1, "{evs:?}");
    assert_eq!(count(&evs, "workspace.stopped"), 1, "{evs:?}");
    assert!(
        evs.contains(&("workspace.stopped".into(), "idle".into())),
        "{evs:?}"
    );
    // The deadline recorded before the restart still holds after it.
    assert_eq!(ws(&s, &alice, "soon").await["state"], "running");
    s.advance(HOUR + 30 * MIN);
    let r = s.pass().await;
    assert_eq!(
        acted(&r, "soon"),
        Some(Verdict::Stop(Reason::Deadline)),
        "{r:?}"
    );
    settle(&s, &alice, "soon").await;
    let evs = events(&s, &alice, "soon").await;
    assert_eq!(count(&evs, "workspace.stopped"), 1, "{evs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_cpu_keeps_a_workspace_from_idling_when_the_policy_asks() {
    let (s, alice) = server().await;
    template(
        &s,
        "build",
        json!({"idle_timeout": "30m", "activity": {"cpu_threshold": 5}}),
    )
    .await;
    s.create_workspace(&alice, "cc", "build").await;
    // A build that keeps one CPU busy, left running after the exec returns (in a session of
    // its own, made before the exec ends).
    let (code, v) = s
        .post(
            &alice,
            "/api/v1/workspaces/cc/exec",
            json!({"command": ["sh", "-c", "setsid sh -c 'echo $$ >/tmp/busy.pid; while :; do :; done' >/dev/null 2>&1 & \
                while [ ! -s /tmp/busy.pid ]; do sleep 0.1; done"]}),
        )
        .await;
    assert!(code.is_success(), "{v}");
    s.advance(31 * MIN);
    // CPU use is measured between passes (real time): not stopped before it is known, nor
    // while it is busy (other tests share the CPUs, so give the measure a few tries).
    let mut seen = false;
    for _ in 0..20 {
        assert_eq!(acted(&s.pass().await, "cc"), None);
        let (_, a) = s.get(&alice, "/api/v1/workspaces/cc/activity").await;
        if a["last"]["cpu"].is_string() {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    assert!(seen, "the busy loop never counted as activity");
    // The build ends: idle from its last busy moment.
    let (code, v) = s
        .post(
            &alice,
            "/api/v1/workspaces/cc/exec",
            json!({"command": ["sh", "-c", "kill $(cat /tmp/busy.pid)"]}),
        )
        .await;
    assert!(code.is_success(), "{v}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.pass().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(acted(&s.pass().await, "cc"), None);
    s.advance(31 * MIN);
    assert_eq!(
        acted(&s.pass().await, "cc"),
        Some(Verdict::Stop(Reason::Idle))
    );
    settle(&s, &alice, "cc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_restricted_to_one_workspace_sees_only_its_events() {
    let (s, alice) = server().await;
    template(&s, "plain", json!({})).await;
    s.create_workspace(&alice, "mine", "plain").await;
    s.create_workspace(&alice, "other", "plain").await;
    let (code, v) = s
        .post(
            &alice,
            "/api/v1/tokens",
            json!({"name": "agent", "workspaces": ["mine"]}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let agent = v["token"].as_str().unwrap().to_string();
    let names = |v: &Value| -> Vec<String> {
        let mut n: Vec<String> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["workspace_name"].as_str().unwrap_or("").to_string())
            .collect();
        n.dedup();
        n
    };
    let (_, all) = s.get(&alice, "/api/v1/events").await;
    assert!(names(&all).contains(&"other".to_string()), "{all}");
    let (code, v) = s.get(&agent, "/api/v1/events").await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(names(&v), ["mine"], "{v}");
    let (code, _) = s.get(&agent, "/api/v1/events?workspace=other").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    // An administrator's restricted token asking for everyone's gets the same.
    let (code, v) = s
        .post(
            &s.admin,
            "/api/v1/tokens",
            json!({"name": "narrow", "workspaces": ["mine.alice"]}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let narrow = v["token"].as_str().unwrap().to_string();
    let (_, v) = s.get(&narrow, "/api/v1/events?owner=all").await;
    assert_eq!(names(&v), ["mine"], "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_are_capped_per_user_and_end_when_their_token_is_revoked() {
    let (s, alice) = server().await;
    let (code, v) = s
        .post(&alice, "/api/v1/tokens", json!({"name": "watcher"}))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let watcher = v["token"].as_str().unwrap().to_string();
    let watcher_id = v["info"]["id"].as_str().unwrap().to_string();
    let follow = |token: String| {
        let url = format!("{}/api/v1/events?follow=true", s.url);
        async move {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let mut open = Vec::new();
    for _ in 0..warren_server::routes::events::MAX_FOLLOWERS {
        let r = follow(alice.clone()).await;
        assert_eq!(r.status(), StatusCode::OK);
        open.push(r);
    }
    let refused = follow(alice.clone()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let e: Value = refused.json().await.unwrap();
    assert_eq!(e["code"], "limit_exceeded", "{e}");
    // Closing one makes room.
    drop(open.pop());
    let mut room = None;
    for _ in 0..100 {
        let r = follow(watcher.clone()).await;
        if r.status() == StatusCode::OK {
            room = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stream = room.expect("a closed stream frees its place");
    // Revoking the token ends its stream.
    let (code, v) = s
        .call(
            Some(&alice),
            Method::DELETE,
            &format!("/api/v1/tokens/{watcher_id}"),
            None,
        )
        .await;
    assert!(code.is_success(), "{v}");
    let ended = tokio::time::timeout(Duration::from_secs(60), async move {
        use futures_util::StreamExt;
        let mut body = stream.bytes_stream();
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the stream of a revoked token goes on");
}
