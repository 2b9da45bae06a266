//! Quotas and budgets on a real server with real workspaces (busybox) and a fake clock:
//! concurrent starts against `max_workspaces`, CPU and memory sums, the 80% warning and the
//! 100% refusal with its code and hint, `on_exhausted: stop`, overrides and their expiry, team
//! charging, permissions and bad input.

mod common;

use std::time::Duration;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use warren_store::EventFilter;

/// A day in the middle of a month, far from any period boundary (Wednesday 2030-06-12 10:00
/// UTC), so that day, week and month budgets all hold for the few hours a test moves forward.
fn mid_period() -> time::OffsetDateTime {
    warren_store::clock::parse_time("2030-06-12T10:00:00Z").unwrap()
}

async fn server() -> TestServer {
    let s = TestServer::start_fake_clock().await;
    s.clock.as_ref().unwrap().set(mid_period());
    s.import_busybox();
    s
}

/// Pushes template `name`: busybox, with `ceilings` and `cost`.
async fn template(s: &TestServer, name: &str, ceilings: Value, cost: Value) {
    let (st, v) = s
        .post(
            &s.admin,
            &format!("/api/v1/templates/{name}/versions"),
            json!({
                "devcontainer": json!({"image": "busybox", "overrideCommand": true}).to_string(),
                "ceilings": ceilings,
                "cost": cost,
            }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert_eq!(v["cost"], cost, "{v}");
}

async fn create(s: &TestServer, token: &str, body: Value) -> (StatusCode, Value) {
    s.post(token, "/api/v1/workspaces", body).await
}

/// Creates a workspace and waits for it to run.
async fn create_running(s: &TestServer, token: &str, body: Value) -> Value {
    let (st, v) = create(s, token, body).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let job = s.wait_job(token, v["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    v["workspace"].clone()
}

async fn transition(s: &TestServer, token: &str, ws: &str, what: &str) -> (StatusCode, Value) {
    s.post(token, &format!("/api/v1/workspaces/{ws}/{what}"), json!({}))
        .await
}

/// Runs a transition that must be accepted, and waits for its job.
async fn transition_ok(s: &TestServer, token: &str, ws: &str, what: &str) {
    let (st, v) = transition(s, token, ws, what).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{what} {ws}: {v}");
    let job = s.wait_job(token, v["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
}

async fn put(s: &TestServer, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    s.call(Some(token), Method::PUT, path, Some(body)).await
}

fn assert_refused(st: StatusCode, v: &Value, code: &str, says: &str) {
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["code"], code, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains(says), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(
        v["hint"]
            .as_str()
            .unwrap_or("")
            .contains("warren quota override")
            || v["hint"].as_str().unwrap_or("").contains("limits"),
        "{v}"
    );
}

async fn events(s: &TestServer, prefix: &str) -> Vec<warren_store::EventEntry> {
    s.state
        .store
        .list_events(&EventFilter {
            kind_prefix: Some(prefix.into()),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_workspaces_holds_for_concurrent_starts() {
    let s = server().await;
    template(&s, "q", json!({"cpus": 1, "memory_mb": 256}), json!({})).await;
    let alice = s.user_token("alice", "member", None).await;
    let (st, v) = put(
        &s,
        &s.admin,
        "/api/v1/quotas/users/alice",
        json!({"max_workspaces": 1}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["source"], "user");

    // Two creates at once: exactly one is admitted.
    let (a, b) = tokio::join!(
        create(&s, &alice, json!({"name": "a", "template": "q"})),
        create(&s, &alice, json!({"name": "b", "template": "q"})),
    );
    let mut answers = [a, b];
    answers.sort_by_key(|(st, _)| st.as_u16());
    assert_eq!(answers[0].0, StatusCode::ACCEPTED, "{:?}", answers);
    assert_refused(
        answers[1].0,
        &answers[1].1,
        "quota_exceeded",
        "has 1 of at most 1 workspaces running",
    );
    let first = answers[0].1["workspace"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = s
        .wait_job(&alice, answers[0].1["job"]["id"].as_str().unwrap())
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // The refused create left nothing behind.
    let (_, list) = s.get(&alice, "/api/v1/workspaces").await;
    assert_eq!(list["workspaces"].as_array().unwrap().len(), 1, "{list}");

    // A stopped workspace does not count; then two starts at once: one is admitted.
    transition_ok(&s, &alice, &first, "stop").await;
    let other = if first == "a" { "b" } else { "a" };
    create_running(&s, &alice, json!({"name": other, "template": "q"})).await;
    transition_ok(&s, &alice, other, "stop").await;
    let (x, y) = tokio::join!(
        transition(&s, &alice, "a", "start"),
        transition(&s, &alice, "b", "start"),
    );
    let mut answers = [x, y];
    answers.sort_by_key(|(st, _)| st.as_u16());
    assert_eq!(answers[0].0, StatusCode::ACCEPTED, "{:?}", answers);
    assert_refused(
        answers[1].0,
        &answers[1].1,
        "quota_exceeded",
        "workspaces running",
    );
    let job = s
        .wait_job(&alice, answers[0].1["job"]["id"].as_str().unwrap())
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // Restarting the running one is not a second workspace.
    let running = answers[0].1["workspace"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    transition_ok(&s, &alice, &running, "restart").await;

    // The status shows what runs.
    let (st, me) = s.get(&alice, "/api/v1/me/quota").await;
    assert_eq!(st, StatusCode::OK, "{me}");
    assert_eq!(me["user"]["workspaces"], 1, "{me}");
    assert_eq!(me["user"]["cpus"], 1.0, "{me}");
    assert_eq!(me["user"]["memory_mb"], 256, "{me}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_memory_quotas_sum_the_limits_of_running_workspaces() {
    let s = server().await;
    template(&s, "q", json!({"cpus": 1, "memory_mb": 1024}), json!({})).await;
    template(&s, "free", json!({}), json!({})).await;
    let alice = s.user_token("alice", "member", None).await;
    // The default quota applies to users without their own.
    let (st, v) = put(
        &s,
        &s.admin,
        "/api/v1/quotas/default",
        json!({"max_cpus": 1.5, "max_memory_mb": 768}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    create_running(
        &s,
        &alice,
        json!({"name": "a", "template": "q", "limits": {"cpus": 1, "memory_mb": 256}}),
    )
    .await;
    // 1 + 1 CPUs > 1.5.
    let (st, v) = create(&s, &alice, json!({"name": "b", "template": "q"})).await;
    assert_refused(
        st,
        &v,
        "quota_exceeded",
        "2 CPUs would run, above the quota of 1.5",
    );
    // 256 + 600 MiB > 768.
    let (st, v) = create(
        &s,
        &alice,
        json!({"name": "b", "template": "q", "limits": {"cpus": 0.5, "memory_mb": 600}}),
    )
    .await;
    assert_refused(st, &v, "quota_exceeded", "856 MiB of memory would run");
    // A workspace without limits (a template without ceilings) cannot be counted.
    let (st, v) = create(&s, &alice, json!({"name": "c", "template": "free"})).await;
    assert_refused(st, &v, "quota_exceeded", "without a CPU limit");
    assert!(v["hint"].as_str().unwrap().contains("limits"), "{v}");
    // Exactly at the quota is fine.
    create_running(
        &s,
        &alice,
        json!({"name": "b", "template": "q", "limits": {"cpus": 0.5, "memory_mb": 512}}),
    )
    .await;
    let (_, me) = s.get(&alice, "/api/v1/me/quota").await;
    assert_eq!(me["user"]["source"], "default", "{me}");
    assert_eq!(me["user"]["cpus"], 1.5, "{me}");
    assert_eq!(me["user"]["memory_mb"], 768, "{me}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_warn_at_80_percent_refuse_at_100_and_overrides_lift_them_until_expiry() {
    let s = server().await;
    // 10 units per running hour: a budget of 10 lasts one hour.
    template(
        &s,
        "paid",
        json!({"cpus": 1}),
        json!({"running_per_hour": 10.0}),
    )
    .await;
    let alice = s.user_token("alice", "member", None).await;
    let (st, v) = put(
        &s,
        &s.admin,
        "/api/v1/quotas/users/alice",
        json!({"budget": 10, "budget_period": "day"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    create_running(&s, &alice, json!({"name": "a", "template": "paid"})).await;

    s.advance(Duration::from_secs(47 * 60));
    s.pass().await;
    assert!(events(&s, "budget.").await.is_empty(), "below 80%");
    s.advance(Duration::from_secs(2 * 60));
    s.pass().await;
    s.pass().await;
    let warned = events(&s, "budget.warning").await;
    assert_eq!(warned.len(), 1, "one warning per period: {warned:?}");
    assert_eq!(warned[0].reason.as_deref(), Some("budget"));
    let (_, me) = s.get(&alice, "/api/v1/me").await;
    assert_eq!(warned[0].owner_id.as_deref(), me["user"]["id"].as_str());
    assert!(warned[0].message.contains("% of its budget"), "{warned:?}");

    s.advance(Duration::from_secs(11 * 60));
    s.pass().await;
    let exhausted = events(&s, "budget.exhausted").await;
    assert_eq!(exhausted.len(), 1, "{exhausted:?}");
    assert!(exhausted[0].message.contains("10 of 10"), "{exhausted:?}");
    // `refuse`: what runs keeps running; nothing more starts.
    let (_, ws) = s.get(&alice, "/api/v1/workspaces/a").await;
    assert_eq!(ws["state"], "running", "{ws}");
    transition_ok(&s, &alice, "a", "stop").await;
    let (st, v) = transition(&s, &alice, "a", "start").await;
    assert_refused(
        st,
        &v,
        "budget_exhausted",
        "has spent its budget: 10 of 10 cost units this day",
    );
    assert!(
        v["hint"]
            .as_str()
            .unwrap()
            .contains("warren quota override --user alice"),
        "{v}"
    );
    let (_, me) = s.get(&alice, "/api/v1/me/quota").await;
    assert_eq!(me["user"]["budget"]["used"], 10.0, "{me}");
    assert_eq!(me["user"]["budget"]["left"], 0.0, "{me}");

    // A member cannot grant themselves an override.
    let (st, _) = s
        .post(
            &alice,
            "/api/v1/quotas/users/alice/overrides",
            json!({"extra_budget": 5, "duration": "1h"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, o) = s
        .post(
            &s.admin,
            "/api/v1/quotas/users/alice/overrides",
            json!({"extra_budget": 5, "duration": "1h", "note": "demo day"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    assert_eq!(o["active"], true);
    transition_ok(&s, &alice, "a", "start").await;
    transition_ok(&s, &alice, "a", "stop").await;
    let (_, list) = s.get(&alice, "/api/v1/quotas/users/alice/overrides").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");

    // Expired: refused again.
    s.advance(Duration::from_secs(61 * 60));
    let (st, v) = transition(&s, &alice, "a", "start").await;
    assert_refused(st, &v, "budget_exhausted", "10 of 10");
    // An unlimited override, revoked: refused again.
    let (_, o) = s
        .post(
            &s.admin,
            "/api/v1/quotas/users/alice/overrides",
            json!({"unlimited": true, "duration": "1d"}),
        )
        .await;
    let (_, me) = s.get(&alice, "/api/v1/me/quota").await;
    assert_eq!(me["user"]["unlimited"], true, "{me}");
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::DELETE,
            &format!(
                "/api/v1/quotas/users/alice/overrides/{}",
                o["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = transition(&s, &alice, "a", "start").await;
    assert_eq!(v["code"], "budget_exhausted", "{st} {v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_exhausted_stop_stops_running_workspaces_with_reason_budget() {
    let s = server().await;
    template(
        &s,
        "paid",
        json!({"cpus": 1}),
        json!({"running_per_hour": 10.0}),
    )
    .await;
    let bob = s.user_token("bob", "member", None).await;
    s.post(&s.admin, "/api/v1/teams", json!({"name": "infra"}))
        .await;
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::PUT,
            "/api/v1/teams/infra/members/bob",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    // The team's budget: bob's only team is charged by default.
    let (st, v) = put(
        &s,
        &s.admin,
        "/api/v1/quotas/teams/infra",
        json!({"budget": 1, "budget_period": "month", "on_exhausted": "stop"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let ws = create_running(&s, &bob, json!({"name": "w", "template": "paid"})).await;
    let rec = s
        .state
        .store
        .get(ws["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let team = s
        .state
        .store
        .team(&rec.ownership.org_id, "infra")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.ownership.team_id.as_deref(), Some(team.id.as_str()));
    // A member of the team reads its status.
    let (st, status) = s.get(&bob, "/api/v1/quotas/teams/infra").await;
    assert_eq!(st, StatusCode::OK, "{status}");
    assert_eq!(status["workspaces"], 1, "{status}");

    s.advance(Duration::from_secs(7 * 60));
    // (The background loop may have done it first: the outcome is what counts.)
    let report = s.pass().await;
    eprintln!("budget pass: {:?}", report.budget);
    // Wait for the stop job.
    for _ in 0..200 {
        let (_, w) = s.get(&bob, "/api/v1/workspaces/w").await;
        if w["state"] == "stopped" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopped: Vec<_> = events(&s, "workspace.stopped")
        .await
        .into_iter()
        .filter(|e| e.workspace_name.as_deref() == Some("w"))
        .collect();
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(stopped[0].reason.as_deref(), Some("budget"));
    let exhausted = events(&s, "budget.exhausted").await;
    assert_eq!(exhausted.len(), 1);
    assert_eq!(exhausted[0].team_id.as_deref(), Some(team.id.as_str()));
    // Starting again is refused, naming the team.
    let (st, v) = transition(&s, &bob, "w", "start").await;
    assert_refused(
        st,
        &v,
        "budget_exhausted",
        "team `infra` has spent its budget",
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_charging_rules_permissions_and_bad_input() {
    let s = TestServer::start_fake_clock().await;
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    let auditor = s.user_token("audrey", "auditor", None).await;
    for t in ["infra", "web", "ops"] {
        s.post(&s.admin, "/api/v1/teams", json!({"name": t})).await;
    }
    for (t, u) in [("infra", "alice"), ("web", "alice"), ("ops", "bob")] {
        let (st, _) = s
            .call(
                Some(&s.admin),
                Method::PUT,
                &format!("/api/v1/teams/{t}/members/{u}"),
                None,
            )
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    s.push_template("t", json!({"image": "busybox"})).await;
    // Not a member of `ops`.
    let (st, v) = create(
        &s,
        &alice,
        json!({"name": "x", "template": "t", "team": "ops"}),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("not a member of team `ops`"),
        "{v}"
    );
    assert!(v["hint"].as_str().unwrap().contains("infra, web"), "{v}");
    let (st, v) = create(
        &s,
        &alice,
        json!({"name": "x", "template": "t", "team": "nope"}),
    )
    .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{v}"
    );
    // In two teams, one with a quota: say which.
    put(
        &s,
        &s.admin,
        "/api/v1/quotas/teams/web",
        json!({"max_workspaces": 5}),
    )
    .await;
    let (st, v) = create(&s, &alice, json!({"name": "x", "template": "t"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["hint"].as_str().unwrap().contains("--team"), "{v}");

    // Permissions: a member reads their own and their teams', nobody else's, and sets nothing.
    let (st, _) = s.get(&alice, "/api/v1/quotas/users/alice").await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s.get(&alice, "/api/v1/quotas/teams/web").await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = s.get(&bob, "/api/v1/quotas/users/alice").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s.get(&bob, "/api/v1/quotas/teams/web").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s.get(&bob, "/api/v1/quotas/users/nobody").await;
    assert_eq!(
        st,
        StatusCode::FORBIDDEN,
        "a member learns nothing of other users"
    );
    let (st, _) = put(
        &s,
        &bob,
        "/api/v1/quotas/users/bob",
        json!({"max_workspaces": 99}),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = put(
        &s,
        &auditor,
        "/api/v1/quotas/users/bob",
        json!({"max_workspaces": 99}),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s.get(&auditor, "/api/v1/quotas/users/alice").await;
    assert_eq!(st, StatusCode::OK);

    // Bad input names the field.
    let bad = [
        (
            "/api/v1/quotas/users/bob",
            json!({"budget": -5}),
            "`budget`",
        ),
        (
            "/api/v1/quotas/users/bob",
            json!({"budget_period": "year"}),
            "`budget_period`",
        ),
        (
            "/api/v1/quotas/users/bob",
            json!({"on_exhausted": "explode"}),
            "`on_exhausted`",
        ),
        (
            "/api/v1/quotas/default",
            json!({"max_cpus": 0}),
            "`max_cpus`",
        ),
    ];
    for (path, body, field) in bad {
        let (st, v) = put(&s, &s.admin, path, body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["code"], "invalid_request");
        assert!(
            v["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/templates/t/versions",
            json!({"devcontainer": "{\"image\":\"busybox\"}", "cost": {"running_per_hour": -1}}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("`running_per_hour`"),
        "{v}"
    );
    for body in [
        json!({"duration": "1h"}),
        json!({"extra_budget": -1, "duration": "1h"}),
        json!({"extra_budget": 1}),
        json!({"extra_budget": 1, "expires_at": "2000-01-01T00:00:00Z"}),
        json!({"extra_budget": 1, "duration": "soon"}),
    ] {
        let (st, v) = s
            .post(&s.admin, "/api/v1/quotas/users/bob/overrides", body.clone())
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
    }
    let (st, _) = s.get(&s.admin, "/api/v1/quotas/groups/x").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_autostart_is_recorded_once_per_occurrence() {
    let s = server().await;
    template(&s, "q", json!({"cpus": 1}), json!({})).await;
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/templates/auto/versions",
            json!({
                "devcontainer": json!({"image": "busybox", "overrideCommand": true}).to_string(),
                "ceilings": {"cpus": 1},
                "policy": {"autostart": {"schedule": "*/10 * * * *"}},
            }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let alice = s.user_token("alice", "member", None).await;
    put(
        &s,
        &s.admin,
        "/api/v1/quotas/users/alice",
        json!({"max_workspaces": 1}),
    )
    .await;
    create_running(&s, &alice, json!({"name": "b", "template": "auto"})).await;
    transition_ok(&s, &alice, "b", "stop").await; // 10:00
    create_running(&s, &alice, json!({"name": "a", "template": "q"})).await;

    // 10:10: b's autostart is due, and refused: one event for this occurrence.
    s.advance(Duration::from_secs(10 * 60 + 1));
    s.pass().await;
    s.pass().await;
    let refused = events(&s, "workspace.start_refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].workspace_name.as_deref(), Some("b"));
    assert_eq!(refused[0].reason.as_deref(), Some("quota"));
    assert!(
        refused[0]
            .message
            .contains("has 1 of at most 1 workspaces running"),
        "{refused:?}"
    );
    let (_, b) = s.get(&alice, "/api/v1/workspaces/b").await;
    assert_eq!(b["state"], "stopped", "{b}");
    // 10:20: another occurrence, another event.
    s.advance(Duration::from_secs(10 * 60));
    s.pass().await;
    assert_eq!(events(&s, "workspace.start_refused").await.len(), 2);
    // Room again: the next pass starts it.
    transition_ok(&s, &alice, "a", "stop").await;
    s.pass().await;
    let mut state = Value::Null;
    for _ in 0..300 {
        let (_, b) = s.get(&alice, "/api/v1/workspaces/b").await;
        state = b["state"].clone();
        if state == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, "running");
    s.stop().await;
}

/// The budget pass over 10,000 priced workspaces of 100 users under a default budget (run with
/// `--ignored --nocapture`; prints the time of a pass). Records are written straight into the
/// store: no workspace runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn bench_budget_pass_over_10000_workspaces() {
    let s = TestServer::start_fake_clock().await;
    s.clock.as_ref().unwrap().set(mid_period());
    let store = &s.state.store;
    for i in 0..10_000 {
        store
            .create_workspace(warren_store::NewWorkspace {
                name: warren_api::WorkspaceName::new(format!("w{i}")).unwrap(),
                project_dir: format!("/nonexistent/{i}"),
                config_path: "/nonexistent/c.json".into(),
                image: "busybox".into(),
                spec_json: "{}".into(),
                ownership: warren_store::Ownership {
                    owner_id: format!("user{}", i % 100),
                    org_id: s.state.org.id.clone(),
                    cost_json: Some(r#"{"stopped_per_hour": 0.01}"#.into()),
                    ..Default::default()
                },
            })
            .await
            .unwrap();
    }
    put(
        &s,
        &s.admin,
        "/api/v1/quotas/default",
        json!({"budget": 1000000}),
    )
    .await;
    s.advance(Duration::from_secs(3600));
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t0 = std::time::Instant::now();
        let r = warren_server::quota::budget_pass(&s.state, &[]).await;
        best = best.min(t0.elapsed());
        assert!(r.is_empty(), "{r:?}");
    }
    eprintln!("budget pass over 10000 priced workspaces: best of 5 {best:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_rearms_budget_alerts_for_the_new_limit() {
    let s = server().await;
    template(
        &s,
        "paid",
        json!({"cpus": 1}),
        json!({"running_per_hour": 10.0}),
    )
    .await;
    let alice = s.user_token("alice", "member", None).await;
    put(
        &s,
        &s.admin,
        "/api/v1/quotas/users/alice",
        json!({"budget": 10, "budget_period": "day"}),
    )
    .await;
    create_running(&s, &alice, json!({"name": "a", "template": "paid"})).await;
    s.advance(Duration::from_secs(61 * 60));
    s.pass().await;
    assert_eq!(events(&s, "budget.exhausted").await.len(), 1);
    transition_ok(&s, &alice, "a", "stop").await;
    // The admin grants 10 more for the day; alice spends them too.
    let (st, o) = s
        .post(
            &s.admin,
            "/api/v1/quotas/users/alice/overrides",
            json!({"extra_budget": 10, "duration": "6h"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{o}");
    transition_ok(&s, &alice, "a", "start").await;
    // About 16.8 of 20: past 80% of the new limit.
    s.advance(Duration::from_secs(40 * 60));
    s.pass().await;
    s.pass().await;
    let warned = events(&s, "budget.warning").await;
    assert_eq!(warned.len(), 2, "a warning for the new limit: {warned:?}");
    assert_eq!(events(&s, "budget.exhausted").await.len(), 1);
    s.advance(Duration::from_secs(21 * 60));
    s.pass().await;
    s.pass().await;
    let exhausted = events(&s, "budget.exhausted").await;
    assert_eq!(
        exhausted.len(),
        2,
        "alerted again at the new limit: {exhausted:?}"
    );
    assert!(
        exhausted
            .iter()
            .any(|e| e.message.contains("of 20 cost units")),
        "{exhausted:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cannot_tell_other_teams_from_no_team() {
    let s = TestServer::start_fake_clock().await;
    let alice = s.user_token("alice", "member", None).await;
    s.user_token("bob", "member", None).await;
    s.post(&s.admin, "/api/v1/teams", json!({"name": "secret-project"}))
        .await;
    s.call(
        Some(&s.admin),
        Method::PUT,
        "/api/v1/teams/secret-project/members/bob",
        None,
    )
    .await;
    for tail in ["", "/overrides"] {
        let (st1, v1) = s
            .get(
                &alice,
                &format!("/api/v1/quotas/teams/secret-project{tail}"),
            )
            .await;
        let (st2, v2) = s
            .get(&alice, &format!("/api/v1/quotas/teams/no-such-team{tail}"))
            .await;
        assert_eq!(st1, StatusCode::FORBIDDEN, "{v1}");
        assert_eq!((st1, &v1), (st2, &v2), "the same refusal for both");
        // Admins and auditors do learn which exist.
        let (st, _) = s
            .get(
                &s.admin,
                &format!("/api/v1/quotas/teams/no-such-team{tail}"),
            )
            .await;
        assert_eq!(st, StatusCode::NOT_FOUND);
    }
    // Nor other users from no user, through the events of a named owner.
    let (st1, v1) = s.get(&alice, "/api/v1/events?owner=bob").await;
    let (st2, v2) = s.get(&alice, "/api/v1/events?owner=no-such-user").await;
    assert_eq!(st1, StatusCode::FORBIDDEN, "{v1}");
    assert_eq!((st1, &v1), (st2, &v2), "the same refusal for both");
    let (st, _) = s.get(&alice, "/api/v1/events?owner=alice").await;
    assert_eq!(st, StatusCode::OK);
    s.stop().await;
}
