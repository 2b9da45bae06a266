//! Secrets and workspace credentials on a real server with real workspaces (busybox, remote user
//! `dev`): encryption at rest (the SQLite file is read for the plaintext), values never returned,
//! scoping attacked by other users and teams, `/run/secrets` files (mode, owner, tmpfs, not in
//! the environment, written again after a restart), Warren's git credential helper run inside
//! the workspace against the agent socket (live, revoked, another workspace's token, deleted),
//! and what a workspace credential can and cannot do.

mod common;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const TEMPLATE: &str = "box";

/// A server with busybox, template `box` (remote user `dev`) and members alice and bob.
async fn server() -> (TestServer, String, String) {
    let s = TestServer::start().await;
    s.import_busybox();
    push(&s, TEMPLATE).await;
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    (s, alice, bob)
}

async fn push(s: &TestServer, name: &str) {
    s.push_template(
        name,
        json!({"image": "busybox", "overrideCommand": true, "remoteUser": "dev"}),
    )
    .await;
}

async fn put(
    s: &TestServer,
    token: &str,
    scope: &str,
    name: &str,
    body: Value,
) -> (StatusCode, Value) {
    s.call(
        Some(token),
        Method::PUT,
        &format!("/api/v1/secrets/{scope}/{name}"),
        Some(body),
    )
    .await
}

