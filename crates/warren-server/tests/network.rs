//! Network isolation and egress policies with real workspaces on a real server: every test runs
//! its clients inside workspaces (busybox `nc`, `wget`, `nslookup`) against servers in a fake
//! internet (`common/inet.rs`: a network namespace on 203.0.113.0/24, 198.51.100.0/24 and
//! 169.254.169.254, and a DNS server on the host's loopback that knows `*.test` names). Nothing
//! leaves the machine.

mod common;
#[path = "common/inet.rs"]
mod inet;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A server whose resolver asks the fake internet's DNS server, with busybox and user alice.
async fn server() -> (TestServer, String) {
    let i = inet::inet();
    let s = TestServer::start_with(warren_server::config::ConfigLayer {
        dns_upstream: Some(i.dns.to_string()),
        ..Default::default()
    })
    .await;
    s.import_busybox();
    let alice = s.user_token("alice", "member", None).await;
    (s, alice)
}

/// Pushes template `name` (busybox) with network policy `network` (`None`: the server's default).
async fn template(s: &TestServer, name: &str, network: Option<Value>) {
    let mut body =
        json!({"devcontainer": json!({"image": "busybox", "overrideCommand": true}).to_string()});
    if let Some(n) = network {
        body["policy"] = json!({ "network": n });
    }
    let (st, v) = s
        .post(
            &s.admin,
            &format!("/api/v1/templates/{name}/versions"),
            body,
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

/// Runs `sh -c script` in the workspace; returns (exit code, stdout + stderr).
async fn sh(s: &TestServer, token: &str, ws: &str, script: &str) -> (i64, String) {
    let resp = s
        .http
        .post(format!("{}/api/v1/workspaces/{ws}/exec", s.url))
        .bearer_auth(token)
        .json(&json!({"command": ["sh", "-c", format!("{script} 2>&1")], "timeout": "60s"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
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

/// An HTTP GET from inside the workspace with busybox `nc` (Host header `host`); the answer.
async fn http(s: &TestServer, token: &str, ws: &str, addr: &str, host: &str) -> (i64, String) {
    sh(
        s,
        token,
        ws,
        &format!("printf 'GET / HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n' | nc -w 5 {addr} 80"),
    )
    .await
}

async fn put_network(s: &TestServer, token: &str, ws: &str, policy: Value) -> (StatusCode, Value) {
    s.call(
        Some(token),
        Method::PUT,
        &format!("/api/v1/workspaces/{ws}/network"),
        Some(policy),
    )
    .await
}

#[tokio::test]
async fn bad_rules_are_refused_with_the_rule_named() {
    let (s, alice) = server().await;
    template(&s, "plain", None).await;
    // Refused before anything is made.
    for (network, named) in [
        (
            json!({"egress": "allowlist", "allow": ["10.0.0.0/33"]}),
            "10.0.0.0/33",
        ),
        (
            json!({"egress": "allowlist", "allow": ["10.1.2.3/16"]}),
            "10.1.2.3/16",
        ),
        (json!({"egress": "allowlist", "allow": ["*"]}), "`*`"),
        (json!({"egress": "allowlist", "allow": ["*.com"]}), "*.com"),
        (
            json!({"egress": "allowlist", "allow": ["*.co.uk"]}),
            "*.co.uk",
        ),
        (
            json!({"egress": "allowlist", "allow": ["a.*.example.com"]}),
            "a.*.example.com",
        ),
        (
            json!({"egress": "allowlist", "allow": ["ok.test:99999"]}),
            "ok.test:99999",
        ),
        (
            json!({"egress": "deny-all", "allow": ["ok.test"]}),
            "ok.test",
        ),
        (
            json!({"egress": "allowlist", "allow": ["10.1.0.0/16"], "deny": ["10.0.0.0/8"]}),
            "10.1.0.0/16",
        ),
        (
            json!({"egress": "allowlist", "allow": ["ok.test"], "deny": ["ok.test"]}),
            "ok.test",
        ),
        (
            json!({"egress": "allowlist", "allow": ["workspace:nope"]}),
            "workspace:nope",
        ),
        (
            json!({"egress": "allowlist", "allow": ["2001:db8::1"]}),
            "2001:db8::1",
        ),
    ] {
        let (st, v) = s
            .post(
                &alice,
                "/api/v1/workspaces",
                json!({"name": "bad", "template": "plain", "network": network}),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{network}: {v}");
        assert_eq!(v["code"], "invalid_request", "{v}");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains(named.trim_matches('`')), "{network}: {msg}");
        assert!(!msg.contains('\n'), "{msg}");
        assert!(v["hint"].as_str().is_some_and(|h| !h.is_empty()), "{v}");
    }
    let (_, list) = s.get(&alice, "/api/v1/workspaces").await;
    assert_eq!(
        list["workspaces"].as_array().map(Vec::len),
        Some(0),
        "{list}"
    );

    // A template with a bad rule is refused when pushed, naming it.
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/templates/badnet/versions",
            json!({"devcontainer": "{\"image\":\"busybox\"}",
                   "policy": {"network": {"egress": "allowlist", "allow": ["*.org"]}}}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["message"].as_str().unwrap().contains("*.org"), "{v}");
}

/// The address of the workspace's gateway (its resolver), from its `/etc/resolv.conf`.
async fn gateway(s: &TestServer, token: &str, ws: &str) -> String {
    let (code, out) = sh(
        s,
        token,
        ws,
        "awk '/^nameserver/{print $2; exit}' /etc/resolv.conf",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    out.trim().to_string()
}

/// Refused at once (nftables rejects), not timed out or reached.
fn refused(r: &(i64, String)) -> bool {
    r.0 != 0 && r.1.contains("refused")
}

#[tokio::test]
async fn egress_policies_inside_a_workspace() {
    let i = inet::inet();
    let (s, alice) = server().await;
    template(&s, "open", None).await;
    s.create_workspace(&alice, "a", "open").await;
    let web = inet::WEB.to_string();
    let other = inet::OTHER.to_string();
    let metadata = inet::METADATA.to_string();

    // The server's default, allow-all: the public internet, by address and by name.
    let r = http(&s, &alice, "a", &web, "ok.test").await;
    assert!(r.1.contains("web host=ok.test"), "{r:?}");
    let r = http(&s, &alice, "a", &other, "x").await;
    assert!(r.1.contains("other host=x"), "{r:?}");
    let r = sh(&s, &alice, "a", "nslookup ok.test").await;
    assert!(r.1.contains(&web), "{r:?}");
    // Cloud metadata, the host's services and its networks are not reachable, and fail fast.
    let r = http(&s, &alice, "a", &metadata, "metadata").await;
    assert!(refused(&r), "{r:?}");
    let host_service = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = host_service.local_addr().unwrap().port();
    let gw = gateway(&s, &alice, "a").await;
    for addr in [gw.as_str(), "198.18.0.1", "127.0.0.1"] {
        let r = sh(&s, &alice, "a", &format!("echo x | nc -w 5 {addr} {port}")).await;
        assert!(r.0 != 0, "{addr}:{port} reached: {r:?}");
    }

    // A live change: an allowlist of one CIDR, at the next connection, without a restart.
    let (st, v) = put_network(
        &s,
        &alice,
        "a",
        json!({"egress": "allowlist", "allow": ["203.0.113.0/25"]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = http(&s, &alice, "a", &web, "ok.test").await;
    assert!(r.1.contains("web host=ok.test"), "{r:?}");
    let r = http(&s, &alice, "a", &other, "x").await;
    assert!(refused(&r), "{r:?}");
    // No domain rule: no name resolves.
    let r = sh(&s, &alice, "a", "nslookup ok.test").await;
    assert!(!r.1.contains(&web), "{r:?}");

    // Domain rules: allowed names resolve and connect; others get NXDOMAIN.
    let (st, v) = put_network(
        &s,
        &alice,
        "a",
        json!({"egress": "allowlist", "allow": ["ok.test", "rebind.test"]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = sh(&s, &alice, "a", "nslookup evil.test").await;
    assert!(!r.1.contains(&other), "{r:?}");
    // Before the name is resolved, its address is not open.
    let r = http(&s, &alice, "a", &web, "ok.test").await;
    assert!(!r.1.contains("web host="), "{r:?}");
    let r = sh(&s, &alice, "a", "nslookup ok.test").await;
    assert!(r.1.contains(&web), "{r:?}");
    let r = http(&s, &alice, "a", &web, "ok.test").await;
    assert!(r.1.contains("web host=ok.test"), "{r:?}");
    // The allowed name's address with another Host, or another address with the allowed Host:
    // refused by the egress proxy.
    let r = http(&s, &alice, "a", &web, "evil.test").await;
    assert!(!r.1.contains("web host="), "{r:?}");
    let r = http(&s, &alice, "a", &other, "ok.test").await;
    assert!(!r.1.contains("host="), "{r:?}");
    // TLS: the server name decides, the same way.
    for (sni, reaches) in [("evil.test", false), ("ok.test", true)] {
        let hello = inet::client_hello(sni);
        let escaped: String = hello.iter().map(|b| format!("\\{b:03o}")).collect();
        let before = i.tls_seen.lock().unwrap().len();
        let r = sh(
            &s,
            &alice,
            "a",
            &format!("printf '{escaped}' | nc -w 5 {web} 443"),
        )
        .await;
        let seen = i.tls_seen.lock().unwrap()[before..].to_vec();
        let reached = seen
            .iter()
            .any(|b| b.windows(sni.len()).any(|w| w == sni.as_bytes()));
        assert_eq!(reached, reaches, "{sni}: {r:?}");
        assert_eq!(r.1.contains("tls-reached"), reaches, "{sni}: {r:?}");
    }
    // An allowed name that resolves to a protected address (DNS rebinding) opens nothing.
    let r = sh(&s, &alice, "a", "nslookup rebind.test").await;
    assert!(r.1.contains(&metadata), "{r:?}");
    let r = http(&s, &alice, "a", &metadata, "rebind.test").await;
    assert!(!r.1.contains("metadata host="), "{r:?}");

    // The workspace's own policy cannot open what its base (here the server's default) keeps
    // closed: the metadata address stays refused.
    let (st, v) = put_network(
        &s,
        &alice,
        "a",
        json!({"egress": "allow-all", "allow": ["169.254.169.254:80"]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = http(&s, &alice, "a", &metadata, "metadata").await;
    assert!(refused(&r), "{r:?}");

    // deny-all: nothing, not even names.
    let (st, v) = put_network(&s, &alice, "a", json!({"egress": "deny-all"})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = http(&s, &alice, "a", &web, "ok.test").await;
    assert!(refused(&r), "{r:?}");
    let r = sh(&s, &alice, "a", "nslookup ok.test").await;
    assert!(!r.1.contains(&web), "{r:?}");

    // Refusals are counted, and recorded as events.
    let (st, status) = s.get(&alice, "/api/v1/workspaces/a/network").await;
    assert_eq!(st, StatusCode::OK, "{status}");
    assert!(
        status["denied_connections"].as_u64().unwrap() >= 3,
        "{status}"
    );
    assert!(status["address"].as_str().is_some(), "{status}");
    let mut kinds = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let (_, ev) = s
            .get(
                &alice,
                "/api/v1/workspaces/a/events?kind=network.&limit=200",
            )
            .await;
        for e in ev["events"].as_array().into_iter().flatten() {
            kinds.insert(e["reason"].as_str().unwrap_or("").to_string());
        }
        if ["connect", "dns", "proxy"]
            .iter()
            .all(|k| kinds.contains(*k))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    for k in ["connect", "dns", "proxy"] {
        assert!(kinds.contains(k), "no `{k}` denial event: {kinds:?}");
    }
    // ... and in the workspace's session audit, hash-chained with the rest of the log.
    let (_, ws) = s.get(&alice, "/api/v1/workspaces/a").await;
    let id = ws["id"].as_str().unwrap();
    let mut reasons = std::collections::BTreeSet::new();
    for _ in 0..40 {
        let (st, audit) = s
            .get(
                &s.admin,
                &format!("/api/v1/audit?target={id}&action=session.egress_denied&limit=1000"),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{audit}");
        for r in audit["records"].as_array().into_iter().flatten() {
            assert_eq!(r["action"], "session.egress_denied", "{r}");
            assert_eq!(r["outcome"], "denied", "{r}");
            let d: Value = serde_json::from_str(r["details_json"].as_str().unwrap()).unwrap();
            assert_eq!(d["workspace"], "a", "{r}");
            reasons.insert(d["reason"].as_str().unwrap().to_string());
        }
        if ["connect", "dns", "proxy"]
            .iter()
            .all(|k| reasons.contains(*k))
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    for k in ["connect", "dns", "proxy"] {
        assert!(reasons.contains(k), "no `{k}` session record: {reasons:?}");
    }
    let (st, v) = s.get(&s.admin, "/api/v1/audit/verify").await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["ok"], true, "{v}");
}

#[tokio::test]
async fn a_template_policy_binds_the_workspace_and_its_own_policy_only_narrows() {
    let (s, alice) = server().await;
    template(
        &s,
        "locked",
        Some(json!({"egress": "allowlist", "allow": ["203.0.113.0/24"]})),
    )
    .await;
    s.create_workspace(&alice, "a", "locked").await;
    let web = inet::WEB.to_string();
    let other = inet::OTHER.to_string();
    let r = http(&s, &alice, "a", &web, "w").await;
    assert!(r.1.contains("web host=w"), "{r:?}");
    let r = http(&s, &alice, "a", &other, "o").await;
    assert!(refused(&r), "{r:?}");
    // The owner's allow-all does not widen the template's allowlist...
    let (st, v) = put_network(&s, &alice, "a", json!({"egress": "allow-all"})).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["base_source"], "template", "{v}");
    let r = http(&s, &alice, "a", &other, "o").await;
    assert!(refused(&r), "{r:?}");
    // ...but a deny narrows it.
    let (st, v) = put_network(
        &s,
        &alice,
        "a",
        json!({"egress": "allow-all", "deny": [format!("{web}:80")]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = http(&s, &alice, "a", &web, "w").await;
    assert!(refused(&r), "{r:?}");
    // Dropping its own policy: the template's alone again.
    let (st, v) = s
        .call(
            Some(&alice),
            Method::DELETE,
            "/api/v1/workspaces/a/network",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["own"].is_null(), "{v}");
    let r = http(&s, &alice, "a", &web, "w").await;
    assert!(r.1.contains("web host=w"), "{r:?}");

    // A protected range opens only when a rule inside it names it: a template that allows the
    // metadata address's port 80 reaches it, and nothing else of 169.254/16.
    template(
        &s,
        "meta",
        Some(json!({"egress": "allow-all", "allow": ["169.254.169.254:80"]})),
    )
    .await;
    s.create_workspace(&alice, "m", "meta").await;
    let metadata = inet::METADATA.to_string();
    let r = http(&s, &alice, "m", &metadata, "metadata").await;
    assert!(r.1.contains("metadata host=metadata"), "{r:?}");
    let r = sh(&s, &alice, "m", &format!("echo x | nc -w 5 {metadata} 81")).await;
    assert!(refused(&r), "{r:?}");
}

#[tokio::test]
async fn workspaces_cannot_reach_each_other_unless_a_policy_says_so() {
    let (s, alice) = server().await;
    template(&s, "open", None).await;
    s.create_workspace(&alice, "a", "open").await;
    s.create_workspace(&alice, "b", "open").await;
    let (_, b) = s.get(&alice, "/api/v1/workspaces/b/network").await;
    let b_addr = b["address"].as_str().unwrap().to_string();
    let to_b = format!("nc -w 5 {b_addr} 8080 </dev/null");
    let r = sh(
        &s,
        &alice,
        "b",
        "setsid sh -c 'while true; do echo from-b | nc -l -p 8080; done' >/dev/null 2>&1 &",
    )
    .await;
    assert_eq!(r.0, 0, "{r:?}");
    // b answers itself.
    let mut up = false;
    for _ in 0..50 {
        if sh(&s, &alice, "b", "nc -w 2 127.0.0.1 8080 </dev/null")
            .await
            .1
            .contains("from-b")
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(up, "b's listener did not start");
    let r = sh(&s, &alice, "a", &to_b).await;
    assert!(!r.1.contains("from-b"), "a reached b: {r:?}");
    // An allow rule of the whole private range does not open Warren's pool...
    let (st, v) = put_network(
        &s,
        &alice,
        "a",
        json!({"egress": "allow-all", "allow": ["10.0.0.0/8"]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = sh(&s, &alice, "a", &to_b).await;
    assert!(
        !r.1.contains("from-b"),
        "a reached b through 10.0.0.0/8: {r:?}"
    );
    // ...naming the sibling does.
    let (st, v) = put_network(
        &s,
        &alice,
        "a",
        json!({"egress": "allow-all", "allow": ["workspace:b:8080"]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let r = sh(&s, &alice, "a", &to_b).await;
    assert!(r.1.contains("from-b"), "{r:?}");
    // Another user cannot name alice's workspace.
    let bob = s.user_token("bob", "member", None).await;
    s.create_workspace(&bob, "c", "open").await;
    let (st, v) = put_network(
        &s,
        &bob,
        "c",
        json!({"egress": "allow-all", "allow": ["workspace:b"]}),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    // When b goes, a's rule closes (b's address may go to the next workspace).
    let (st, v) = s
        .call(Some(&alice), Method::DELETE, "/api/v1/workspaces/b", None)
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
    let plan: Value = serde_json::from_str(
        &s.state
            .store
            .network_columns(
                s.get(&alice, "/api/v1/workspaces/a").await.1["id"]
                    .as_str()
                    .unwrap(),
            )
            .await
            .unwrap()
            .unwrap()
            .plan
            .unwrap(),
    )
    .unwrap();
    assert!(!plan.to_string().contains(&b_addr), "{plan}");
}

#[tokio::test]
async fn connection_limits_hold() {
    let (s, alice) = server().await;
    template(&s, "limited", Some(json!({"max_connections": 2}))).await;
    s.create_workspace(&alice, "a", "limited").await;
    let web = inet::WEB.to_string();
    // Two connections held open to the echo server, then a third.
    let r = sh(
        &s,
        &alice,
        "a",
        &format!("for i in 1 2; do setsid sh -c 'sleep 30 | nc {web} 9000' >/dev/null 2>&1 & done; sleep 1; echo x | nc -w 3 {web} 9000"),
    )
    .await;
    assert!(r.0 != 0 && !r.1.contains('x'), "{r:?}");
    let r = sh(
        &s,
        &alice,
        "a",
        "kill $(pidof sleep); sleep 1; echo y | nc -w 3 203.0.113.10 9000",
    )
    .await;
    assert!(r.1.contains('y'), "{r:?}");
}

#[tokio::test]
async fn nothing_of_a_workspace_network_is_left_after_delete() {
    let (s, alice) = server().await;
    template(&s, "open", None).await;
    s.create_workspace(&alice, "a", "open").await;
    let (_, w) = s.get(&alice, "/api/v1/workspaces/a").await;
    let id = w["id"].as_str().unwrap().to_string();
    let (_, n) = s.get(&alice, "/api/v1/workspaces/a/network").await;
    let addr = n["address"].as_str().unwrap().to_string();
    let root = s.state().join("workspaces");
    let cfg: warren_runtime::network::NetConfig =
        serde_json::from_slice(&std::fs::read(root.join(".net/config.json")).unwrap()).unwrap();
    let veth = warren_runtime::network::veth_name(&id);
    let links = || {
        String::from_utf8_lossy(
            &std::process::Command::new("ip")
                .args(["-o", "link"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    let rules = || {
        String::from_utf8_lossy(
            &std::process::Command::new("nft")
                .args(["list", "ruleset"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    assert!(links().contains(&veth), "no veth {veth}");
    assert!(
        rules().contains(&id[..8]) || rules().contains(&addr),
        "no rules for {id}"
    );
    assert!(root.join(".net/ipam").join(&addr).exists());
    let (st, v) = s
        .call(Some(&alice), Method::DELETE, "/api/v1/workspaces/a", None)
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let job = s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(!links().contains(&veth), "veth {veth} left");
    let table = String::from_utf8_lossy(
        &std::process::Command::new("nft")
            .args(["list", "table", "inet", &cfg.table])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(
        !table.contains(&id[..8]) && !table.contains(&addr),
        "rules left:\n{table}"
    );
    assert!(
        !root.join(".net/ipam").join(&addr).exists(),
        "address still allocated"
    );
}
