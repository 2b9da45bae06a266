//! Outgoing webhooks against a real server and a real HTTP receiver on 127.0.0.1 (axum), which
//! records every request and checks its signature with the `hmac` crate (not the server's code).
//! Retries are driven by the server's fake clock: the tests move time instead of waiting out
//! backoffs. Real time passes only for the worker's one-second tick.

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use common::TestServer;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use warren_store::NewEvent;

const SECRET: &str = "a-test-secret-of-enough-length";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    headers: HeaderMap,
    body: Vec<u8>,
    answered: u16,
}

impl Hit {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn kind(&self) -> String {
        self.json()["kind"].as_str().unwrap_or_default().to_owned()
    }
}

#[derive(Clone, Default)]
struct Recorder {
    hits: Arc<Mutex<Vec<Hit>>>,
    /// Statuses to answer, in order; 200 once it is empty.
    script: Arc<Mutex<VecDeque<u16>>>,
    /// The `Location` of 3xx answers.
    location: Arc<Mutex<String>>,
}

async fn record(
    State(r): State<Recorder>,
    headers: HeaderMap,
    body: Bytes,
) -> (AxStatus, [(&'static str, String); 1]) {
    let answered = r.script.lock().unwrap().pop_front().unwrap_or(200);
    r.hits.lock().unwrap().push(Hit {
        headers,
        body: body.to_vec(),
        answered,
    });
    let location = r.location.lock().unwrap().clone();
    (
        AxStatus::from_u16(answered).unwrap(),
        [("location", location)],
    )
}

/// A receiver listening on 127.0.0.1.
struct Receiver {
    url: String,
    rec: Recorder,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(script: &[u16]) -> Receiver {
        Self::start_on("127.0.0.1:0", script).await
    }

    async fn start_on(addr: &str, script: &[u16]) -> Receiver {
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let rec = Recorder::default();
        rec.script.lock().unwrap().extend(script.iter().copied());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(record))
            .with_state(rec.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        Receiver { url, rec, task }
    }

    fn hits(&self) -> Vec<Hit> {
        self.rec.hits.lock().unwrap().clone()
    }

    /// Waits (real time, at most 20 s) until `n` requests arrived; returns them.
    async fn wait_for(&self, n: usize) -> Vec<Hit> {
        for _ in 0..400 {
            let h = self.hits();
            if h.len() >= n {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the receiver got {} request(s), not {n}", self.hits().len());
    }

    /// Checks that no more than `n` requests arrive over a few of the worker's ticks.
    async fn stays_at(&self, n: usize) {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let h = self.hits();
        assert_eq!(
            h.len(),
            n,
            "unexpected requests: {:?}",
            h.iter().map(Hit::kind).collect::<Vec<_>>()
        );
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks a request's signature with the secret, as a receiver would: recompute the HMAC of
/// `t.body` and compare in constant time (`verify_slice`).
fn verify(hit: &Hit, secret: &str) -> i64 {
    let sig = hit.header("warren-signature");
    let mut t = None;
    let mut v1 = None;
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = x.parse::<i64>().ok(),
            Some(("v1", x)) => v1 = hex::decode(x).ok(),
            _ => {}
        }
    }
    let (t, v1) = (t.expect("t="), v1.expect("v1="));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&hit.body);
    assert!(
        mac.verify_slice(&v1).is_ok(),
        "bad signature {sig} on {}",
        String::from_utf8_lossy(&hit.body)
    );
    // The same body under another secret does not verify.
    let mut other = Hmac::<sha2::Sha256>::new_from_slice(b"another secret!!").unwrap();
    other.update(format!("{t}.").as_bytes());
    other.update(&hit.body);
    assert!(other.verify_slice(&v1).is_err());
    t
}

async fn add_hook(s: &TestServer, url: &str, events: Value) -> Value {
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/webhooks",
            json!({"url": url, "events": events, "secret": SECRET}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    v["webhook"].clone()
}

fn event(kind: &str, ws: Option<(&str, &str)>) -> NewEvent {
    NewEvent {
        kind: kind.into(),
        workspace_id: ws.map(|w| w.0.to_owned()),
        workspace_name: ws.map(|w| w.1.to_owned()),
        owner_id: Some("u-1".into()),
        reason: Some("test".into()),
        message: format!("{kind} happened"),
        data: json!({"n": kind.len()}),
        ..Default::default()
    }
}

async fn insert(s: &TestServer, kind: &str) -> i64 {
    s.state
        .store
        .insert_event(&event(kind, Some(("ws-id-1", "w1"))))
        .await
        .unwrap()
        .unwrap()
        .id
}

async fn deliveries(s: &TestServer, hook: &Value) -> Vec<Value> {
    let id = hook["id"].as_str().unwrap();
    let (st, v) = s
        .get(&s.admin, &format!("/api/v1/webhooks/{id}/deliveries"))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v.as_array().unwrap().clone()
}

/// Waits (real time) until the server has recorded `n` attempts that ended with `outcome`
/// (`delivered`, `retried`, `failed`), so that the clock is moved only after a retry's time
/// was computed.
async fn wait_outcomes(s: &TestServer, outcome: &str, n: u64) {
    let counter = s
        .state
        .metrics
        .webhook_deliveries
        .get_or_create(&warren_server::metrics::OutcomeLabels {
            outcome: outcome.to_owned(),
        })
        .clone();
    for _ in 0..400 {
        if counter.get() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} `{outcome}` attempt(s) recorded, not {n}", counter.get());
}

/// Seconds from the store clock's now to `at`.
fn secs_until(s: &TestServer, at: &Value) -> f64 {
    let at = warren_store::clock::parse_time(at.as_str().unwrap()).unwrap();
    (at - s.state.store.now_time()).as_seconds_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_in_order_and_filtered() {
    let s = TestServer::start().await;
    let ws_rx = Receiver::start(&[]).await;
    let budget_rx = Receiver::start(&[]).await;
    // Events recorded before a webhook existed are not sent to it.
    let before = insert(&s, "workspace.created").await;
    let ws_hook = add_hook(&s, &ws_rx.url, json!(["workspace.*"])).await;
    let budget_hook = add_hook(&s, &budget_rx.url, json!(["budget.*"])).await;
    assert_eq!(ws_hook["events"], json!(["workspace.*"]));
    assert_eq!(ws_hook["cursor"].as_i64(), Some(before));

    let kinds = [
        "workspace.started",
        "budget.warning",
        "workspace.stop_warning",
        "workspace.stopped",
    ];
    let mut ids = Vec::new();
    for k in kinds {
        ids.push(insert(&s, k).await);
    }
    let hits = ws_rx.wait_for(3).await;
    let seen: Vec<String> = hits.iter().map(Hit::kind).collect();
    assert_eq!(
        seen,
        [
            "workspace.started",
            "workspace.stop_warning",
            "workspace.stopped"
        ]
    );
    let sent_ids: Vec<i64> = hits
        .iter()
        .map(|h| h.json()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(sent_ids, [ids[0], ids[2], ids[3]]);
    for h in &hits {
        let t = verify(h, SECRET);
        let now = s.state.store.now_time().unix_timestamp();
        assert!((now - t).abs() < 120, "t={t} now={now}");
        assert_eq!(h.header("content-type"), "application/json");
        assert_eq!(
            h.header("user-agent"),
            format!("warren-webhooks/{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(h.header("warren-event"), h.kind());
        assert_eq!(h.header("warren-delivery").len(), 32);
    }
    let body = hits[2].json();
    assert_eq!(body["workspace"], json!({"id": "ws-id-1", "name": "w1"}));
    assert_eq!(body["owner_id"], "u-1");
    assert_eq!(body["reason"], "test");
    assert_eq!(body["message"], "workspace.stopped happened");
    assert_eq!(body["data"], json!({"n": 17}));
    assert!(body["at"].is_string() && body["team_id"].is_null() && body["actor_id"].is_null());

    // The budget hook got the budget event only.
    let b = budget_rx.wait_for(1).await;
    assert_eq!(b[0].kind(), "budget.warning");
    verify(&b[0], SECRET);
    budget_rx.stays_at(1).await;
    ws_rx.stays_at(3).await;
    let d = deliveries(&s, &budget_hook).await;
    assert_eq!(d.len(), 1);
    assert_eq!(
        (d[0]["kind"].as_str(), d[0]["event_id"].as_i64()),
        (Some("budget.warning"), Some(ids[1]))
    );

    // The deliveries API agrees: newest first, delivered on the first attempt.
    let d = deliveries(&s, &ws_hook).await;
    let rows: Vec<(i64, &str, i64, i64)> = d
        .iter()
        .map(|d| {
            (
                d["event_id"].as_i64().unwrap(),
                d["status"].as_str().unwrap(),
                d["attempts"].as_i64().unwrap(),
                d["last_status_code"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (ids[3], "delivered", 1, 200),
            (ids[2], "delivered", 1, 200),
            (ids[0], "delivered", 1, 200)
        ]
    );
    assert_eq!(
        d[0]["id"].as_str().unwrap(),
        hits[2].header("warren-delivery")
    );
    assert!(d[0]["next_attempt_at"].is_null() && d[0]["delivered_at"].is_string());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_workspace_transition_reaches_the_hook() {
    let s = TestServer::start().await;
    s.import_busybox();
    s.push_template("tiny", json!({"image": "busybox", "overrideCommand": true}))
        .await;
    let rx = Receiver::start(&[]).await;
    add_hook(
        &s,
        &rx.url,
        json!(["workspace.created", "workspace.started"]),
    )
    .await;
    s.create_workspace(&s.admin, "hooked", "tiny").await;
    let hits = rx.wait_for(2).await;
    let kinds: Vec<String> = hits.iter().map(Hit::kind).collect();
    assert_eq!(kinds, ["workspace.created", "workspace.started"]);
    for h in &hits {
        verify(h, SECRET);
        let body = h.json();
        assert_eq!(body["workspace"]["name"], "hooked");
        assert!(body["workspace"]["id"].as_str().unwrap().len() == 32);
    }
    let (_, me) = s.get(&s.admin, "/api/v1/me").await;
    assert_eq!(hits[1].json()["owner_id"], me["user"]["id"]);
    assert_eq!(hits[1].json()["data"]["to"], "running");
    rx.stays_at(2).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_is_retried_with_backoff_in_order_without_blocking_others() {
    let s = TestServer::start_fake_clock().await;
    let flaky = Receiver::start(&[500, 503]).await;
    let healthy = Receiver::start(&[]).await;
    let hook = add_hook(&s, &flaky.url, json!(["*"])).await;
    add_hook(&s, &healthy.url, json!(["*"])).await;
    let e1 = insert(&s, "workspace.stopped").await;
    let e2 = insert(&s, "workspace.deleted").await;

    // The healthy hook gets both at once, whatever the flaky one does.
    let ok = healthy.wait_for(2).await;
    assert_eq!(
        ok.iter().map(Hit::kind).collect::<Vec<_>>(),
        ["workspace.stopped", "workspace.deleted"]
    );

    // First attempt: 500. The second event waits behind the first.
    let h = flaky.wait_for(1).await;
    assert_eq!(
        (h[0].kind().as_str(), h[0].answered),
        ("workspace.stopped", 500)
    );
    wait_outcomes(&s, "retried", 1).await;
    flaky.stays_at(1).await;
    let d = deliveries(&s, &hook).await;
    let first = d.iter().find(|d| d["event_id"] == e1).unwrap();
    assert_eq!(first["status"], "pending");
    assert_eq!(first["attempts"], 1);
    assert_eq!(first["last_status_code"], 500);
    assert!(
        first["last_error"].as_str().unwrap().contains("500"),
        "{first}"
    );
    let wait = secs_until(&s, &first["next_attempt_at"]);
    assert!((7.9..=10.1).contains(&wait), "first backoff {wait}");

    // Not yet due after 5 s; due after 11.
    s.advance(Duration::from_secs(5));
    flaky.stays_at(1).await;
    s.advance(Duration::from_secs(6));
    let h = flaky.wait_for(2).await;
    assert_eq!(
        (h[1].kind().as_str(), h[1].answered),
        ("workspace.stopped", 503)
    );
    wait_outcomes(&s, "retried", 2).await;
    let d = deliveries(&s, &hook).await;
    let first = d.iter().find(|d| d["event_id"] == e1).unwrap();
    let wait = secs_until(&s, &first["next_attempt_at"]);
    assert!((15.9..=20.1).contains(&wait), "second backoff {wait}");
    s.advance(Duration::from_secs(12));
    flaky.stays_at(2).await;
    s.advance(Duration::from_secs(9));
    // Third attempt succeeds, and the second event follows at once.
    let h = flaky.wait_for(4).await;
    let seen: Vec<(String, u16)> = h.iter().map(|h| (h.kind(), h.answered)).collect();
    assert_eq!(
        seen,
        [
            ("workspace.stopped".to_string(), 500),
            ("workspace.stopped".to_string(), 503),
            ("workspace.stopped".to_string(), 200),
            ("workspace.deleted".to_string(), 200)
        ]
    );
    // Every attempt of one delivery carries the same delivery id; each is signed anew.
    let id = h[0].header("warren-delivery");
    assert!(h[..3].iter().all(|x| x.header("warren-delivery") == id));
    assert_ne!(h[3].header("warren-delivery"), id);
    for x in &h {
        verify(x, SECRET);
    }
    flaky.stays_at(4).await;
    let d = deliveries(&s, &hook).await;
    let rows: Vec<(i64, &str, i64)> = d
        .iter()
        .map(|d| {
            (
                d["event_id"].as_i64().unwrap(),
                d["status"].as_str().unwrap(),
                d["attempts"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [(e2, "delivered", 1), (e1, "delivered", 3)]);
    assert!(d[1]["last_error"].is_null());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_at_first_gets_the_delivery_when_it_comes_up() {
    let s = TestServer::start_fake_clock().await;
    // A port nobody listens on (for now).
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let hook = add_hook(&s, &format!("http://{addr}/hook"), json!(["*"])).await;
    insert(&s, "workspace.failed").await;
    let mut first = None;
    for _ in 0..200 {
        let d = deliveries(&s, &hook).await;
        if d.first()
            .is_some_and(|d| d["attempts"] == 1 && d["last_error"].is_string())
        {
            first = Some(d[0].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = first.expect("a first attempt");
    assert_eq!(first["status"], "pending");
    assert!(first["last_status_code"].is_null());
    assert!(
        first["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{first}"
    );
    let rx = Receiver::start_on(&addr.to_string(), &[]).await;
    s.advance(Duration::from_secs(11));
    let h = rx.wait_for(1).await;
    assert_eq!(h[0].kind(), "workspace.failed");
    verify(&h[0], SECRET);
    rx.stays_at(1).await;
    let d = deliveries(&s, &hook).await;
    assert_eq!(
        (d[0]["status"].as_str(), d[0]["attempts"].as_i64()),
        (Some("delivered"), Some(2))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_keeps_failing_is_given_up_after_twelve_attempts() {
    let s = TestServer::start_fake_clock().await;
    let rx = Receiver::start(&[500; 20]).await;
    let hook = add_hook(&s, &rx.url, json!(["budget.exhausted"])).await;
    insert(&s, "budget.exhausted").await;
    for n in 1..=11 {
        rx.wait_for(n).await;
        wait_outcomes(&s, "retried", n as u64).await;
        // Backoffs never exceed an hour.
        s.advance(Duration::from_secs(3601));
    }
    rx.wait_for(12).await;
    wait_outcomes(&s, "failed", 1).await;
    s.advance(Duration::from_secs(3601));
    // Given up: the webhook is disabled, later events are not queued for it.
    insert(&s, "budget.exhausted").await;
    rx.stays_at(12).await;
    let id = hook["id"].as_str().unwrap();
    let (_, h) = s.get(&s.admin, &format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(h["disabled"], true, "{h}");
    assert_eq!(h["pending"], 0, "{h}");
    let (_, ev) = s
        .get(&s.admin, "/api/v1/events?owner=all&kind=webhook.disabled")
        .await;
    let ev = ev["events"].as_array().unwrap().clone();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert!(
        ev[0]["message"]
            .as_str()
            .unwrap()
            .contains("failed 12 times"),
        "{ev:?}"
    );
    let d = deliveries(&s, &hook).await;
    assert_eq!(d[0]["status"], "failed");
    assert_eq!(d[0]["attempts"], 12);
    assert!(d[0]["next_attempt_at"].is_null());
    assert!(
        d[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("gave up after 12 attempts"),
        "{}",
        d[0]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_delivery_survives_a_server_restart() {
    let s = TestServer::start_fake_clock().await;
    let rx = Receiver::start(&[502]).await;
    let hook = add_hook(&s, &rx.url, json!(["workspace.*"])).await;
    insert(&s, "workspace.stop_warning").await;
    rx.wait_for(1).await;
    wait_outcomes(&s, "retried", 1).await;
    let s = s.restart().await;
    // Queued while the receiver still fails: after the restart, both go out in order.
    insert(&s, "workspace.stopped").await;
    rx.stays_at(1).await;
    s.advance(Duration::from_secs(11));
    let h = rx.wait_for(3).await;
    let seen: Vec<(String, u16)> = h.iter().map(|h| (h.kind(), h.answered)).collect();
    assert_eq!(
        seen,
        [
            ("workspace.stop_warning".to_string(), 502),
            ("workspace.stop_warning".to_string(), 200),
            ("workspace.stopped".to_string(), 200)
        ]
    );
    assert_eq!(
        h[0].header("warren-delivery"),
        h[1].header("warren-delivery")
    );
    rx.stays_at(3).await;
    let d = deliveries(&s, &hook).await;
    assert!(d.iter().all(|d| d["status"] == "delivered"), "{d:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_endpoint_sends_to_that_hook_only() {
    let s = TestServer::start().await;
    let a = Receiver::start(&[]).await;
    let b = Receiver::start(&[]).await;
    let hook = add_hook(&s, &a.url, json!(["*"])).await;
    add_hook(&s, &b.url, json!(["*"])).await;
    let id = hook["id"].as_str().unwrap();
    let (st, v) = s
        .post(&s.admin, &format!("/api/v1/webhooks/{id}/test"), json!({}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let h = a.wait_for(1).await;
    assert_eq!(h[0].kind(), "webhook.test");
    assert_eq!(h[0].header("warren-event"), "webhook.test");
    assert_eq!(
        h[0].header("warren-delivery"),
        v["delivery_id"].as_str().unwrap()
    );
    assert_eq!(h[0].json()["id"], v["event_id"]);
    assert_eq!(h[0].json()["data"]["webhook_id"], id);
    assert!(h[0].json()["workspace"].is_null());
    verify(&h[0], SECRET);
    b.stays_at(0).await;
    a.stays_at(1).await;
    // Unknown webhooks are 404.
    let (st, v) = s
        .post(&s.admin, "/api/v1/webhooks/nope/test", json!({}))
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_hook_gets_nothing_more() {
    let s = TestServer::start_fake_clock().await;
    let rx = Receiver::start(&[500]).await;
    let hook = add_hook(&s, &rx.url, json!(["*"])).await;
    let id = hook["id"].as_str().unwrap();
    insert(&s, "workspace.started").await;
    rx.wait_for(1).await;
    wait_outcomes(&s, "retried", 1).await;
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::DELETE,
            &format!("/api/v1/webhooks/{id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    // Neither the pending retry nor new events go out.
    insert(&s, "workspace.stopped").await;
    s.advance(Duration::from_secs(3600));
    rx.stays_at(1).await;
    for path in [
        format!("/api/v1/webhooks/{id}"),
        format!("/api/v1/webhooks/{id}/deliveries"),
    ] {
        let (st, _) = s.get(&s.admin, &path).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}");
    }
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::DELETE,
            &format!("/api/v1/webhooks/{id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_shown_once_and_never_listed() {
    let s = TestServer::start().await;
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/webhooks",
            json!({"url": "https://hooks.example.com/warren"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let secret = v["secret"].as_str().unwrap();
    assert_eq!(secret.len(), 64);
    assert!(hex::decode(secret).is_ok());
    assert_eq!(v["webhook"]["name"], "hooks.example.com");
    assert_eq!(v["webhook"]["events"], json!(["*"]));
    let id = v["webhook"]["id"].as_str().unwrap();
    let (_, one) = s.get(&s.admin, &format!("/api/v1/webhooks/{id}")).await;
    let (_, list) = s.get(&s.admin, "/api/v1/webhooks").await;
    for v in [&one, &list] {
        assert!(!v.to_string().contains(secret), "{v}");
        assert!(!v.to_string().contains("secret"), "{v}");
    }
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Nor in the audit log.
    let (_, audit) = s.get(&s.admin, "/api/v1/audit?action=webhook.*").await;
    assert!(audit.to_string().contains("webhook.create"), "{audit}");
    assert!(!audit.to_string().contains(secret));
    // Two secrets made by the server differ.
    let (_, v2) = s
        .post(
            &s.admin,
            "/api/v1/webhooks",
            json!({"url": "https://h2.example.com/"}),
        )
        .await;
    assert_ne!(v2["secret"], v["secret"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_are_refused_naming_the_field() {
    let s = TestServer::start().await;
    let ok = "https://hooks.example.com/x";
    let cases = [
        (json!({"url": "ftp://example.com/x"}), "`url`", "ftp"),
        (
            json!({"url": "/relative/path"}),
            "`url`",
            "not an absolute URL",
        ),
        (
            json!({"url": "hooks.example.com/x"}),
            "`url`",
            "not an absolute URL",
        ),
        (
            json!({"url": "https://user:pass@example.com/x"}),
            "`url`",
            "credentials",
        ),
        (json!({"url": "file:///etc/passwd"}), "`url`", "file"),
        (
            json!({"url": ok, "events": ["foo.*"]}),
            "`events`",
            "`foo.*`",
        ),
        (
            json!({"url": ok, "events": ["workspace.stoped"]}),
            "`events`",
            "`workspace.stoped`",
        ),
        (
            json!({"url": ok, "events": ["workspace.*", "work*"]}),
            "`events`",
            "`work*`",
        ),
        (json!({"url": ok, "events": []}), "`events`", "at least one"),
        (
            json!({"url": ok, "secret": "short"}),
            "`secret`",
            "16 to 256",
        ),
        (
            json!({"url": ok, "secret": "has spaces in it, many"}),
            "`secret`",
            "without spaces",
        ),
        (json!({"url": ok, "name": ""}), "`name`", "1 to 100"),
        (
            json!({"url": ok, "frobnicate": 1}),
            "frobnicate",
            "unknown field",
        ),
        (json!({"url": 5}), "url", "expected a string"),
        (json!({"events": ["*"]}), "url", "missing field"),
    ];
    for (body, field, needle) in cases {
        let (st, v) = s.post(&s.admin, "/api/v1/webhooks", body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["code"], "invalid_request", "{body}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains(field) && msg.contains(needle), "{body}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            v["hint"].as_str().is_some_and(|h| !h.is_empty()),
            "{body}: {v}"
        );
    }
    let (_, list) = s.get(&s.admin, "/api/v1/webhooks").await;
    assert_eq!(list, json!([]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_owners_and_admins_manage_webhooks_and_auditors_read_them() {
    let s = TestServer::start().await;
    let hook = add_hook(&s, "https://hooks.example.com/x", json!(["*"])).await;
    let id = hook["id"].as_str().unwrap().to_owned();
    let admin = s.user_token("wh-admin", "admin", None).await;
    let auditor = s.user_token("wh-auditor", "auditor", None).await;
    let member = s.user_token("wh-member", "member", None).await;
    let tadmin = s.user_token("wh-tadmin", "template-admin", None).await;
    let new = json!({"url": "https://hooks.example.com/y"});
    let reads = [
        "/api/v1/webhooks".to_owned(),
        format!("/api/v1/webhooks/{id}"),
        format!("/api/v1/webhooks/{id}/deliveries"),
    ];
    for (who, t, may_read, may_write) in [
        ("admin", &admin, true, true),
        ("auditor", &auditor, true, false),
        ("member", &member, false, false),
        ("template-admin", &tadmin, false, false),
    ] {
        for p in &reads {
            let (st, v) = s.get(t, p).await;
            let want = if may_read {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(st, want, "{who} GET {p}: {v}");
        }
        let want = if may_write {
            StatusCode::CREATED
        } else {
            StatusCode::FORBIDDEN
        };
        let (st, v) = s.post(t, "/api/v1/webhooks", new.clone()).await;
        assert_eq!(st, want, "{who} POST: {v}");
        if !may_write {
            let want = StatusCode::FORBIDDEN;
            let (st, _) = s
                .post(t, &format!("/api/v1/webhooks/{id}/test"), json!({}))
                .await;
            assert_eq!(st, want, "{who} test");
            let (st, _) = s
                .call(
                    Some(t),
                    Method::DELETE,
                    &format!("/api/v1/webhooks/{id}"),
                    None,
                )
                .await;
            assert_eq!(st, want, "{who} DELETE");
        }
    }
    // An admin's token without the admin scope may read (audit:read) but not manage.
    let narrow = s
        .token_for("wh-admin", Some(&["workspace:read", "audit:read"]))
        .await;
    assert_eq!(s.get(&narrow, "/api/v1/webhooks").await.0, StatusCode::OK);
    assert_eq!(
        s.post(&narrow, "/api/v1/webhooks", new.clone()).await.0,
        StatusCode::FORBIDDEN
    );
    // No token: 401.
    let (st, _) = s.call(None, Method::GET, "/api/v1/webhooks", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    s.stop().await;
}

/// A receiver that answers with a redirect does not get its event delivered elsewhere: the
/// redirect is not followed (the target receives nothing) and the delivery is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let s = TestServer::start_fake_clock().await;
    let elsewhere = Receiver::start(&[]).await;
    let redirecting = Receiver::start(&[302, 307]).await;
    *redirecting.rec.location.lock().unwrap() = elsewhere.url.clone();
    let hook = add_hook(&s, &redirecting.url, json!(["*"])).await;
    insert(&s, "workspace.deleting").await;
    redirecting.wait_for(1).await;
    wait_outcomes(&s, "retried", 1).await;
    let d = deliveries(&s, &hook).await;
    assert_eq!(d[0]["status"], "pending");
    assert_eq!(d[0]["last_status_code"], 302);
    assert!(
        d[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed"),
        "{}",
        d[0]
    );
    s.advance(Duration::from_secs(11));
    redirecting.wait_for(2).await;
    wait_outcomes(&s, "retried", 2).await;
    s.advance(Duration::from_secs(21));
    let h = redirecting.wait_for(3).await;
    assert_eq!(h[2].answered, 200);
    elsewhere.stays_at(0).await;
    s.stop().await;
}

async fn patch(s: &TestServer, token: &str, hook: &Value, body: Value) -> (StatusCode, Value) {
    let id = hook["id"].as_str().unwrap();
    s.call(
        Some(token),
        Method::PATCH,
        &format!("/api/v1/webhooks/{id}"),
        Some(body),
    )
    .await
}

async fn hook_now(s: &TestServer, hook: &Value) -> Value {
    let id = hook["id"].as_str().unwrap();
    s.get(&s.admin, &format!("/api/v1/webhooks/{id}")).await.1
}

/// Kinds of the requests answered 2xx, in order.
fn delivered_kinds(rx: &Receiver) -> Vec<String> {
    rx.hits()
        .iter()
        .filter(|h| h.answered < 300)
        .map(Hit::kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_old_backlog_disables_the_hook_and_an_admin_resumes_or_skips_it() {
    let s = TestServer::start_fake_clock().await;
    let rx = Receiver::start(&[500; 100]).await;
    let watcher = Receiver::start(&[]).await;
    let hook = add_hook(&s, &rx.url, json!(["*"])).await;
    let watch = add_hook(&s, &watcher.url, json!(["webhook.disabled"])).await;
    insert(&s, "workspace.started").await;
    rx.wait_for(1).await;
    wait_outcomes(&s, "retried", 1).await;
    // A day later it is still not delivered: disabled, and the other webhook hears of it.
    s.advance(Duration::from_secs(25 * 3600));
    let hits = watcher.wait_for(1).await;
    assert_eq!(hits[0].kind(), "webhook.disabled");
    assert_eq!(hits[0].json()["data"]["webhook_id"], hook["id"]);
    assert!(
        hits[0].json()["message"]
            .as_str()
            .unwrap()
            .contains("more than 24 hours old"),
        "{}",
        hits[0].json()
    );
    let h = hook_now(&s, &hook).await;
    assert_eq!(h["disabled"], true, "{h}");
    // Admins see the event; a member does not.
    let member = s.user_token("wh-m", "member", None).await;
    let (_, all) = s
        .get(&s.admin, "/api/v1/events?owner=all&kind=webhook.")
        .await;
    assert_eq!(all["events"].as_array().unwrap().len(), 1, "{all}");
    let (_, mine) = s.get(&member, "/api/v1/events?kind=webhook.").await;
    assert_eq!(mine["events"].as_array().unwrap().len(), 0, "{mine}");
    // Meanwhile the receiver recovers and more happens; nothing is sent while disabled.
    rx.rec.script.lock().unwrap().clear();
    let before = rx.hits().len();
    insert(&s, "workspace.stopped").await;
    rx.stays_at(before).await;
    // Only admins enable it; enabled, the backlog follows in order, without the event of its
    // own disabling.
    let auditor = s.user_token("wh-a", "auditor", None).await;
    let (st, _) = patch(&s, &auditor, &hook, json!({"disabled": false})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, h) = patch(&s, &s.admin, &hook, json!({"disabled": false})).await;
    assert_eq!(st, StatusCode::OK, "{h}");
    assert_eq!(h["disabled"], false);
    for _ in 0..200 {
        if delivered_kinds(&rx).len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        delivered_kinds(&rx),
        ["workspace.started", "workspace.stopped"],
        "{:?} {:?}",
        rx.hits()
            .iter()
            .map(|h| (h.kind(), h.answered))
            .collect::<Vec<_>>(),
        deliveries(&s, &hook).await
    );
    // Disabled by hand, then enabled skipping the backlog: what happened meanwhile is dropped.
    let (st, h) = patch(&s, &s.admin, &hook, json!({"disabled": true})).await;
    assert_eq!((st, &h["disabled"]), (StatusCode::OK, &json!(true)), "{h}");
    insert(&s, "workspace.deleted").await;
    let (st, h) = patch(
        &s,
        &s.admin,
        &hook,
        json!({"disabled": false, "skip_backlog": true}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{h}");
    assert_eq!(h["pending"], 0, "{h}");
    rx.stays_at(rx.hits().len()).await;
    assert_eq!(delivered_kinds(&rx).len(), 2);
    // The watcher heard of one disabling only (a hand-made one is an admin's, not an alert).
    assert_eq!(watcher.hits().len(), 1);
    // Bad input.
    for (body, needle) in [
        (
            json!({"disabled": true, "skip_backlog": true}),
            "`skip_backlog`",
        ),
        (json!({}), "disabled"),
        (json!({"disabled": "no"}), "disabled"),
        (json!({"disabled": false, "colour": 1}), "colour"),
    ] {
        let (st, v) = patch(&s, &s.admin, &hook, body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["code"], "invalid_request", "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{body}: {v}"
        );
    }
    let (st, _) = patch(
        &s,
        &s.admin,
        &json!({"id": "nope"}),
        json!({"disabled": true}),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let _ = watch;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_are_masked_for_auditors_and_in_the_audit_log() {
    let s = TestServer::start().await;
    let url = "https://hooks.slack.com/services/T000/B000/XXXXSECRETXXXX";
    let hook = add_hook(&s, url, json!(["budget.exhausted"])).await;
    assert_eq!(hook["url"], url, "the admin who made it sees it");
    let id = hook["id"].as_str().unwrap();
    let auditor = s.user_token("wh-aud", "auditor", None).await;
    let (_, list) = s.get(&auditor, "/api/v1/webhooks").await;
    assert_eq!(list[0]["url"], "https://hooks.slack.com/…", "{list}");
    let (_, one) = s.get(&auditor, &format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(one["url"], "https://hooks.slack.com/…", "{one}");
    let (_, one) = s.get(&s.admin, &format!("/api/v1/webhooks/{id}")).await;
    assert_eq!(one["url"], url);
    let (st, audit) = s.get(&auditor, "/api/v1/audit?action=webhook.*").await;
    assert_eq!(st, StatusCode::OK, "{audit}");
    let text = audit.to_string();
    assert!(text.contains("hooks.slack.com"), "{text}");
    assert!(!text.contains("SECRET"), "{text}");
    s.stop().await;
}

/// A receiver that takes `delay` to answer 200.
async fn slow_receiver(
    delay: Duration,
    hits: Arc<Mutex<usize>>,
) -> (String, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let hits = hits.clone();
            async move {
                tokio::time::sleep(delay).await;
                *hits.lock().unwrap() += 1;
                AxStatus::OK
            }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_hook_is_served_while_slow_hooks_drain_long_backlogs() {
    let s = TestServer::start().await;
    // More slow receivers than sender slots, each with a backlog that takes 8 s to drain.
    const SLOW: usize = 9;
    const BACKLOG: usize = 40;
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let hits = Arc::new(Mutex::new(0));
        let (url, task) = slow_receiver(Duration::from_millis(200), hits.clone()).await;
        let hook = add_hook(&s, &url, json!(["budget.warning"])).await;
        let (st, _) = patch(&s, &s.admin, &hook, json!({"disabled": true})).await;
        assert_eq!(st, StatusCode::OK);
        slow.push((hook, hits, task));
    }
    let fast = Receiver::start(&[]).await;
    let fast_hook = add_hook(&s, &fast.url, json!(["budget.exhausted"])).await;
    // The backlogs build while the slow hooks are disabled (they resume with it)...
    for _ in 0..BACKLOG {
        insert(&s, "budget.warning").await;
    }
    for (hook, ..) in &slow {
        let (st, _) = patch(&s, &s.admin, hook, json!({"disabled": false})).await;
        assert_eq!(st, StatusCode::OK);
    }
    // ... and once every slot is taken by a slow hook, the fast one gets an event.
    for _ in 0..200 {
        if slow
            .iter()
            .filter(|(_, h, _)| *h.lock().unwrap() > 0)
            .count()
            >= 8
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    insert(&s, "budget.exhausted").await;
    fast.wait_for(1).await;
    // Served long before the slow ones caught up: every one of them still has a backlog.
    let behind = slow
        .iter()
        .filter(|(_, h, _)| *h.lock().unwrap() < BACKLOG)
        .count();
    assert_eq!(behind, SLOW, "the fast hook waited for slow ones to drain");
    let _ = fast_hook;
    for (_, _, t) in &slow {
        t.abort();
    }
    s.stop().await;
}