/// Creates a workspace asking for `secrets`; waits until it runs.
async fn create(s: &TestServer, token: &str, name: &str, template: &str, secrets: &[&str]) {
    let (st, v) = s
        .post(
            token,
            "/api/v1/workspaces",
            json!({"name": name, "template": template, "secrets": secrets}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let job = s.wait_job(token, v["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
}

/// Runs `sh -c script` in the workspace (as `user`, default the remote user); (exit code,
/// stdout + stderr).
async fn sh_as(
    s: &TestServer,
    token: &str,
    ws: &str,
    user: Option<&str>,
    script: &str,
) -> (i64, String) {
    let mut body = json!({"command": ["sh", "-c", format!("{script} 2>&1")], "timeout": "60s"});
    if let Some(u) = user {
        body["user"] = json!(u);
    }
    let resp = s
        .http
        .post(format!("{}/api/v1/workspaces/{ws}/exec", s.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    if status != StatusCode::OK {
        return (-(status.as_u16() as i64), text);
    }
    let mut out = String::new();
    let mut code = -1;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let e: Value = serde_json::from_str(line).unwrap_or(Value::Null);
        match e["type"].as_str() {
            Some("stdout" | "stderr") => out.push_str(e["text"].as_str().unwrap_or("")),
            Some("exit") => code = e["code"].as_i64().unwrap_or(-1),
            _ => {}
        }
    }
    (code, out)
}

async fn sh(s: &TestServer, token: &str, ws: &str, script: &str) -> (i64, String) {
    sh_as(s, token, ws, None, script).await
}

/// The shell command git runs as Warren's credential helper (from `git_helper_args`).
fn helper_command(s: &TestServer) -> String {
    let args = warren_server::secrets::git_helper_args(&s.state.engine);
    assert_eq!(args[0], "-c");
    assert_eq!(args[1], "credential.helper=");
    assert_eq!(args[2], "-c");
    args[3]
        .strip_prefix("credential.helper=!")
        .expect("a shell helper")
        .to_string()
}

/// What the helper answers inside `ws` for `host`.
async fn ask_helper(s: &TestServer, token: &str, ws: &str, host: &str) -> String {
    let script = format!(
        "printf 'protocol=https\\nhost={host}\\npath=org/repo.git\\n\\n' | {} get",
        helper_command(s)
    );
    let (code, out) = sh(s, token, ws, &script).await;
    assert_eq!(code, 0, "{out}");
    out
}

async fn credential(s: &TestServer, token: &str, ws: &str) -> (String, String) {
    let (st, v) = s
        .post(
            token,
            &format!("/api/v1/workspaces/{ws}/credential"),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    (
        v["token"].as_str().unwrap().to_string(),
        v["id"].as_str().unwrap().to_string(),
    )
}

/// The details of every `session.credential_use` audit record, oldest first.
async fn credential_uses(s: &TestServer) -> Vec<Value> {
    let (st, v) = s
        .get(
            &s.admin,
            "/api/v1/audit?action=session.credential_use&limit=1000",
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r["details_json"].as_str().unwrap_or("null")).unwrap())
        .collect()
}

fn bytes_contain(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn values_are_encrypted_at_rest_and_never_returned() {
    let (s, alice, _) = server().await;
    let value = "plaintext-VALUE-4f9d2c7e";
    let (st, v) = put(&s, &alice, "user", "api-key", json!({"value": value})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "api-key");
    assert_eq!(v["scope"], "user");
    assert_eq!(v["size"], value.len());
    assert!(!v.to_string().contains(value), "{v}");
    let (st, list) = s.get(&alice, "/api/v1/secrets").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(list["secrets"].as_array().unwrap().len(), 1, "{list}");
    assert!(!list.to_string().contains(value), "{list}");
    // A new value replaces it; still never shown.
    let (st, _) = put(
        &s,
        &alice,
        "user",
        "api-key",
        json!({"value": format!("{value}-2")}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    // The audit log names the secret, never the value.
    let (_, audit) = s.get(&s.admin, "/api/v1/audit?limit=100").await;
    let text = audit.to_string();
    assert!(text.contains("api-key"), "{text}");
    assert!(!text.contains(value), "{text}");
    // The database files hold no plaintext.
    let state = s.state();
    let mut found_db = false;
    for e in std::fs::read_dir(&state).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("warren.db") {
            found_db = true;
            let bytes = std::fs::read(e.path()).unwrap();
            assert!(
                !bytes_contain(&bytes, value.as_bytes()),
                "plaintext in {name}"
            );
        }
    }
    assert!(found_db);
    // The key: 32 bytes, 0600.
    use std::os::unix::fs::PermissionsExt;
    let key = std::fs::metadata(state.join("secret.key")).unwrap();
    assert_eq!(key.len(), 32);
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    // A ciphertext moved to another row does not decrypt (the row's scope and name are bound).
    let alice_id = s.get(&alice, "/api/v1/me").await.1["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut row = s
        .state
        .store
        .secret("user", &alice_id, "api-key")
        .await
        .unwrap()
        .unwrap();
    let k = &s.state.secrets.keyring;
    assert_eq!(
        k.open_secret(&row).unwrap(),
        format!("{value}-2").as_bytes()
    );
    row.name = "other".into();
    assert!(k.open_secret(&row).is_err());
    s.stop().await;
}

#[tokio::test]
async fn secrets_are_scoped_to_users_teams_and_templates() {
    let (s, alice, bob) = server().await;
    push(&s, "other").await;
    let (st, _) = s
        .post(&s.admin, "/api/v1/teams", json!({"name": "red"}))
        .await;
    assert!(st.is_success());
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::PUT,
            "/api/v1/teams/red/members/alice",
            None,
        )
        .await;
    assert!(st.is_success(), "{st}");
    assert_eq!(
        put(&s, &alice, "user", "mine", json!({"value": "alice-own"}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        put(
            &s,
            &alice,
            "team:red",
            "shared",
            json!({"value": "red-team"})
        )
        .await
        .0,
        StatusCode::OK
    );
    // Not a member: the team's secrets cannot be written, listed or used.
    let (st, v) = put(
        &s,
        &bob,
        "team:red",
        "shared",
        json!({"value": "bob-overwrites"}),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, v) = s
        .call(
            Some(&bob),
            Method::DELETE,
            "/api/v1/secrets/team:red/shared",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    // Template secrets are for template writers.
    let (st, v) = put(&s, &alice, "template:box", "tpl", json!({"value": "x"})).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = put(
        &s,
        &s.admin,
        "template:box",
        "tpl",
        json!({"value": "box-template"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Bob sees none of them.
    let (_, list) = s.get(&bob, "/api/v1/secrets").await;
    assert_eq!(list["secrets"], json!([]), "{list}");
    let (_, list) = s.get(&alice, "/api/v1/secrets").await;
    let names: Vec<(String, String)> = list["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["scope"].as_str().unwrap().into(),
                x["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("user".into(), "mine".into()),
            ("team:red".into(), "shared".into())
        ]
    );
    // Bob cannot ask for Alice's or the team's secrets: unknown to him, named in the error.
    for n in ["mine", "shared"] {
        let (st, v) = s
            .post(
                &bob,
                "/api/v1/workspaces",
                json!({"name": "b1", "template": TEMPLATE, "secrets": [n]}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["code"], "invalid_request");
        assert!(v["message"].as_str().unwrap().contains(n), "{v}");
    }
    // A template's secret only for workspaces of that template.
    let (st, v) = s
        .post(
            &alice,
            "/api/v1/workspaces",
            json!({"name": "a0", "template": "other", "secrets": ["tpl"]}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    // A token restricted to a workspace cannot read or write secrets.
    create(&s, &alice, "a1", TEMPLATE, &["mine", "shared", "tpl"]).await;
    let (cred, _) = credential(&s, &alice, "a1").await;
    let (st, _) = s.get(&cred, "/api/v1/secrets").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = put(&s, &cred, "user", "x", json!({"value": "y"})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Alice's workspace gets all three, each from its scope.
    let (code, out) = sh(
        &s,
        &alice,
        "a1",
        "cat /run/secrets/mine; echo; cat /run/secrets/shared; echo; cat /run/secrets/tpl",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out, "alice-own\nred-team\nbox-template");
    // A user's own secret wins over the team's of the same name.
    assert_eq!(
        put(&s, &alice, "user", "shared", json!({"value": "alice-wins"}))
            .await
            .0,
        StatusCode::OK
    );
    let (st, v) = s
        .post(&alice, "/api/v1/workspaces/a1/restart", json!({}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let job = s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, out) = sh(&s, &alice, "a1", "cat /run/secrets/shared").await;
    assert_eq!(out, "alice-wins");
    // Removed from the team: its secret is no longer written at the next start.
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::DELETE,
            "/api/v1/secrets/template:box/tpl",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, v) = s
        .post(&alice, "/api/v1/workspaces/a1/restart", json!({}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
    let (_, out) = sh(&s, &alice, "a1", "ls /run/secrets").await;
    assert!(!out.contains("tpl"), "{out}");
    s.stop().await;
}

#[tokio::test]
async fn secret_files_are_on_a_tmpfs_readable_by_the_user_only_and_survive_a_restart() {
    let (s, alice, _) = server().await;
    assert_eq!(
        put(
            &s,
            &alice,
            "user",
            "api-key",
            json!({"value": "k-123\nline2"})
        )
        .await
        .0,
        StatusCode::OK
    );
    create(&s, &alice, "w", TEMPLATE, &["api-key"]).await;
    let check =
        "stat -c '%a %U %G' /run/secrets /run/secrets/api-key; cat /run/secrets/api-key; echo; \
                 grep ' /run/secrets ' /proc/mounts | cut -d' ' -f3; env | grep -c k-123";
    let expect = "700 dev dev\n400 dev dev\nk-123\nline2\ntmpfs\n0\n";
    let (_, out) = sh(&s, &alice, "w", check).await;
    assert_eq!(out, expect);
    // Nothing of it on the host's disk.
    let ws_dir = s.state().join("workspaces");
    let o = std::process::Command::new("grep")
        .args(["-rl", "--binary-files=text", "k-123"])
        .arg(&ws_dir)
        .output()
        .unwrap();
    assert!(
        o.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // Stopped and started: a fresh tmpfs, written again.
    for verb in ["stop", "start"] {
        let (st, v) = s
            .post(&alice, &format!("/api/v1/workspaces/w/{verb}"), json!({}))
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        let job = s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    let (_, out) = sh(&s, &alice, "w", check).await;
    assert_eq!(out, expect);
    // The agent directory is read-only for everyone in the workspace, root included.
    let (code, out) = sh_as(&s, &alice, "w", Some("root"), "touch /run/warren/x").await;
    assert_ne!(code, 0, "{out}");
    s.stop().await;
}

#[tokio::test]
async fn git_credential_helper_answers_only_a_live_credential_of_its_workspace() {
    let (s, alice, _) = server().await;
    let (st, v) = put(
        &s,
        &alice,
        "user",
        "gh",
        json!({"value": "ghp_secret_917", "git_host": "git.example.test", "username": "alice-bot"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["kind"], "git");
    create(&s, &alice, "g1", TEMPLATE, &["gh"]).await;
    create(&s, &alice, "g2", TEMPLATE, &["gh"]).await;
    // No credential minted yet: nothing.
    assert_eq!(ask_helper(&s, &alice, "g1", "git.example.test").await, "");
    let (token, id) = credential(&s, &alice, "g1").await;
    let (_, out) = sh(
        &s,
        &alice,
        "g1",
        "stat -c '%a %U' /run/secrets/warren-token; cat /run/secrets/warren-token",
    )
    .await;
    assert_eq!(out, format!("400 dev\n{token}"));
    assert_eq!(
        ask_helper(&s, &alice, "g1", "git.example.test").await,
        "username=alice-bot\npassword=ghp_secret_917\n"
    );
    // Another host: nothing.
    assert_eq!(ask_helper(&s, &alice, "g1", "github.com").await, "");
    // `store` and `erase` keep nothing.
    let (code, out) = sh(&s, &alice, "g1", &format!("printf 'protocol=https\\nhost=git.example.test\\nusername=u\\npassword=p\\n\\n' | {} store", helper_command(&s))).await;
    assert_eq!((code, out.as_str()), (0, ""));
    // Each answer is audited: the host and the secret's name, never the password; refusals too.
    let uses = credential_uses(&s).await;
    assert!(
        uses.iter().any(|d| d["host"] == "git.example.test"
            && d["secret"] == "gh"
            && d["granted"] == true),
        "{uses:?}"
    );
    assert!(
        uses.iter()
            .any(|d| d["host"] == "github.com" && d["granted"] == false),
        "{uses:?}"
    );
    assert!(!format!("{uses:?}").contains("ghp_secret_917"));
    // g1's credential in g2 (the user can replace the file in their own /run/secrets): g2's socket
    // answers only g2's credential.
    let (code, out) = sh(
        &s,
        &alice,
        "g2",
        &format!(
            "rm -f /run/secrets/warren-token; printf '%s' '{token}' > /run/secrets/warren-token"
        ),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(ask_helper(&s, &alice, "g2", "git.example.test").await, "");
    // Revoked: nothing at once.
    let (st, _) = s
        .call(
            Some(&alice),
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    assert_eq!(ask_helper(&s, &alice, "g1", "git.example.test").await, "");
    let refused = credential_uses(&s).await;
    assert_eq!(refused.last().unwrap()["granted"], false, "{refused:?}");
    // A new one works; the server restarted, its sockets are served again.
    let (token2, _) = credential(&s, &alice, "g1").await;
    let s = s.restart().await;
    assert_eq!(
        ask_helper(&s, &alice, "g1", "git.example.test").await,
        "username=alice-bot\npassword=ghp_secret_917\n"
    );
    // Deleted: the credential stops working and the socket is gone.
    let (st, _) = s.get(&token2, "/api/v1/workspaces/g1").await;
    assert_eq!(st, StatusCode::OK);
    let g1_id = s.get(&alice, "/api/v1/workspaces/g1").await.1["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, v) = s
        .call(Some(&alice), Method::DELETE, "/api/v1/workspaces/g1", None)
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let job = s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (st, _) = s.get(&token2, "/api/v1/workspaces").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(!s.state().join("workspaces").join(&g1_id).exists());
    assert!(s
        .state
        .store
        .secrets_of("workspace", &g1_id)
        .await
        .unwrap()
        .is_empty());
    s.stop().await;
}

#[tokio::test]
async fn a_workspace_credential_works_on_its_own_workspace_only() {
    let (s, alice, bob) = server().await;
    create(&s, &alice, "c1", TEMPLATE, &[]).await;
    create(&s, &alice, "c2", TEMPLATE, &[]).await;
    let (cred, _) = credential(&s, &alice, "c1").await;
    assert_eq!(
        s.get(&cred, "/api/v1/workspaces/c1").await.0,
        StatusCode::OK
    );
    let (code, out) = sh(&s, &cred, "c1", "id -un").await;
    assert_eq!((code, out.as_str()), (0, "dev\n"));
    assert_eq!(
        s.get(&cred, "/api/v1/workspaces/c2").await.0,
        StatusCode::NOT_FOUND
    );
    let (code, _) = sh(&s, &cred, "c2", "true").await;
    assert_eq!(code, -404);
    // Nothing beyond read and exec: no writes, no new workspaces, no more credentials.
    let (st, _) = s.post(&cred, "/api/v1/workspaces/c1/stop", json!({})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s
        .post(
            &cred,
            "/api/v1/workspaces",
            json!({"name": "c3", "template": TEMPLATE}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = s
        .post(&cred, "/api/v1/workspaces/c1/credential", json!({}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // Nor any of its owner's tokens: it cannot list them, copy itself into a token that would
    // outlive the workspace, or revoke the owner's (security review).
    let (st, v) = s.get(&cred, "/api/v1/tokens").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (st, v) = s
        .post(
            &cred,
            "/api/v1/tokens",
            json!({"name": "copy", "workspaces": ["c1"]}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    let (_, mine) = s.get(&alice, "/api/v1/tokens").await;
    let some_id = mine[0]["id"].as_str().unwrap().to_string();
    let (st, v) = s
        .call(
            Some(&cred),
            reqwest::Method::DELETE,
            &format!("/api/v1/tokens/{some_id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(s.get(&alice, "/api/v1/tokens").await.0, StatusCode::OK);
    // An admin's credential for Alice's workspace is Alice's, not the admin's: what runs in the
    // workspace (and can read /run/secrets) never acts as the admin.
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/workspaces/c1.alice/credential",
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let admin_made = v["token"].as_str().unwrap().to_string();
    let (_, me) = s.get(&admin_made, "/api/v1/me").await;
    assert_eq!(me["user"]["username"], "alice", "{me}");
    // Another user cannot mint one for Alice's workspace.
    let (st, _) = s
        .post(&bob, "/api/v1/workspaces/c1.alice/credential", json!({}))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Bounded lifetime.
    let (st, v) = s
        .post(
            &alice,
            "/api/v1/workspaces/c1/credential",
            json!({"lifetime": "48h"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, v) = s
        .post(
            &alice,
            "/api/v1/workspaces/c1/credential",
            json!({"lifetime": "10m"}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    // The internal mint (tasks) makes one of the owner's, restricted likewise.
    let rec = s
        .state
        .engine
        .get(warren_engine::WsRef::Id(
            s.get(&alice, "/api/v1/workspaces/c2").await.1["id"]
                .as_str()
                .unwrap()
                .to_string(),
        ))
        .await
        .unwrap();
    let t = warren_server::secrets::mint_workspace_credential(
        &s.state,
        &rec,
        std::time::Duration::from_secs(600),
    )
    .await
    .unwrap();
    assert_eq!(s.get(&t, "/api/v1/workspaces/c2").await.0, StatusCode::OK);
    assert_eq!(
        s.get(&t, "/api/v1/workspaces/c1").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, out) = sh(&s, &alice, "c2", "cat /run/secrets/warren-token").await;
    assert_eq!(out, t);
    s.stop().await;
}

#[tokio::test]
async fn bad_secret_input_is_refused_with_a_clear_error() {
    let (s, alice, _) = server().await;
    let cases: Vec<(&str, &str, Value, StatusCode, &str)> = vec![
        (
            "bogus",
            "n",
            json!({"value": "v"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "team:",
            "n",
            json!({"value": "v"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "team:nosuch",
            "n",
            json!({"value": "v"}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "template:nosuch",
            "n",
            json!({"value": "v"}),
            StatusCode::FORBIDDEN,
            "permission_denied",
        ),
        (
            "user",
            "n",
            json!({"value": ""}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "user",
            "n",
            json!({"value": "x".repeat(64 * 1024 + 1)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            "user",
            ".hidden",
            json!({"value": "v"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "user",
            "a%2Fb",
            json!({"value": "v"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "user",
            "warren-token",
            json!({"value": "v"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "user",
            "n",
            json!({"value": "v", "git_host": "https://github.com/x"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "user",
            "n",
            json!({"value": "a\nb", "git_host": "github.com"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "user",
            "n",
            json!({"value": "v", "username": "u"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "user",
            "n",
            json!({"value": "v", "extra": 1}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (scope, name, body, want, code) in cases {
        let (st, v) = put(&s, &alice, scope, name, body).await;
        assert_eq!(
            (st, v["code"].as_str()),
            (want, Some(code)),
            "{scope}/{name}: {v}"
        );
        assert!(!v["message"].as_str().unwrap_or("").is_empty(), "{v}");
    }
    // Exactly 64 KiB is fine.
    let (st, v) = put(
        &s,
        &alice,
        "user",
        "big",
        json!({"value": "x".repeat(64 * 1024)}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // Removing what does not exist.
    let (st, v) = s
        .call(
            Some(&alice),
            Method::DELETE,
            "/api/v1/secrets/user/nope",
            None,
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    // Unknown, malformed or repeated names at create, named in the error; nothing is made.
    for (secrets, named) in [
        (json!(["nope"]), "nope"),
        (json!(["big", "big"]), "big"),
        (json!(["../etc"]), "../etc"),
        (json!(["warren-token"]), "warren-token"),
    ] {
        let (st, v) = s
            .post(
                &alice,
                "/api/v1/workspaces",
                json!({"name": "bad", "template": TEMPLATE, "secrets": secrets}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["code"], "invalid_request");
        assert!(v["message"].as_str().unwrap().contains(named), "{v}");
    }
    let (_, list) = s.get(&alice, "/api/v1/workspaces").await;
    assert_eq!(list["workspaces"], json!([]), "{list}");
    s.stop().await;
}
