//! SSH public keys against a real server, with keys made by OpenSSH's `ssh-keygen`: adding,
//! listing and removing one's own, other users' keys staying invisible, admins' listing and
//! removal, one key for one user across the server, narrow, revoked and suspended tokens, and the
//! audit records (fingerprints, never keys).

mod common;

use std::path::Path;
use std::process::Command;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Makes a key with `ssh-keygen` in `dir`; returns its .pub line and the fingerprint
/// `ssh-keygen -lf` prints.
fn keygen(dir: &Path, name: &str, args: &[&str]) -> (String, String) {
    let path = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(args)
        .args(["-q", "-N", "", "-C", &format!("{name}@test"), "-f"])
        .arg(&path)
        .status()
        .expect("ssh-keygen (openssh-client) is needed");
    assert!(st.success());
    let pub_path = dir.join(format!("{name}.pub"));
    let line = std::fs::read_to_string(&pub_path).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&pub_path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let fp = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    (line, fp)
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect()
}

async fn delete(s: &TestServer, token: &str, path: &str) -> (StatusCode, Value) {
    s.call(Some(token), Method::DELETE, path, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_keys_are_added_listed_and_removed_and_others_are_invisible() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    let (ed, ed_fp) = keygen(dir.path(), "ed", &["-t", "ed25519"]);
    let (ec, ec_fp) = keygen(dir.path(), "ec", &["-t", "ecdsa", "-b", "384"]);
    let (rsa, rsa_fp) = keygen(dir.path(), "rsa", &["-t", "rsa", "-b", "2048"]);

    // The key's comment is the default name; the stored key has no comment.
    let (st, k1) = s
        .post(&alice, "/api/v1/me/ssh-keys", json!({ "public_key": ed }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{k1}");
    assert_eq!(k1["fingerprint"], ed_fp);
    assert_eq!(k1["name"], "ed@test");
    assert_eq!(k1["key_type"], "ssh-ed25519");
    assert_eq!(
        format!("{} ed@test\n", k1["public_key"].as_str().unwrap()),
        ed
    );
    assert_eq!(k1["last_used_at"], Value::Null);
    let (st, k2) = s
        .post(
            &alice,
            "/api/v1/me/ssh-keys",
            json!({ "public_key": ec, "name": " work laptop " }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{k2}");
    assert_eq!(
        (k2["name"].as_str(), k2["key_type"].as_str()),
        (Some("work laptop"), Some("ecdsa-sha2-nistp384"))
    );
    assert_eq!(k2["fingerprint"], ec_fp);
    let (st, k3) = s
        .post(&bob, "/api/v1/me/ssh-keys", json!({ "public_key": rsa }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{k3}");
    assert_eq!(
        (k3["key_type"].as_str(), k3["fingerprint"].as_str()),
        (Some("ssh-rsa"), Some(rsa_fp.as_str()))
    );

    // Each sees their own.
    let (st, mine) = s.get(&alice, "/api/v1/me/ssh-keys").await;
    assert_eq!(st, StatusCode::OK);
    let mut want = vec![
        k1["id"].as_str().unwrap().to_string(),
        k2["id"].as_str().unwrap().to_string(),
    ];
    let mut got = ids(&mine);
    want.sort();
    got.sort();
    assert_eq!(got, want);
    let (_, theirs) = s.get(&bob, "/api/v1/me/ssh-keys").await;
    assert_eq!(ids(&theirs), vec![k3["id"].as_str().unwrap().to_string()]);

    // Another user's key is not found, and stays; another user's list is not theirs to read.
    let k1_id = k1["id"].as_str().unwrap();
    let (st, v) = delete(&s, &bob, &format!("/api/v1/me/ssh-keys/{k1_id}")).await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{v}"
    );
    let (st, v) = s.get(&bob, "/api/v1/users/alice/ssh-keys").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("permission_denied")),
        "{v}"
    );
    let (st, v) = delete(&s, &bob, &format!("/api/v1/users/alice/ssh-keys/{k1_id}")).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(ids(&s.get(&alice, "/api/v1/me/ssh-keys").await.1).len(), 2);

    // Removing one's own.
    let (st, _) = delete(&s, &alice, &format!("/api/v1/me/ssh-keys/{k1_id}")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = delete(&s, &alice, &format!("/api/v1/me/ssh-keys/{k1_id}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, mine) = s.get(&alice, "/api/v1/me/ssh-keys").await;
    assert_eq!(ids(&mine), vec![k2["id"].as_str().unwrap().to_string()]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_belongs_to_one_user() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    let (ed, fp) = keygen(dir.path(), "ed", &["-t", "ed25519"]);
    // Before anyone proves holding it, registering it blocks nobody (public keys are public).
    let (st, v) = s
        .post(&bob, "/api/v1/me/ssh-keys", json!({ "public_key": ed }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert!(v["verified_at"].is_null(), "{v}");
    // Alice proves it: hers, and bob's unproven copy is gone.
    s.register_ssh_key(&alice, &dir.path().join("ed")).await;
    assert_eq!(s.get(&bob, "/api/v1/me/ssh-keys").await.1, json!([]));

    // Again, by its owner: 409, with a hint naming it.
    let (st, v) = s
        .post(
            &alice,
            "/api/v1/me/ssh-keys",
            json!({ "public_key": ed, "name": "again" }),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("ssh_key_taken")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains(&fp), "{v}");
    assert!(v["hint"].as_str().unwrap().contains("ed@test"), "{v}");

    // By someone else, with another comment and other spacing: the same key, 409.
    let body = ed
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join("   ")
        + " mine-now";
    let (st, v) = s
        .post(&bob, "/api/v1/me/ssh-keys", json!({ "public_key": body }))
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("ssh_key_taken")),
        "{v}"
    );
    assert!(
        !v["hint"].as_str().unwrap().contains("ed@test"),
        "another user's key name leaked: {v}"
    );
    assert_eq!(s.get(&bob, "/api/v1/me/ssh-keys").await.1, json!([]));

    // Once its owner removes it, it can be registered by someone else.
    let (_, mine) = s.get(&alice, "/api/v1/me/ssh-keys").await;
    let id = ids(&mine).remove(0);
    assert_eq!(
        delete(&s, &alice, &format!("/api/v1/me/ssh-keys/{id}"))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    let (st, v) = s
        .post(&bob, "/api/v1/me/ssh-keys", json!({ "public_key": ed }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_list_and_remove_other_users_keys() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    let admin = s.user_token("root2", "admin", None).await;
    let (a, _) = keygen(dir.path(), "a", &["-t", "ed25519"]);
    let (b, _) = keygen(dir.path(), "b", &["-t", "ed25519"]);
    let (_, ka) = s
        .post(&alice, "/api/v1/me/ssh-keys", json!({ "public_key": a }))
        .await;
    let (_, kb) = s
        .post(&bob, "/api/v1/me/ssh-keys", json!({ "public_key": b }))
        .await;
    let (ka, kb) = (ka["id"].as_str().unwrap(), kb["id"].as_str().unwrap());

    let (st, list) = s.get(&admin, "/api/v1/users/alice/ssh-keys").await;
    assert_eq!(st, StatusCode::OK, "{list}");
    assert_eq!(ids(&list), vec![ka.to_string()]);
    // By user id too.
    let (_, me) = s.get(&alice, "/api/v1/me").await;
    let alice_id = me["user"]["id"].as_str().unwrap();
    let (st, list) = s
        .get(&admin, &format!("/api/v1/users/{alice_id}/ssh-keys"))
        .await;
    assert_eq!((st, ids(&list)), (StatusCode::OK, vec![ka.to_string()]));
    let (st, _) = s.get(&admin, "/api/v1/users/nobody/ssh-keys").await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // A key is removed only under its own user.
    let (st, _) = delete(&s, &admin, &format!("/api/v1/users/alice/ssh-keys/{kb}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // An admin's /me is their own: alice's key is not found there.
    let (st, _) = delete(&s, &admin, &format!("/api/v1/me/ssh-keys/{ka}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = delete(&s, &admin, &format!("/api/v1/users/alice/ssh-keys/{ka}")).await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(s.get(&alice, "/api/v1/me/ssh-keys").await.1, json!([]));
    assert_eq!(
        ids(&s.get(&bob, "/api/v1/me/ssh-keys").await.1),
        vec![kb.to_string()]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrow_revoked_and_suspended_tokens() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = s.user_token("alice", "member", None).await;
    let (k1, _) = keygen(dir.path(), "k1", &["-t", "ed25519"]);
    let (k2, _) = keygen(dir.path(), "k2", &["-t", "ed25519"]);

    // A token without every scope of the role may list but not add: a key would outlive it and
    // reach every workspace.
    let narrow = s.token_for("alice", Some(&["workspace:read"])).await;
    let (st, v) = s
        .post(&narrow, "/api/v1/me/ssh-keys", json!({ "public_key": k1 }))
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("permission_denied")),
        "{v}"
    );
    assert_eq!(
        s.get(&narrow, "/api/v1/me/ssh-keys").await.0,
        StatusCode::OK
    );
    let (st, v) = s
        .post(&alice, "/api/v1/me/ssh-keys", json!({ "public_key": k1 }))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");

    // Revoked: 401.
    let (_, me) = s.get(&narrow, "/api/v1/me").await;
    let tid = me["token"]["id"].as_str().unwrap();
    assert_eq!(
        delete(&s, &alice, &format!("/api/v1/tokens/{tid}")).await.0,
        StatusCode::NO_CONTENT
    );
    let (st, v) = s.get(&narrow, "/api/v1/me/ssh-keys").await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );

    // Suspended: the user's tokens stop working; the keys stay, visible to admins.
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/users/alice",
            Some(json!({"suspended": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    for (m, body) in [
        (Method::GET, None),
        (Method::POST, Some(json!({ "public_key": k2 }))),
    ] {
        let (st, _) = s.call(Some(&alice), m, "/api/v1/me/ssh-keys", body).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let (st, list) = s.get(&s.admin, "/api/v1/users/alice/ssh-keys").await;
    assert_eq!((st, ids(&list).len()), (StatusCode::OK, 1));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn additions_and_removals_are_audited_by_fingerprint() {
    let s = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let alice = s.user_token("alice", "member", None).await;
    let (line, fp) = keygen(dir.path(), "k", &["-t", "ed25519"]);
    let b64 = line.split_whitespace().nth(1).unwrap().to_string();
    let (_, k) = s
        .post(&alice, "/api/v1/me/ssh-keys", json!({ "public_key": line }))
        .await;
    let id = k["id"].as_str().unwrap();
    assert_eq!(
        delete(&s, &alice, &format!("/api/v1/me/ssh-keys/{id}"))
            .await
            .0,
        StatusCode::NO_CONTENT
    );

    let (st, v) = s.get(&s.admin, "/api/v1/audit?action=ssh-key.*").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let records = v["records"].as_array().unwrap();
    let actions: Vec<&str> = records
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.len(), 2, "{v}");
    assert!(
        actions.contains(&"ssh-key.create") && actions.contains(&"ssh-key.delete"),
        "{actions:?}"
    );
    for r in records {
        assert_eq!(r["actor_username"], "alice");
        assert_eq!(r["target_type"], "ssh-key");
        assert_eq!(r["target_id"], id);
        assert_eq!(r["target_name"], fp.as_str());
        let details: Value = serde_json::from_str(r["details_json"].as_str().unwrap()).unwrap();
        assert_eq!(details["fingerprint"], fp.as_str());
        assert_eq!(details["user"], "alice");
        // The key itself is not in the log.
        assert!(
            !r.to_string().contains(&b64[20..60]),
            "the key is in the audit log: {r}"
        );
    }
    s.stop().await;
}
