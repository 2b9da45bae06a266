//! Workspaces through the API on a real server with real workspaces (busybox image): create from a
//! template with parameters, jobs and their logs, exec (NDJSON and WebSocket), transitions,
//! conflicts, cancel, visibility between users, pagination, graceful restart.

mod common;

use std::time::Duration;

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Pushes a template `name` whose devcontainer runs `post_create` and `post_start`.
async fn template(s: &TestServer, name: &str, post_create: &str, post_start: &str) {
    let dc = json!({
        "image": "busybox",
        "overrideCommand": true,
        "containerEnv": {"GREETING": "${param:greeting}"},
        // The jobs these tests watch run every lifecycle command.
        "waitFor": "postStartCommand",
        "postCreateCommand": post_create,
        "postStartCommand": post_start,
    })
    .to_string();
    let (st, v) = s
        .post(
            &s.admin,
            &format!("/api/v1/templates/{name}/versions"),
            json!({
                "devcontainer": dc,
                "parameters": [
                    {"name": "greeting", "type": "string", "default": "hello",
                     "validation": {"regex": "^[a-z]+$"}},
                    {"name": "size", "type": "number", "default": 1,
                     "validation": {"min": 1, "max": 4}}
                ],
                "ceilings": {"cpus": 2.0, "memory_mb": 512, "pids": 256},
            }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
}

async fn create(s: &TestServer, token: &str, name: &str, tpl: &str, params: Value) -> Value {
    let (st, v) = s
        .post(
            token,
            "/api/v1/workspaces",
            json!({"name": name, "template": tpl, "parameters": params}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    v
}

async fn exec(s: &TestServer, token: &str, ws: &str, body: Value) -> (StatusCode, Vec<Value>) {
    let resp = s
        .http
        .post(format!("{}/api/v1/workspaces/{ws}/exec", s.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let st = resp.status();
    let text = resp.text().await.unwrap();
    let events = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
        .collect();
    (st, events)
}

/// A job's log, as text.
async fn job_log(s: &TestServer, token: &str, id: &str) -> String {
    s.http
        .get(format!("{}/api/v1/jobs/{id}/logs", s.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn stream_text(events: &[Value], kind: &str) -> String {
    events
        .iter()
        .filter(|e| e["type"] == kind)
        .filter_map(|e| e["text"].as_str())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_exec_stop_start_delete_through_the_api() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s, "tiny", "echo created >> /root/marks", "echo started").await;

    // A parameter that breaks its validation is named in a 400.
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/workspaces",
            json!({"name": "w1", "template": "tiny", "parameters": {"size": 9}}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["code"], "invalid_parameter");
    assert!(v["message"].as_str().unwrap().contains("size"), "{v}");
    // Resources above the template's ceilings are refused.
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/workspaces",
            json!({"name": "w1", "template": "tiny", "limits": {"memory_mb": 4096}}),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("limit_exceeded")),
        "{v}"
    );

    let acc = create(&s, &s.admin, "w1", "tiny", json!({"greeting": "howdy"})).await;
    assert_eq!(acc["job"]["kind"], "create");
    let job = s
        .wait_job(&s.admin, acc["job"]["id"].as_str().unwrap())
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, ws) = s.get(&s.admin, "/api/v1/workspaces/w1").await;
    assert_eq!(ws["state"], "running", "{ws}");

    // The job log and the lifecycle log.
    let log = job_log(&s, &s.admin, job["id"].as_str().unwrap()).await;
    assert!(log.contains("Starting workspace w1"), "{log}");
    let life = s
        .http
        .get(format!("{}/api/v1/workspaces/w1/logs", s.url))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(life.contains("started"), "{life}");

    // Exec: stdout, stderr, stdin, the exit code, the parameter in the environment.
    let (st, ev) = exec(
        &s,
        &s.admin,
        "w1",
        json!({"command": ["sh", "-c", "echo out:$GREETING; echo err >&2; cat; exit 3"], "stdin": "typed"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(stream_text(&ev, "stdout"), "out:howdy\ntyped");
    assert_eq!(stream_text(&ev, "stderr"), "err\n");
    assert_eq!(ev.last().unwrap(), &json!({"type": "exit", "code": 3}));
    // A timeout kills the command.
    let (_, ev) = exec(
        &s,
        &s.admin,
        "w1",
        json!({"command": ["sleep", "30"], "timeout": "1s"}),
    )
    .await;
    assert!(ev.iter().any(|e| e["type"] == "error"), "{ev:?}");
    assert_eq!(ev.last().unwrap()["code"], 137, "{ev:?}");
    // ... and what it started: a shell's children too (a pipeline, a background job).
    let (_, ev) = exec(
        &s,
        &s.admin,
        "w1",
        json!({"command": ["sh", "-c", "sleep 4101 & sleep 4102 | cat; wait"], "timeout": "1s"}),
    )
    .await;
    assert_eq!(ev.last().unwrap()["code"], 137, "{ev:?}");
    let (_, ev) = exec(&s, &s.admin, "w1", json!({"command": ["ps", "-o", "args"]})).await;
    let ps = stream_text(&ev, "stdout");
    assert!(!ps.contains("sleep 410"), "{ps}");
    // Bad exec input.
    let (st, _) = exec(&s, &s.admin, "w1", json!({"command": []})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // A command the workspace does not have, or a missing directory, is the caller's mistake:
    // 400 with what is wrong, not a server error.
    for (body, says) in [
        (
            json!({"command": ["no-such-tool"]}),
            "command `no-such-tool` not found in the workspace",
        ),
        (
            json!({"command": ["true"], "cwd": "/nowhere"}),
            "working directory /nowhere does not exist",
        ),
    ] {
        let (st, ev) = exec(&s, &s.admin, "w1", body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{ev:?}");
        assert_eq!(ev[0]["code"], "invalid_request", "{ev:?}");
        assert!(ev[0]["message"].as_str().unwrap().contains(says), "{ev:?}");
    }

    // Stop, start (postCreate does not run again), restart.
    for (what, state) in [
        ("stop", "stopped"),
        ("start", "running"),
        ("restart", "running"),
    ] {
        let (st, acc) = s
            .post(
                &s.admin,
                &format!("/api/v1/workspaces/w1/{what}"),
                json!({}),
            )
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{what}: {acc}");
        let job = s
            .wait_job(&s.admin, acc["job"]["id"].as_str().unwrap())
            .await;
        assert_eq!(job["status"], "succeeded", "{what}: {job}");
        let (_, ws) = s.get(&s.admin, "/api/v1/workspaces/w1").await;
        assert_eq!(ws["state"], state, "{what}");
    }
    let (_, ev) = exec(
        &s,
        &s.admin,
        "w1",
        json!({"command": ["cat", "/root/marks"]}),
    )
    .await;
    assert_eq!(
        stream_text(&ev, "stdout"),
        "created\n",
        "postCreate ran once"
    );
    let (_, jobs) = s.get(&s.admin, "/api/v1/workspaces/w1/jobs").await;
    let kinds: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["restart", "start", "stop", "create"]);

    // Metrics saw the transitions and the workspace.
    let m = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains(r#"warren_transition_duration_seconds_count{kind="create"} 1"#),
        "{m}"
    );
    assert!(m.contains(r#"warren_workspaces{state="running"} 1"#), "{m}");
    assert!(m.contains("warren_execs_total 5"), "{m}");

    // Delete: the record goes, and so does everything on the host.
    let (st, acc) = s
        .call(
            Some(&s.admin),
            Method::DELETE,
            "/api/v1/workspaces/w1",
            None,
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let job = s
        .wait_job(&s.admin, acc["job"]["id"].as_str().unwrap())
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        s.get(&s.admin, "/api/v1/workspaces/w1").await.0,
        StatusCode::NOT_FOUND
    );
    assert!(s.supervisors().is_empty());
    assert_eq!(
        std::fs::read_dir(s.state().join("projects"))
            .unwrap()
            .count(),
        0,
        "project folder removed"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_transitions_get_409_and_a_stuck_one_can_be_canceled() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s, "slow", "true", "sleep 3").await;
    let acc = create(&s, &s.admin, "w", "slow", json!({})).await;
    let job_id = acc["job"]["id"].as_str().unwrap().to_string();
    // While the create job runs (postStart sleeps), other transitions are refused.
    for what in ["stop", "start", "restart"] {
        let (st, v) = s
            .post(&s.admin, &format!("/api/v1/workspaces/w/{what}"), json!({}))
            .await;
        assert_eq!(st, StatusCode::CONFLICT, "{what}: {v}");
        assert_eq!(v["code"], "transition_in_progress");
    }
    let (st, _) = s
        .call(Some(&s.admin), Method::DELETE, "/api/v1/workspaces/w", None)
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let job = s.wait_job(&s.admin, &job_id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, ws) = s.get(&s.admin, "/api/v1/workspaces/w").await;
    assert_eq!(ws["state"], "running", "state stayed consistent: {ws}");

    // A create stuck in a lifecycle command is canceled: the workspace ends up failed and stopped.
    template(&s, "stuck", "sleep 600", "true").await;
    let acc = create(&s, &s.admin, "stuck", "stuck", json!({})).await;
    let job_id = acc["job"]["id"].as_str().unwrap().to_string();
    for _ in 0..100 {
        let (_, ws) = s.get(&s.admin, "/api/v1/workspaces/stuck").await;
        if ws["state"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (st, j) = s
        .post(
            &s.admin,
            &format!("/api/v1/jobs/{job_id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{j}");
    assert_eq!(j["status"], "canceled");
    let (_, ws) = s.get(&s.admin, "/api/v1/workspaces/stuck").await;
    assert_eq!(ws["state"], "failed", "{ws}");
    assert!(
        ws["last_error"].as_str().unwrap().contains("canceled"),
        "{ws}"
    );
    // Canceling again is refused; the workspace can be started again.
    let (st, _) = s
        .post(
            &s.admin,
            &format!("/api/v1/jobs/{job_id}/cancel"),
            json!({}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_see_only_their_workspaces_and_tokens_only_theirs() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s, "tiny", "true", "true").await;
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    let auditor = s.user_token("audrey", "auditor", None).await;
    let a = create(&s, &alice, "dev", "tiny", json!({})).await;
    s.wait_job(&alice, a["job"]["id"].as_str().unwrap()).await;
    // Bob may use the same name: names are per owner.
    let b = create(&s, &bob, "dev", "tiny", json!({})).await;
    s.wait_job(&bob, b["job"]["id"].as_str().unwrap()).await;
    let a_id = a["workspace"]["id"].as_str().unwrap();

    // Bob cannot see Alice's, by id or by name.user, whatever the verb: 404, never 403.
    for (m, path) in [
        (Method::GET, format!("/api/v1/workspaces/{a_id}")),
        (Method::GET, "/api/v1/workspaces/dev.alice".to_string()),
        (
            Method::POST,
            "/api/v1/workspaces/dev.alice/stop".to_string(),
        ),
        (Method::DELETE, format!("/api/v1/workspaces/{a_id}")),
        (
            Method::POST,
            "/api/v1/workspaces/dev.alice/exec".to_string(),
        ),
        (Method::GET, "/api/v1/workspaces/dev.alice/logs".to_string()),
        (
            Method::GET,
            format!("/api/v1/jobs/{}", a["job"]["id"].as_str().unwrap()),
        ),
    ] {
        let body = (m == Method::POST).then(|| json!({"command": ["true"]}));
        let (st, v) = s.call(Some(&bob), m.clone(), &path, body).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{m} {path}: {v}");
    }
    let (st, _) = s.get(&bob, "/api/v1/workspaces?owner=all").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (_, mine) = s.get(&bob, "/api/v1/workspaces").await;
    assert_eq!(mine["workspaces"].as_array().unwrap().len(), 1);
    // The auditor reads everything and changes nothing.
    let (_, all) = s.get(&auditor, "/api/v1/workspaces?owner=all").await;
    assert_eq!(all["workspaces"].as_array().unwrap().len(), 2);
    let (st, _) = s
        .post(&auditor, "/api/v1/workspaces/dev.alice/stop", json!({}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    let (st, _) = exec(&s, &auditor, "dev.alice", json!({"command": ["true"]})).await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    // The admin reaches Alice's workspace by name.user.
    let (_, ev) = exec(
        &s,
        &s.admin,
        "dev.alice",
        json!({"command": ["echo", "hi"]}),
    )
    .await;
    assert_eq!(stream_text(&ev, "stdout"), "hi\n");

    // A token restricted to one workspace sees only it, and cannot create.
    let (st, v) = s
        .post(&alice, "/api/v1/tokens", json!({"workspaces": ["dev"], "scopes": ["workspace:read", "workspace:exec"], "lifetime": "10m"}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let agent = v["token"].as_str().unwrap().to_string();
    let (_, ev) = exec(&s, &agent, "dev", json!({"command": ["echo", "ok"]})).await;
    assert_eq!(stream_text(&ev, "stdout"), "ok\n");
    let (st, _) = s
        .post(&agent, "/api/v1/workspaces/dev/stop", json!({}))
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "no workspace:write scope");
    let (_, l) = s.get(&agent, "/api/v1/workspaces").await;
    assert_eq!(l["workspaces"].as_array().unwrap().len(), 1);
    let (st, _) = s
        .post(
            &agent,
            "/api/v1/workspaces",
            json!({"name": "x", "template": "tiny"}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_exec_streams_stdin_and_resizes_a_pty() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s, "tiny", "true", "true").await;
    let a = create(&s, &s.admin, "w", "tiny", json!({})).await;
    s.wait_job(&s.admin, a["job"]["id"].as_str().unwrap()).await;

    let connect = |req: Value| {
        let url = format!(
            "{}/api/v1/workspaces/w/exec/ws",
            s.url.replace("http://", "ws://")
        );
        let token = s.admin.clone();
        async move {
            let mut r = url.into_client_request().unwrap();
            r.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let (mut ws, _) = tokio_tungstenite::connect_async(r).await.unwrap();
            ws.send(Message::Text(req.to_string().into()))
                .await
                .unwrap();
            ws
        }
    };
    // Pipes: stdin then EOF; the output comes back and the exit code last.
    let mut ws = connect(json!({"command": ["sh", "-c", "cat; echo done >&2; exit 5"]})).await;
    ws.send(Message::Binary([&[0u8][..], b"abc"].concat().into()))
        .await
        .unwrap();
    ws.send(Message::Binary(vec![1u8].into())).await.unwrap();
    let (mut out, mut err, mut code) = (Vec::new(), Vec::new(), None);
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Binary(b) = m {
            match b[0] {
                1 => out.extend_from_slice(&b[1..]),
                2 => err.extend_from_slice(&b[1..]),
                3 => code = Some(serde_json::from_slice::<Value>(&b[1..]).unwrap()["code"].clone()),
                other => panic!(
                    "unexpected channel {other}: {:?}",
                    String::from_utf8_lossy(&b[1..])
                ),
            }
        }
    }
    assert_eq!(out, b"abc");
    assert_eq!(err, b"done\n");
    assert_eq!(code, Some(json!(5)));

    // A PTY: the size given, then a resize the program sees.
    let mut ws =
        connect(json!({"command": ["sh", "-c", "stty size; read x; stty size"], "tty": [24, 80]}))
            .await;
    let mut out = String::new();
    let mut resized = false;
    let mut code = None;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
        if let Message::Binary(b) = m {
            match b[0] {
                1 => out.push_str(&String::from_utf8_lossy(&b[1..])),
                3 => code = Some(serde_json::from_slice::<Value>(&b[1..]).unwrap()["code"].clone()),
                _ => {}
            }
            if !resized && out.contains("24 80") {
                resized = true;
                let sz = json!({"rows": 30, "cols": 100}).to_string();
                ws.send(Message::Binary([&[2u8][..], sz.as_bytes()].concat().into()))
                    .await
                    .unwrap();
                ws.send(Message::Binary([&[0u8][..], b"\n"].concat().into()))
                    .await
                    .unwrap();
            }
        }
    }
    assert!(out.contains("24 80"), "{out}");
    assert!(out.contains("30 100"), "{out}");
    assert_eq!(code, Some(json!(0)));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_filters_and_a_graceful_restart_keep_workspaces_running() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s, "tiny", "true", "true").await;
    for n in ["a1", "a2", "b1"] {
        let acc = create(&s, &s.admin, n, "tiny", json!({})).await;
        s.wait_job(&s.admin, acc["job"]["id"].as_str().unwrap())
            .await;
    }
    let (_, p1) = s.get(&s.admin, "/api/v1/workspaces?limit=2").await;
    let names: Vec<&str> = p1["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a1", "a2"]);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = s
        .get(
            &s.admin,
            &format!("/api/v1/workspaces?limit=2&cursor={cursor}"),
        )
        .await;
    assert_eq!(p2["workspaces"][0]["name"], "b1");
    assert!(p2["next_cursor"].is_null());
    let (_, f) = s
        .get(
            &s.admin,
            "/api/v1/workspaces?name_prefix=a&status=running&template=tiny",
        )
        .await;
    assert_eq!(f["workspaces"].as_array().unwrap().len(), 2);
    for bad in ["limit=0", "status=sleeping", "cursor=zz", "colour=red"] {
        let (st, v) = s.get(&s.admin, &format!("/api/v1/workspaces?{bad}")).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["code"], "invalid_request");
    }

    // Graceful shutdown leaves the workspaces running; a new server picks them up.
    let before = s.supervisors();
    assert_eq!(before.len(), 3);
    let s = s.restart().await;
    assert_eq!(s.supervisors(), before);
    let (_, ev) = exec(
        &s,
        &s.admin,
        "b1",
        json!({"command": ["echo", "still here"]}),
    )
    .await;
    assert_eq!(stream_text(&ev, "stdout"), "still here\n");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_of_server_users_cannot_reach_the_host() {
    let s = TestServer::start().await;
    s.import_busybox();
    let member = s.user_token("mallory", "template-admin", None).await;
    // A bind mount of a host path, as a mount or as the workspace mount, is refused at create
    // time, before anything runs.
    for (i, dc) in [
        json!({"image": "busybox", "mounts": ["type=bind,source=/etc,target=/hostetc"]}),
        json!({"image": "busybox", "mounts": [{"type": "bind", "source": "/", "target": "/host"}]}),
        json!({"image": "busybox", "workspaceMount": "type=bind,source=/root,target=/w", "workspaceFolder": "/w"}),
    ]
    .into_iter()
    .enumerate()
    {
        let tpl = format!("evil{i}");
        let (st, v) = s
            .post(
                &member,
                &format!("/api/v1/templates/{tpl}/versions"),
                json!({"devcontainer": dc.to_string()}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let (st, v) = s
            .post(&member, "/api/v1/workspaces", json!({"name": "x", "template": tpl}))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["message"].as_str().unwrap().contains("bind mounts"), "{v}");
    }
    // `${localEnv:...}` does not read the server's environment (templates refuse it outright;
    // an uploaded folder gets an empty environment).
    let dc =
        json!({"image": "busybox", "containerEnv": {"LEAK": "[${localEnv:HOME}${localEnv:PATH}]"}})
            .to_string();
    let (st, v) = s
        .post(
            &member,
            "/api/v1/templates/env/versions",
            json!({"devcontainer": dc}),
        )
        .await;
    assert_eq!(
        (st, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_config")),
        "{v}"
    );
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(dc.len() as u64);
    h.set_mode(0o644);
    tar.append_data(&mut h, ".devcontainer/devcontainer.json", dc.as_bytes())
        .unwrap();
    let body = tar.into_inner().unwrap();
    let resp = s
        .http
        .post(format!("{}/api/v1/files", s.url))
        .bearer_auth(&member)
        .header("content-type", "application/x-tar")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let file: Value = resp.json().await.unwrap();
    let (st, acc) = s
        .post(
            &member,
            "/api/v1/workspaces",
            json!({"name": "z", "file_id": file["id"]}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{acc}");
    let job = s
        .wait_job(&member, acc["job"]["id"].as_str().unwrap())
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, ev) = exec(
        &s,
        &member,
        "z",
        json!({"command": ["sh", "-c", "echo $LEAK"]}),
    )
    .await;
    assert_eq!(stream_text(&ev, "stdout"), "[]\n");
    // Nothing under the projects folder is left by the refused creations: one folder and its
    // server-side configuration.
    assert_eq!(
        std::fs::read_dir(s.state().join("projects"))
            .unwrap()
            .count(),
        2
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_change_within_their_rules_and_rebuild_the_workspace() {
    let s = TestServer::start().await;
    s.import_busybox();
    let version = |extra: &str| {
        json!({
            "devcontainer": json!({
                "image": "busybox",
                "containerEnv": {"GREETING": "${param:greeting}", "REGION": "${param:region}", "EXTRA": extra},
                "waitFor": "postCreateCommand",
                "postCreateCommand": "echo once >> /root/marks",
            }).to_string(),
            "parameters": [
                {"name": "greeting", "type": "string", "default": "hello"},
                {"name": "region", "type": "string", "default": "eu", "mutable": false},
                {"name": "disk", "type": "number", "default": 10, "validation": {"monotonic": "increasing"}},
            ],
        })
    };
    let (st, v) = s
        .post(&s.admin, "/api/v1/templates/upd/versions", version("v1"))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let acc = create(&s, &s.admin, "w", "upd", json!({})).await;
    s.wait_job(&s.admin, acc["job"]["id"].as_str().unwrap())
        .await;
    async fn env(s: &TestServer) -> String {
        let (_, ev) = exec(
            s,
            &s.admin,
            "w",
            json!({"command": ["sh", "-c", "echo $GREETING $REGION $EXTRA; cat /root/marks"]}),
        )
        .await;
        stream_text(&ev, "stdout")
    }
    assert_eq!(env(&s).await, "hello eu v1\nonce\n");

    // Rules: immutable stays, monotonic only grows; the message names the parameter.
    for (params, name) in [
        (json!({"region": "us"}), "region"),
        (json!({"disk": 5}), "disk"),
    ] {
        let (st, v) = s
            .call(
                Some(&s.admin),
                Method::PATCH,
                "/api/v1/workspaces/w",
                Some(json!({"parameters": params})),
            )
            .await;
        assert_eq!(
            (st, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_parameter")),
            "{v}"
        );
        assert!(v["message"].as_str().unwrap().contains(name), "{v}");
    }
    // A mutable change rebuilds the workspace: new environment, same files, postCreate not rerun.
    let (st, acc) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/workspaces/w",
            Some(json!({"parameters": {"greeting": "bye", "disk": 20}})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{acc}");
    assert_eq!(acc["job"]["kind"], "update");
    let job = s
        .wait_job(&s.admin, acc["job"]["id"].as_str().unwrap())
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(env(&s).await, "bye eu v1\nonce\n");
    // Moving to a new template version.
    let (st, v) = s
        .post(&s.admin, "/api/v1/templates/upd/versions", version("v2"))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let (st, acc) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/workspaces/w",
            Some(json!({"template_version": 2})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{acc}");
    s.wait_job(&s.admin, acc["job"]["id"].as_str().unwrap())
        .await;
    assert_eq!(env(&s).await, "bye eu v2\nonce\n");
    let (_, ws) = s.get(&s.admin, "/api/v1/workspaces/w").await;
    assert_eq!(ws["state"], "running");
    // The configuration the engine uses lives outside the workspace's reach: replacing the copy in
    // the project folder with a symlink changes nothing on a rebuild.
    let (_, ev) = exec(&s, &s.admin, "w", json!({"command": ["sh", "-c",
        "cd /workspaces/* && rm -f .devcontainer/devcontainer.json && ln -s /etc/shadow .devcontainer/devcontainer.json && echo ok"]})).await;
    assert_eq!(stream_text(&ev, "stdout"), "ok\n", "{ev:?}");
    let (st, acc) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/workspaces/w",
            Some(json!({"parameters": {"greeting": "again"}})),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{acc}");
    let job = s
        .wait_job(&s.admin, acc["job"]["id"].as_str().unwrap())
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(env(&s).await, "again eu v2\nonce\n");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_client_left_is_hung_up_and_host_local_workspaces_stay_hidden() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s, "tiny", "true", "true").await;
    let acc = create(&s, &s.admin, "w", "tiny", json!({})).await;
    s.wait_job(&s.admin, acc["job"]["id"].as_str().unwrap())
        .await;

    // Start a long command, read its first line, then go away.
    let mut resp = s
        .http
        .post(format!("{}/api/v1/workspaces/w/exec", s.url))
        .bearer_auth(&s.admin)
        .json(&json!({"command": ["sh", "-c", "echo started; exec sleep 1000"]}))
        .send()
        .await
        .unwrap();
    let first = resp.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("started"));
    drop(resp);
    let mut gone = false;
    for _ in 0..100 {
        let (_, ev) = exec(
            &s,
            &s.admin,
            "w",
            json!({"command": ["sh", "-c", "ps -o args | grep -c '[s]leep 1000' || true"]}),
        )
        .await;
        if stream_text(&ev, "stdout").trim() == "0" {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(gone, "the command of a client that left is still running");

    // A workspace made on the host with the embedded CLI is not the server's to show.
    let proj = s.dir.path().join("local-proj");
    std::fs::create_dir_all(proj.join(".devcontainer")).unwrap();
    std::fs::write(
        proj.join(".devcontainer/devcontainer.json"),
        r#"{"image": "busybox"}"#,
    )
    .unwrap();
    let o = std::process::Command::new(common::warren_exe())
        .args(["--local", "up"])
        .arg(&proj)
        .env("WARREN_STATE_DIR", s.state())
        .env("WARREN_CONFIG_DIR", s.dir.path().join("no-config"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = std::process::Command::new(common::warren_exe())
        .args(["--local", "list", "--json"])
        .env("WARREN_STATE_DIR", s.state())
        .env("WARREN_CONFIG_DIR", s.dir.path().join("no-config"))
        .output()
        .unwrap();
    let local: Value = serde_json::from_slice(&o.stdout).unwrap();
    let local_id = local[0]["id"].as_str().unwrap().to_string();
    let (st, _) = s
        .get(&s.admin, &format!("/api/v1/workspaces/{local_id}"))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = exec(&s, &s.admin, &local_id, json!({"command": ["true"]})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, all) = s.get(&s.admin, "/api/v1/workspaces?owner=all").await;
    let names: Vec<&str> = all["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["w"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_a_job_log_gives_every_line_once_then_the_outcome() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(
        &s,
        "chatty",
        "for i in 1 2 3; do echo line$i; sleep 0.2; done",
        "echo started",
    )
    .await;
    let acc = create(&s, &s.admin, "w", "chatty", json!({})).await;
    let id = acc["job"]["id"].as_str().unwrap().to_string();
    let text = s
        .http
        .get(format!("{}/api/v1/jobs/{id}/logs?follow=true", s.url))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    let (last, lines) = events.split_last().unwrap();
    assert_eq!(*last, "event: end\ndata: succeeded", "{text}");
    let followed: Vec<&str> = lines
        .iter()
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect();
    let plain = s
        .http
        .get(format!("{}/api/v1/jobs/{id}/logs", s.url))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(followed, plain.lines().collect::<Vec<_>>());
    for want in ["line1", "line2", "line3", "started"] {
        assert_eq!(
            followed.iter().filter(|l| **l == want).count(),
            1,
            "{want}: {followed:?}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_records_do_not_show_host_paths() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s, "tiny", "true", "true").await;
    let acc = create(&s, &s.admin, "w", "tiny", json!({})).await;
    s.wait_job(&s.admin, acc["job"]["id"].as_str().unwrap())
        .await;
    let state = s.state().display().to_string();
    for path in ["/api/v1/workspaces/w", "/api/v1/workspaces"] {
        let (_, v) = s.get(&s.admin, path).await;
        assert!(!v.to_string().contains(&state), "{path}: {v}");
    }
    assert!(!acc.to_string().contains(&state), "{acc}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privileges_need_the_administrators_consent_and_the_folder_is_the_remote_users() {
    for allow in [false, true] {
        let s = TestServer::start_with(warren_server::config::ConfigLayer {
            allow_privileges: Some(allow),
            ..Default::default()
        })
        .await;
        s.import_busybox();
        let dc = json!({"image": "busybox", "capAdd": ["SYS_PTRACE"], "remoteUser": "dev",
                        "initializeCommand": "touch /tmp/never-on-the-server"})
        .to_string();
        let (st, v) = s
            .post(
                &s.admin,
                "/api/v1/templates/ptrace/versions",
                json!({"devcontainer": dc}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        let v = create(&s, &s.admin, "p", "ptrace", json!({})).await;
        let job = s.wait_job(&s.admin, v["job"]["id"].as_str().unwrap()).await;
        let log = job_log(&s, &s.admin, job["id"].as_str().unwrap()).await;
        if !allow {
            assert_eq!(job["status"], "failed", "{job}");
            let err = job["error"].as_str().unwrap();
            assert!(
                err.contains(
                    "asks for capabilities CAP_SYS_PTRACE, which this server does not grant"
                ),
                "{err}"
            );
            assert!(
                log.contains("--allow-privileges"),
                "the hint is in the log: {log}"
            );
        } else {
            assert_eq!(job["status"], "succeeded", "{job} {log}");
            let (_, ev) = exec(
                &s,
                &s.admin,
                "p",
                json!({"command": ["sh", "-c", "grep CapBnd /proc/self/status; id -un; stat -c %U . && touch mine"]}),
            )
            .await;
            let out = stream_text(&ev, "stdout");
            // A non-root user has no effective capabilities; the bounding set shows what the
            // workspace was granted.
            let eff = out
                .lines()
                .find_map(|l| l.strip_prefix("CapBnd:\t"))
                .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
                .unwrap_or(0);
            assert_ne!(eff & (1 << 19), 0, "{out}");
            assert!(
                out.ends_with("dev\ndev\n"),
                "the uploaded folder belongs to the remote user, who can write to it: {out} {}",
                stream_text(&ev, "stderr")
            );
        }
        assert!(
            !std::path::Path::new("/tmp/never-on-the-server").exists(),
            "a server never runs initializeCommand"
        );
        // Whether or not privileges are allowed, no route brings a host path into the workspace:
        // not runArgs, not an image's metadata label.
        for (tpl, dc) in [
            (
                "runmount",
                json!({"image": "busybox", "runArgs": ["--mount", "type=bind,source=/,target=/host"]}),
            ),
            (
                "dotdot",
                json!({"image": "busybox",
                       "mounts": ["type=bind,source=${localWorkspaceFolder}/..,target=/up"]}),
            ),
        ] {
            let (st, v) = s
                .post(
                    &s.admin,
                    &format!("/api/v1/templates/{tpl}/versions"),
                    json!({"devcontainer": dc.to_string()}),
                )
                .await;
            assert_eq!(st, StatusCode::CREATED, "{v}");
            let (st, v) = s
                .post(
                    &s.admin,
                    "/api/v1/workspaces",
                    json!({"name": tpl, "template": tpl}),
                )
                .await;
            let err = if st == StatusCode::ACCEPTED {
                let job = s.wait_job(&s.admin, v["job"]["id"].as_str().unwrap()).await;
                assert_eq!(job["status"], "failed", "{tpl}: {job}");
                job["error"].as_str().unwrap().to_string()
            } else {
                assert_eq!(st, StatusCode::BAD_REQUEST, "{tpl}: {v}");
                v["message"].as_str().unwrap().to_string()
            };
            assert!(
                err.contains("bind mounts of host paths are not allowed"),
                "{tpl}: {err}"
            );
        }
        s.stop().await;
    }
}
