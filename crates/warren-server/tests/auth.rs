//! Authentication against a real server: malformed, unknown, expired, revoked, suspended and
//! narrowed tokens.

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_401_with_a_code() {
    let s = TestServer::start().await;
    let cases: Vec<Option<String>> = vec![
        None,
        Some("garbage".into()),
        Some(format!("wrn_{}_{}", "0".repeat(32), "a".repeat(43))),
        // The right id with a wrong secret.
        Some(format!("{}x", &s.admin[..s.admin.len() - 1])),
    ];
    for t in cases {
        let (st, body) = s.call(t.as_deref(), Method::GET, "/api/v1/me", None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{t:?}");
        assert_eq!(body["code"], "unauthenticated", "{t:?}");
        assert!(body["hint"].is_string());
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_is_immediate_and_expiry_is_enforced() {
    let s = TestServer::start().await;
    let t = s.user_token("alice", "member", None).await;
    let (st, me) = s.get(&t, "/api/v1/me").await;
    assert_eq!(st, StatusCode::OK);
    let id = me["token"]["id"].as_str().unwrap().to_string();
    let (st, _) = s
        .call(
            Some(&t),
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, body) = s.get(&t, "/api/v1/me").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"].as_str().unwrap().contains("revoked"),
        "{body}"
    );

    // A one-second token works, then stops working.
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/tokens",
            json!({"lifetime": "1s", "name": "short"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let short = v["token"].as_str().unwrap().to_string();
    assert_eq!(s.get(&short, "/api/v1/me").await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let (st, body) = s.get(&short, "/api/v1/me").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_cannot_widen_their_creator_and_suspension_locks_out() {
    let s = TestServer::start().await;
    let narrow = s
        .user_token("bob", "admin", Some(&["workspace:read"]))
        .await;
    let (st, body) = s
        .post(
            &narrow,
            "/api/v1/tokens",
            json!({"scopes": ["workspace:read", "admin"]}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["code"], "permission_denied");
    let (st, _) = s
        .post(
            &narrow,
            "/api/v1/tokens",
            json!({"scopes": ["workspace:read"]}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);
    let (st, body) = s
        .post(&s.admin, "/api/v1/tokens", json!({"lifetime": "1000d"}))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");

    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/users/bob",
            Some(json!({"suspended": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        s.get(&narrow, "/api/v1/me").await.0,
        StatusCode::UNAUTHORIZED
    );
    // The last owner cannot be demoted.
    let (st, body) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/users/admin",
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_login_needs_approval_and_works_once() {
    let s = TestServer::start().await;
    let (st, d) = s
        .call(None, Method::POST, "/api/v1/auth/device", None)
        .await;
    assert_eq!(st, StatusCode::OK);
    let poll = json!({"device_code": d["device_code"]});
    let (st, body) = s
        .call(
            None,
            Method::POST,
            "/api/v1/auth/device/token",
            Some(poll.clone()),
        )
        .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("authorization_pending"))
    );
    let (st, _) = s
        .post(
            &s.admin,
            "/api/v1/auth/device/approve",
            json!({"user_code": d["user_code"]}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, body) = s
        .call(
            None,
            Method::POST,
            "/api/v1/auth/device/token",
            Some(poll.clone()),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let t = body["token"].as_str().unwrap();
    let (_, me) = s.get(t, "/api/v1/me").await;
    assert_eq!(me["user"]["username"], "admin");
    let (st, body) = s
        .call(None, Method::POST, "/api/v1/auth/device/token", Some(poll))
        .await;
    assert_eq!(
        (st, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("expired_token"))
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_cannot_act_as_other_users_and_device_tokens_never_outlive_their_approver() {
    let s = TestServer::start().await;
    let admin2 = s.user_token("second", "admin", None).await;
    // An admin minting a token for the owner would be an owner: refused, as for any other user.
    for user in ["admin", "second-member"] {
        if user == "second-member" {
            s.user_token(user, "member", None).await;
        }
        let (st, v) = s
            .post(&admin2, "/api/v1/tokens", json!({"user": user}))
            .await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{user}: {v}");
    }
    // An owner may.
    let (st, _) = s
        .post(
            &s.admin,
            "/api/v1/tokens",
            json!({"user": "second-member", "lifetime": "1h"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED);

    // A device login approved by a one-hour token expires within that hour.
    let (_, v) = s
        .post(&s.admin, "/api/v1/tokens", json!({"lifetime": "1h"}))
        .await;
    let short = v["token"].as_str().unwrap().to_string();
    let short_exp = v["info"]["expires_at"].as_str().unwrap().to_string();
    let (_, d) = s
        .call(None, Method::POST, "/api/v1/auth/device", None)
        .await;
    let (st, _) = s
        .post(
            &short,
            "/api/v1/auth/device/approve",
            json!({"user_code": d["user_code"]}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, t) = s
        .call(
            None,
            Method::POST,
            "/api/v1/auth/device/token",
            Some(json!({"device_code": d["device_code"]})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{t}");
    assert!(
        t["info"]["expires_at"].as_str().unwrap() <= short_exp.as_str(),
        "{t}"
    );
    s.stop().await;
}
