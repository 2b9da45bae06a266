//! Cost reporting on a real server with a real workspace and a fake clock: a known timeline
//! (create, run 2 h with a server restart in the middle, stop 1 h, run 30 min across a UTC
//! midnight, stop, then an update to a template version with other rates) reported by day,
//! workspace, user, team and template, exactly; CSV; who sees what (owner, teammate, another
//! member, admin, auditor); bad input.

mod common;

use std::time::Duration;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const H: u64 = 3600;

async fn push(s: &TestServer, cost: Value) {
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/templates/c/versions",
            json!({
                "devcontainer": json!({"image": "busybox", "overrideCommand": true}).to_string(),
                "ceilings": {"cpus": 1, "memory_mb": 256},
                "cost": cost,
            }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

async fn step(s: &TestServer, token: &str, ws: &str, what: &str) {
    let (st, v) = s
        .post(token, &format!("/api/v1/workspaces/{ws}/{what}"), json!({}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{what}: {v}");
    let job = s.wait_job(token, v["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
}

async fn usage(s: &TestServer, token: &str, query: &str) -> Value {
    let (st, v) = s.get(token, &format!("/api/v1/usage?{query}")).await;
    assert_eq!(st, StatusCode::OK, "{query}: {v}");
    v
}

/// (name, hours running, hours stopped, cost) of each row.
fn rows(v: &Value) -> Vec<(String, f64, f64, f64)> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["hours_running"].as_f64().unwrap(),
                r["hours_stopped"].as_f64().unwrap(),
                r["cost"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn row(name: &str, running: f64, stopped: f64, cost: f64) -> (String, f64, f64, f64) {
    (name.to_owned(), running, stopped, cost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_is_exact_per_day_across_midnight_restarts_and_repricing() {
    let s = TestServer::start_fake_clock().await;
    s.clock
        .as_ref()
        .unwrap()
        .set(warren_store::clock::parse_time("2030-06-15T20:45:00Z").unwrap());
    s.import_busybox();
    push(
        &s,
        json!({"running_per_hour": 2.0, "stopped_per_hour": 0.5}),
    )
    .await;
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    let auditor = s.user_token("audrey", "auditor", None).await;
    s.post(&s.admin, "/api/v1/teams", json!({"name": "infra"}))
        .await;
    let carol = s.user_token("carol", "member", None).await;
    for who in ["alice", "carol"] {
        s.call(
            Some(&s.admin),
            Method::PUT,
            &format!("/api/v1/teams/infra/members/{who}"),
            None,
        )
        .await;
    }
    // 20:45 created and started (the fake clock stands still while it starts).
    s.create_workspace(&alice, "w", "c").await;
    // Run 2 h, with a server restart in the middle: no time is added or lost.
    s.advance(Duration::from_secs(H));
    let s = s.restart().await;
    s.advance(Duration::from_secs(H));
    step(&s, &alice, "w", "stop").await; // 22:45
    s.advance(Duration::from_secs(H));
    step(&s, &alice, "w", "start").await; // 23:45
    s.advance(Duration::from_secs(H / 2));
    step(&s, &alice, "w", "stop").await; // 00:15 the next day
    s.advance(Duration::from_secs(H * 3 / 4)); // now 01:00

    let range = "from=2030-06-15&to=2030-06-16";
    let by_day = usage(&s, &alice, &format!("group_by=day&{range}")).await;
    assert_eq!(
        rows(&by_day),
        [
            // 2 h + 15 min running at 2, 1 h stopped at 0.5.
            row("2030-06-15", 2.25, 1.0, 5.0),
            // 15 min running, 45 min stopped.
            row("2030-06-16", 0.25, 0.75, 0.875),
        ]
    );
    assert_eq!(by_day["total"]["cost"], 5.875);
    assert_eq!(by_day["from"], "2030-06-15T00:00:00.000Z");
    assert_eq!(by_day["to"], "2030-06-17T00:00:00.000Z");
    for (by, name) in [
        ("workspace", "w.alice"),
        ("user", "alice"),
        ("team", "infra"),
        ("template", "c"),
    ] {
        let v = usage(&s, &alice, &format!("group_by={by}&{range}")).await;
        assert_eq!(rows(&v), [row(name, 2.5, 1.75, 5.875)], "{by}");
    }
    // One day only; RFC 3339 bounds.
    let v = usage(
        &s,
        &alice,
        "group_by=user&from=2030-06-15T23:00:00Z&to=2030-06-16T00:00:00Z",
    )
    .await;
    assert_eq!(rows(&v), [row("alice", 0.25, 0.75, 0.875)]);

    // CSV.
    let resp = s
        .http
        .get(format!(
            "{}/api/v1/usage?group_by=day&{range}&format=csv",
            s.url
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(
        resp.text().await.unwrap(),
        "day,id,hours_running,hours_stopped,cost\n\
         2030-06-15,2030-06-15,2.25,1,5\n\
         2030-06-16,2030-06-16,0.25,0.75,0.875\n"
    );

    // Who sees what: bob sees none of alice's usage, by any grouping; admins and auditors do.
    for by in ["workspace", "user", "team", "template", "day"] {
        let v = usage(&s, &bob, &format!("group_by={by}&{range}")).await;
        assert_eq!(rows(&v), [], "{by}");
    }
    // A teammate sees the team's usage by team, and nobody's by anything else.
    let v = usage(&s, &carol, &format!("group_by=team&{range}")).await;
    assert_eq!(rows(&v), [row("infra", 2.5, 1.75, 5.875)]);
    let v = usage(&s, &carol, &format!("group_by=user&{range}")).await;
    assert_eq!(rows(&v), []);
    for t in [&s.admin, &auditor] {
        let v = usage(&s, t, &format!("group_by=user&{range}")).await;
        assert_eq!(rows(&v), [row("alice", 2.5, 1.75, 5.875)]);
    }

    // Moving to a version with other rates re-prices from that instant: the update rebuilds and
    // starts it at 01:00, then it runs 1 h at 4.
    push(
        &s,
        json!({"running_per_hour": 4.0, "stopped_per_hour": 1.0}),
    )
    .await;
    let (st, v) = s
        .call(
            Some(&alice),
            Method::PATCH,
            "/api/v1/workspaces/w",
            Some(json!({"template_version": 2})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let job = s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    s.advance(Duration::from_secs(H));
    let v = usage(&s, &alice, "group_by=day&from=2030-06-16&to=2030-06-16").await;
    assert_eq!(rows(&v), [row("2030-06-16", 1.25, 0.75, 4.875)]);

    // Bad input names the field.
    for (q, field) in [
        ("group_by=owner", "`group_by`"),
        ("from=yesterday", "`from`"),
        ("to=2030-13-01", "`to`"),
        ("format=xml", "`format`"),
        ("from=2030-06-16&to=2030-06-15", "`from`"),
        ("colour=red", "colour"),
    ] {
        let (st, v) = s.get(&alice, &format!("/api/v1/usage?{q}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert_eq!(v["code"], "invalid_request", "{q}");
        assert!(v["message"].as_str().unwrap().contains(field), "{q}: {v}");
    }
    s.stop().await;
}

/// An uploaded folder (what `warren up DIR` sends): busybox, no template, no `cost`.
fn folder_tar() -> Vec<u8> {
    let dc = json!({"image": "busybox", "overrideCommand": true}).to_string();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(dc.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, ".devcontainer/devcontainer.json", dc.as_bytes())
        .unwrap();
    b.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspaces_without_a_declared_cost_pay_the_server_default() {
    let s = TestServer::start_fake_clock_with(warren_server::config::ConfigLayer {
        default_running_cost: Some(3.0),
        default_stopped_cost: Some(1.0),
        ..Default::default()
    })
    .await;
    s.clock
        .as_ref()
        .unwrap()
        .set(warren_store::clock::parse_time("2030-06-12T10:00:00Z").unwrap());
    s.import_busybox();
    let alice = s.user_token("alice", "member", None).await;
    // An uploaded folder: an ad-hoc version without `cost`.
    let resp = s
        .http
        .post(format!("{}/api/v1/files", s.url))
        .bearer_auth(&alice)
        .header("content-type", "application/x-tar")
        .body(folder_tar())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let file: Value = resp.json().await.unwrap();
    let (st, v) = s
        .post(
            &alice,
            "/api/v1/workspaces",
            json!({"name": "up", "file_id": file["id"]}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let job = s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // A template that declares no cost pays the same; one declaring 0 is free by choice.
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/templates/nocost/versions",
            json!({"devcontainer": json!({"image": "busybox", "overrideCommand": true}).to_string()}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    s.create_workspace(&alice, "t", "nocost").await;
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/templates/free/versions",
            json!({"devcontainer": json!({"image": "busybox", "overrideCommand": true}).to_string(),
                   "cost": {"running_per_hour": 0}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    s.create_workspace(&alice, "f", "free").await;
    s.advance(Duration::from_secs(H));
    step(&s, &alice, "up", "stop").await;
    s.advance(Duration::from_secs(H));
    let v = usage(&s, &alice, "group_by=workspace").await;
    assert_eq!(
        rows(&v),
        [
            row("f.alice", 2.0, 0.0, 0.0),
            row("t.alice", 2.0, 0.0, 6.0),
            // 1 h running at 3, 1 h stopped at 1.
            row("up.alice", 1.0, 1.0, 4.0),
        ]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_off_dates_and_long_ranges_are_refused_not_a_panic() {
    let s = TestServer::start().await;
    let alice = s.user_token("alice", "member", None).await;
    for (q, field) in [
        ("to=9999-12-31", "`to`"),
        ("from=9999-12-30&to=9999-12-31T23:00:00-05:00", "`from`"),
        ("to=9999-12-31T23:00:00-05:00", "`to`"),
        (
            "group_by=day&from=9999-12-31&to=9999-12-31T23:59:59Z",
            "`from`",
        ),
        ("from=0001-01-01", "`from`"),
        ("from=1969-12-31T23:00:00Z", "`from`"),
        ("from=2029-01-01&to=2030-06-16", "400 days"),
    ] {
        let (st, v) = s.get(&alice, &format!("/api/v1/usage?{q}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert_eq!(v["code"], "invalid_request", "{q}");
        assert!(v["message"].as_str().unwrap().contains(field), "{q}: {v}");
        assert!(v["hint"].is_string(), "{q}: {v}");
    }
    // 400 days is fine.
    let (st, v) = s
        .get(&alice, "/api/v1/usage?from=2029-01-01&to=2030-02-04")
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    for at in ["9999-12-31T23:00:00-05:00", "9999-12-31T23:59:59Z"] {
        let (st, v) = s
            .post(
                &s.admin,
                "/api/v1/quotas/users/alice/overrides",
                json!({"extra_budget": 1, "expires_at": at}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{at}: {v}");
        assert_eq!(v["code"], "invalid_request");
        assert!(
            v["message"].as_str().unwrap().contains("`expires_at`"),
            "{v}"
        );
    }
    // The server still answers.
    let (st, _) = s.get(&alice, "/api/v1/me/quota").await;
    assert_eq!(st, StatusCode::OK);
    s.stop().await;
}
