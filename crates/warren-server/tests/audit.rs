//! The audit log against a real server: what API calls record, querying with filters and
//! pagination, the JSON-lines export, chain verification (also after tampering with the
//! database file directly) and who may read the log.

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use warren_store::{verify_chain, AuditRecord};

const UA: &str = "warren-audit-test/1.0";

/// A request's answer: status, `X-Request-Id` and JSON body (Null when empty or not JSON).
struct Answer {
    status: StatusCode,
    request_id: String,
    body: Value,
}

async fn send(
    s: &TestServer,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Answer {
    let mut rb = s
        .http
        .request(method, format!("{}{path}", s.url))
        .header(reqwest::header::USER_AGENT, UA);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let request_id = resp
        .headers()
        .get("x-request-id")
        .expect("every response has X-Request-Id")
        .to_str()
        .unwrap()
        .to_string();
    let text = resp.text().await.unwrap();
    Answer {
        status,
        request_id,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// `GET /api/v1/audit?{query}` as `token`: the records and `next_after`.
async fn audit(s: &TestServer, token: &str, query: &str) -> (Vec<AuditRecord>, Value) {
    let (st, v) = s.get(token, &format!("/api/v1/audit?{query}")).await;
    assert_eq!(st, StatusCode::OK, "{query}: {v}");
    let records = serde_json::from_value(v["records"].clone()).unwrap();
    (records, v["next_after"].clone())
}

/// The ids of the records matching `query`.
async fn ids(s: &TestServer, query: &str) -> Vec<i64> {
    audit(s, &s.admin, query)
        .await
        .0
        .iter()
        .map(|r| r.id)
        .collect()
}

/// The record of the request with this id (exactly one).
async fn by_request(s: &TestServer, request_id: &str) -> AuditRecord {
    let (all, _) = audit(s, &s.admin, "limit=1000").await;
    let mut found: Vec<AuditRecord> = all
        .into_iter()
        .filter(|r| r.request_id == request_id)
        .collect();
    assert_eq!(found.len(), 1, "records of request {request_id}: {found:?}");
    found.remove(0)
}

/// `GET /api/v1/audit/verify` as the admin.
async fn verify(s: &TestServer) -> Value {
    let (st, v) = s.get(&s.admin, "/api/v1/audit/verify").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v
}

/// Runs SQL on the server's database with the `sqlite3` command-line tool, behind its back.
fn tamper(s: &TestServer, sql: &str) {
    let db = s.dir.path().join("state").join("warren.db");
    assert!(db.exists(), "{}", db.display());
    let out = std::process::Command::new("sqlite3")
        .arg("-cmd")
        .arg(".timeout 10000")
        .arg(&db)
        .arg(sql)
        .output()
        .expect("the sqlite3 command-line tool runs");
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The whole log as exported.
async fn export(s: &TestServer, token: &str, query: &str) -> Vec<AuditRecord> {
    let resp = s
        .http
        .get(format!("{}/api/v1/audit?format=jsonl{query}", s.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()[reqwest::header::CONTENT_TYPE],
        "application/x-ndjson"
    );
    let text = resp.text().await.unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{text}");
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_are_recorded_with_who_what_and_how() {
    let s = TestServer::start().await;
    let (_, me) = s.get(&s.admin, "/api/v1/me").await;
    let admin_token_id = me["token"]["id"].as_str().unwrap().to_string();

    // A user is created.
    let created = send(
        &s,
        Some(&s.admin),
        Method::POST,
        "/api/v1/users",
        Some(json!({"username": "carol", "role": "member"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let carol_id = created.body["id"].as_str().unwrap().to_string();
    let r = by_request(&s, &created.request_id).await;
    assert_eq!(r.request_id, created.request_id);
    assert_eq!(r.action, "user.create");
    assert_eq!(r.actor_username.as_deref(), Some("admin"));
    assert_eq!(
        r.actor_user_id,
        me["user"]["id"].as_str().map(str::to_string)
    );
    assert_eq!(r.actor_token_id.as_deref(), Some(admin_token_id.as_str()));
    assert_eq!(r.target_type, "user");
    assert_eq!(r.target_id.as_deref(), Some(carol_id.as_str()));
    assert_eq!(r.target_name.as_deref(), Some("carol"));
    assert_eq!(r.outcome.as_str(), "success");
    assert_eq!(r.status, 201);
    assert_eq!(r.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(r.user_agent.as_deref(), Some(UA));
    assert_eq!(r.diff_json, None);

    // A token is created for her.
    let token = send(
        &s,
        Some(&s.admin),
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"user": "carol", "name": "ci"})),
    )
    .await;
    assert_eq!(token.status, StatusCode::CREATED, "{}", token.body);
    let carol = token.body["token"].as_str().unwrap().to_string();
    let carol_token_id = token.body["info"]["id"].as_str().unwrap().to_string();
    let r = by_request(&s, &token.request_id).await;
    assert_eq!(r.action, "token.create");
    assert_eq!(r.actor_username.as_deref(), Some("admin"));
    assert_eq!(r.target_type, "token");
    assert_eq!(r.target_id.as_deref(), Some(carol_token_id.as_str()));
    assert_eq!(r.target_name.as_deref(), Some("ci"));
    assert_eq!((r.outcome.as_str(), r.status), ("success", 201));

    // A create with a bad body fails.
    let bad = send(
        &s,
        Some(&s.admin),
        Method::POST,
        "/api/v1/users",
        Some(json!({"name": "no-username"})),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    let r = by_request(&s, &bad.request_id).await;
    assert_eq!(r.action, "user.create");
    assert_eq!(r.actor_username.as_deref(), Some("admin"));
    assert_eq!((r.outcome.as_str(), r.status), ("failure", 400));
    assert_eq!(r.user_agent.as_deref(), Some(UA));

    // Nobody: no token at all.
    let anon = send(
        &s,
        None,
        Method::POST,
        "/api/v1/users",
        Some(json!({"username": "mallory"})),
    )
    .await;
    assert_eq!(anon.status, StatusCode::UNAUTHORIZED, "{}", anon.body);
    let r = by_request(&s, &anon.request_id).await;
    assert_eq!(r.action, "user.create");
    assert_eq!((r.outcome.as_str(), r.status), ("denied", 401));
    assert_eq!(r.actor_user_id, None);
    assert_eq!(r.actor_username, None);
    assert_eq!(r.actor_token_id, None);
    assert_eq!(r.source_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(r.user_agent.as_deref(), Some(UA));

    // A member may not create users.
    let denied = send(
        &s,
        Some(&carol),
        Method::POST,
        "/api/v1/users",
        Some(json!({"username": "mallory"})),
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    let r = by_request(&s, &denied.request_id).await;
    assert_eq!(r.action, "user.create");
    assert_eq!((r.outcome.as_str(), r.status), ("denied", 403));
    assert_eq!(r.actor_username.as_deref(), Some("carol"));
    assert_eq!(r.actor_user_id.as_deref(), Some(carol_id.as_str()));
    assert_eq!(r.actor_token_id.as_deref(), Some(carol_token_id.as_str()));

    // A role change records the changed field, old and new.
    let patch = send(
        &s,
        Some(&s.admin),
        Method::PATCH,
        "/api/v1/users/carol",
        Some(json!({"role": "auditor"})),
    )
    .await;
    assert_eq!(patch.status, StatusCode::OK, "{}", patch.body);
    let r = by_request(&s, &patch.request_id).await;
    assert_eq!(r.action, "user.update");
    assert_eq!(r.target_type, "user");
    assert_eq!(r.target_id.as_deref(), Some(carol_id.as_str()));
    assert_eq!(r.target_name.as_deref(), Some("carol"));
    assert_eq!((r.outcome.as_str(), r.status), ("success", 200));
    let diff: Value = serde_json::from_str(r.diff_json.as_deref().unwrap()).unwrap();
    assert_eq!(diff, json!({"role": {"old": "member", "new": "auditor"}}));

    // Reading the log is not itself recorded.
    let before = verify(&s).await["records"].as_u64().unwrap();
    for _ in 0..3 {
        audit(&s, &s.admin, "").await;
        verify(&s).await;
    }
    assert_eq!(verify(&s).await["records"].as_u64().unwrap(), before);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_filters_and_pagination() {
    let s = TestServer::start().await;
    let (_, me) = s.get(&s.admin, "/api/v1/me").await;
    let admin_token_id = me["token"]["id"].as_str().unwrap().to_string();
    let dave = s.user_token("dave", "member", None).await;
    let (_, dave_me) = s.get(&dave, "/api/v1/me").await;
    let dave_token_id = dave_me["token"]["id"].as_str().unwrap().to_string();
    for name in ["t1", "t2", "t3"] {
        let (st, _) = s.post(&dave, "/api/v1/tokens", json!({"name": name})).await;
        assert_eq!(st, StatusCode::CREATED);
    }
    let (st, _) = s
        .post(&dave, "/api/v1/users", json!({"username": "eve"}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/users/dave",
            Some(json!({"display_name": "Dave"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);

    let (all, next) = audit(&s, &s.admin, "").await;
    assert_eq!(next, Value::Null);
    let n = all.len();
    // user.create, token.create (dave's), 3 × token.create, user.create (denied), user.update.
    assert_eq!(n, 7, "{all:#?}");
    assert_eq!(
        all.iter().map(|r| r.id).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<i64>>()
    );
    let where_ = |f: &dyn Fn(&AuditRecord) -> bool| -> Vec<i64> {
        all.iter().filter(|r| f(r)).map(|r| r.id).collect()
    };

    // Actor: username, user id or token id.
    let by_dave = where_(&|r| r.actor_username.as_deref() == Some("dave"));
    assert_eq!(by_dave.len(), 4);
    assert_eq!(ids(&s, "actor=dave").await, by_dave);
    let dave_id = dave_me["user"]["id"].as_str().unwrap();
    assert_eq!(ids(&s, &format!("actor={dave_id}")).await, by_dave);
    assert_eq!(ids(&s, &format!("actor={dave_token_id}")).await, by_dave);
    let by_admin_token = where_(&|r| r.actor_token_id.as_deref() == Some(&admin_token_id));
    assert_eq!(by_admin_token.len(), 3);
    assert_eq!(
        ids(&s, &format!("actor={admin_token_id}")).await,
        by_admin_token
    );
    assert!(ids(&s, "actor=nobody").await.is_empty());

    // Action: exact or a prefix.
    let token_creates = where_(&|r| r.action == "token.create");
    assert_eq!(token_creates.len(), 4);
    assert_eq!(ids(&s, "action=token.create").await, token_creates);
    assert_eq!(ids(&s, "action=token.*").await, token_creates);
    let user_actions = where_(&|r| r.action.starts_with("user."));
    assert_eq!(user_actions.len(), 3);
    assert_eq!(ids(&s, "action=user.*").await, user_actions);
    assert!(ids(&s, "action=user").await.is_empty());

    // Target: name or id.
    let on_dave = where_(&|r| r.target_name.as_deref() == Some("dave"));
    assert_eq!(on_dave.len(), 2); // created, updated
    assert_eq!(ids(&s, "target=dave").await, on_dave);
    assert_eq!(ids(&s, &format!("target={dave_id}")).await, on_dave);
    assert_eq!(
        ids(&s, "target=t2").await,
        where_(&|r| r.target_name.as_deref() == Some("t2"))
    );

    // Filters combine.
    assert_eq!(
        ids(&s, "actor=dave&action=token.*&target=t3").await.len(),
        1
    );

    // Time range: since is inclusive, until exclusive; RFC 3339 with any offset.
    let first_at = &all[0].at;
    let last_at = &all[n - 1].at;
    assert_eq!(ids(&s, &format!("since={first_at}")).await.len(), n);
    let before_last = where_(&|r| r.at < *last_at);
    assert_eq!(ids(&s, &format!("until={last_at}")).await, before_last);
    let from_last = where_(&|r| r.at >= *last_at);
    assert_eq!(ids(&s, &format!("since={last_at}")).await, from_last);
    assert!(ids(&s, "until=2000-01-01T00:00:00Z").await.is_empty());
    assert!(ids(&s, "since=2999-01-01T00:00:00%2B02:00")
        .await
        .is_empty());
    assert_eq!(
        ids(
            &s,
            "since=2000-01-01T02:00:00%2B02:00&until=2999-01-01T00:00:00Z"
        )
        .await
        .len(),
        n
    );

    // Pagination: pages of 3 follow `next_after` to the end.
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    let mut pages = 0;
    loop {
        let q = match after {
            Some(a) => format!("limit=3&after={a}"),
            None => "limit=3".to_string(),
        };
        let (page, next) = audit(&s, &s.admin, &q).await;
        pages += 1;
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|r| r.id));
        match next.as_i64() {
            Some(a) => {
                assert_eq!(Some(a), page.last().map(|r| r.id));
                after = Some(a);
            }
            None => {
                assert_eq!(next, Value::Null);
                break;
            }
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (1..=7).collect::<Vec<i64>>());
    // A page that ends exactly at the last record says there is no more.
    let (page, next) = audit(&s, &s.admin, "after=4&limit=3").await;
    assert_eq!(page.len(), 3);
    assert_eq!(next, Value::Null);
    // Paging within a filter.
    let (page, next) = audit(&s, &s.admin, "action=token.*&limit=2").await;
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        token_creates[..2]
    );
    let a = next.as_i64().unwrap();
    assert_eq!(
        ids(&s, &format!("action=token.*&after={a}")).await,
        token_creates[2..]
    );

    // Bad parameters are 400 invalid_request naming the parameter.
    for (q, name) in [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("after=first", "after"),
        ("since=yesterday", "since"),
        ("until=2024-13-01T00:00:00Z", "until"),
        ("format=xml", "format"),
        ("action=*", "action"),
        ("colour=blue", "colour"),
    ] {
        let (st, v) = s.get(&s.admin, &format!("/api/v1/audit?{q}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {v}");
        assert_eq!(v["code"], "invalid_request", "{q}: {v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains(&format!("`{name}`")), "{q}: {msg}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_verifies_and_tampering_is_detected() {
    let s = TestServer::start().await;
    // More records than one export page holds, so the export streams several pages.
    let (st, _) = s
        .post(&s.admin, "/api/v1/users", json!({"username": "frank"}))
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/users/frank",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let client = s.http.clone();
    let url = format!("{}/api/v1/tokens", s.url);
    let admin = s.admin.clone();
    // Failed token creations (a bad lifetime), a few at a time.
    futures_util::StreamExt::for_each_concurrent(futures_util::stream::iter(0..1100), 16, |i| {
        let (client, url, admin) = (client.clone(), url.clone(), admin.clone());
        async move {
            let resp = client
                .post(url)
                .bearer_auth(admin)
                .json(&json!({"lifetime": "bogus", "name": format!("n{i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        }
    })
    .await;
    let total = 2 + 1100;

    let records = export(&s, &s.admin, "").await;
    assert_eq!(records.len(), total);
    assert_eq!(
        records.iter().map(|r| r.id).collect::<Vec<_>>(),
        (1..=total as i64).collect::<Vec<_>>()
    );
    let v = verify_chain(records.clone());
    assert!(v.ok, "{v:?}");
    assert_eq!(v.records, total as u64);
    // The export carries the same records as the paged query.
    let (first_page, _) = audit(&s, &s.admin, "limit=1000").await;
    assert_eq!(first_page[..], records[..1000]);
    // The export takes the filters, and `limit` has no page cap there.
    let failures = export(&s, &s.admin, "&action=token.create").await;
    assert_eq!(failures.len(), 1100);
    assert!(failures.iter().all(|r| r.status == 400));
    assert_eq!(
        export(&s, &s.admin, "&limit=1050").await[..],
        records[..1050]
    );
    assert_eq!(
        export(&s, &s.admin, "&after=1100").await[..],
        records[1100..]
    );
    assert!(export(&s, &s.admin, "&actor=nobody").await.is_empty());

    let ok = verify(&s).await;
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(ok["records"], total);
    assert_eq!(ok["head_hash"], records[total - 1].hash.as_str());
    assert_eq!(ok["first_bad_id"], Value::Null);
    assert_eq!(ok["reason"], Value::Null);

    // Edit the role change's action in the database file.
    let patched = records
        .iter()
        .find(|r| r.action == "user.update")
        .unwrap()
        .id;
    tamper(
        &s,
        &format!("UPDATE audit_log SET action = 'user.read' WHERE id = {patched}"),
    );
    let broken = verify(&s).await;
    assert_eq!(broken["ok"], false, "{broken}");
    assert_eq!(broken["first_bad_id"], patched, "{broken}");
    assert!(
        broken["reason"].as_str().unwrap().contains("hash"),
        "{broken}"
    );
    // The export shows the edit too.
    let v = verify_chain(export(&s, &s.admin, "").await);
    assert_eq!(v.first_bad.map(|b| b.id), Some(patched));

    // Put it back: the chain is whole again.
    tamper(
        &s,
        &format!("UPDATE audit_log SET action = 'user.update' WHERE id = {patched}"),
    );
    assert_eq!(verify(&s).await["ok"], true);

    // Delete a record in the middle.
    let middle = 500;
    tamper(&s, &format!("DELETE FROM audit_log WHERE id = {middle}"));
    let broken = verify(&s).await;
    assert_eq!(broken["ok"], false, "{broken}");
    assert_eq!(broken["first_bad_id"], middle + 1, "{broken}");
    assert_eq!(broken["records"], total - 1);
    assert!(
        broken["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("record {middle} is missing")),
        "{broken}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_auditors_and_admins_with_audit_read_may_read() {
    let s = TestServer::start().await;
    let member = s.user_token("gina", "member", None).await;
    let auditor = s.user_token("hank", "auditor", None).await;
    let auditor_narrow = s.token_for("hank", Some(&["workspace:read"])).await;
    let admin_narrow = s
        .user_token("ivan", "admin", Some(&["workspace:read", "admin"]))
        .await;
    let admin_full = s.token_for("ivan", None).await;

    for path in [
        "/api/v1/audit",
        "/api/v1/audit/verify",
        "/api/v1/audit?format=jsonl",
    ] {
        for (who, token) in [
            ("member", &member),
            ("auditor without audit:read", &auditor_narrow),
            ("admin without audit:read", &admin_narrow),
        ] {
            let (st, v) = s.get(token, path).await;
            assert_eq!(st, StatusCode::FORBIDDEN, "{who} {path}: {v}");
            assert_eq!(v["code"], "permission_denied", "{who} {path}: {v}");
        }
        for (who, token) in [
            ("auditor", &auditor),
            ("admin", &admin_full),
            ("owner", &s.admin),
        ] {
            let (st, v) = s.get(token, path).await;
            assert_eq!(st, StatusCode::OK, "{who} {path}: {v}");
        }
        let (st, v) = s.call(None, Method::GET, path, None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{path}: {v}");
    }
    // The auditor sees everything, including the admin's actions.
    let (records, _) = audit(&s, &auditor, "actor=admin&action=user.create").await;
    assert_eq!(records.len(), 3, "{records:?}");
    let (st, v) = s.get(&member, "/api/v1/audit?limit=abc").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "authorization comes first: {v}");
    s.stop().await;
}
