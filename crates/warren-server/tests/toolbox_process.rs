//! Toolbox processes on a real server with real workspaces (busybox): runs (argv, shell, cwd,
//! env, user, exit codes, Server-Sent Events, time limits, output floods), background processes
//! (stdin, signals, wait, output offsets and the ring, limits), sessions (cwd and exports carry
//! over), authorization, bad input and the session audit.

mod common;

use std::time::Duration;

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn setup() -> TestServer {
    let s = TestServer::start().await;
    s.import_busybox();
    let dc = json!({"image": "busybox", "overrideCommand": true}).to_string();
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/templates/bb/versions",
            json!({"devcontainer": dc}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    s.create_workspace(&s.admin, "w", "bb").await;
    s
}

const TB: &str = "/api/v1/workspaces/w/toolbox";

async fn run(s: &TestServer, body: Value) -> (StatusCode, Value) {
    s.post(&s.admin, &format!("{TB}/process/run"), body).await
}

/// Server-Sent Events as (event, data) pairs.
fn sse_events(text: &str) -> Vec<(String, Value)> {
    let mut out = vec![];
    for block in text.split("\n\n") {
        let mut ev = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event: ") {
                ev = e.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        if !ev.is_empty() {
            out.push((ev, serde_json::from_str(&data).unwrap_or(Value::Null)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_commands_with_argv_shell_cwd_env_user_and_streams() {
    let s = setup().await;

    // argv, exit code 0, stdout.
    let (st, r) = run(&s, json!({"command": ["echo", "hello", "world"]})).await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(r["stdout"], "hello world\n");
    assert_eq!(r["stderr"], "");
    assert_eq!(r["timed_out"], false);
    assert_eq!(r["stdout_truncated"], false);

    // A shell line: pipes, stderr, a non-zero exit code.
    let (_, r) = run(
        &s,
        json!({"shell": "echo out; echo err >&2; printf 'a\\nb\\n' | wc -l; exit 7"}),
    )
    .await;
    assert_eq!(r["exit_code"], 7, "{r}");
    assert_eq!(r["stdout"], "out\n2\n", "{r}");
    assert_eq!(r["stderr"], "err\n", "{r}");

    // cwd, env, stdin, user.
    let (_, r) = run(
        &s,
        json!({"shell": "pwd; echo $FOO; cat", "cwd": "/tmp", "env": {"FOO": "bar baz"}, "stdin": "from stdin"}),
    )
    .await;
    assert_eq!(r["stdout"], "/tmp\nbar baz\nfrom stdin", "{r}");
    let (_, r) = run(&s, json!({"command": ["id", "-u"], "user": "dev"})).await;
    assert_eq!(r["stdout"], "1000\n", "{r}");
    let (_, r) = run(&s, json!({"command": ["id", "-u"]})).await;
    assert_eq!(r["stdout"], "0\n", "{r}");
    // A missing program, directory or user is the request's mistake.
    let (st, r) = run(&s, json!({"command": ["true"], "cwd": "/nonexistent"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{r}");
    let (st, r) = run(&s, json!({"command": ["true"], "user": "nobody-here"})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{r}");
    let (st, r) = run(&s, json!({"command": ["no-such-program"]})).await;
    assert!(
        st == StatusCode::BAD_REQUEST || r["exit_code"] == 127,
        "{st} {r}"
    );

    // Server-Sent Events: output in order, then the exit.
    let resp = s
        .http
        .post(format!("{}{TB}/process/run", s.url))
        .bearer_auth(&s.admin)
        .header("accept", "text/event-stream")
        .json(&json!({"shell": "for i in 1 2 3; do echo line$i; sleep 0.1; done; echo oops >&2; exit 3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let evs = sse_events(&resp.text().await.unwrap());
    let stdout: String = evs
        .iter()
        .filter(|(e, _)| e == "stdout")
        .map(|(_, d)| d["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(stdout, "line1\nline2\nline3\n", "{evs:?}");
    assert!(evs
        .iter()
        .any(|(e, d)| e == "stderr" && d["text"] == "oops\n"));
    let (last, data) = evs.last().unwrap();
    assert_eq!(last, "exit", "{evs:?}");
    assert_eq!(data["code"], 3);
    assert_eq!(data["timed_out"], false);

    // Another user's workspace is not found; a token without exec is refused.
    let bob = s.user_token("bob", "member", None).await;
    let (st, v) = s
        .post(
            &bob,
            &format!("{TB}/process/run"),
            json!({"command": ["true"]}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (_, me) = s.get(&s.admin, "/api/v1/me").await;
    let admin_name = me["user"]["username"].as_str().unwrap().to_string();
    let (st, _) = s
        .post(
            &bob,
            &format!("/api/v1/workspaces/w.{admin_name}/toolbox/process/run"),
            json!({"command": ["true"]}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = s
        .get(
            &bob,
            &format!("/api/v1/workspaces/w.{admin_name}/toolbox/processes"),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let reader = s.token_for(&admin_name, Some(&["workspace:read"])).await;
    let (st, _) = s
        .post(
            &reader,
            &format!("{TB}/process/run"),
            json!({"command": ["true"]}),
        )
        .await;
    assert_eq!(st, StatusCode::FORBIDDEN);

    // Bad input: one line, a hint, never a process.
    for (body, field) in [
        (
            json!({"command": ["true"], "shell": "true"}),
            "command, shell",
        ),
        (json!({}), "command"),
        (json!({"command": []}), "command"),
        (json!({"shell": "  "}), "shell"),
        (json!({"command": ["true"], "timeout": "soon"}), "timeout"),
        (json!({"command": ["true"], "timeout": "0s"}), "timeout"),
        (json!({"command": ["true"], "env": {"A=B": "x"}}), "env"),
        (json!({"command": ["true"], "name": "x"}), "name"),
        (json!({"command": ["true"], "bogus": 1}), "bogus"),
    ] {
        let (st, v) = run(&s, body.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["code"], "invalid_request", "{v}");
        assert!(
            v["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }

    // The session audit has each process's start and end, with argv, user and exit code.
    let (st, a) = s
        .get(
            &s.admin,
            "/api/v1/audit?action=session.process_end&limit=500",
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{a}");
    let ends: Vec<Value> = a["records"]
        .as_array()
        .or(a.as_array())
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            serde_json::from_str(r["details_json"].as_str().unwrap_or("null"))
                .unwrap_or(r["details"].clone())
        })
        .collect();
    let seven = ends
        .iter()
        .find(|d| d["exit_code"] == 7)
        .unwrap_or_else(|| panic!("no end record with exit code 7: {a}"));
    assert_eq!(seven["argv"][0], "/bin/sh");
    assert_eq!(seven["via"], "toolbox");
    assert!(seven["started_at"].is_string() && seven["ended_at"].is_string());
    let dev = ends.iter().find(|d| d["user"] == "dev").expect("dev's run");
    assert_eq!(dev["argv"], json!(["id", "-u"]));
    let (_, a) = s
        .get(
            &s.admin,
            "/api/v1/audit?action=session.process_start&limit=500",
        )
        .await;
    let text = a.to_string();
    assert!(text.contains("line$i"), "SSE run's start recorded: {a}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_limits_kill_and_floods_are_truncated() {
    let s = setup().await;

    // A command that never ends is killed at its time limit, with what it wrote so far.
    let (st, r) = run(
        &s,
        json!({"shell": "echo started; exec sleep 1000", "timeout": "1s"}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["timed_out"], true, "{r}");
    assert_eq!(r["exit_code"], Value::Null, "{r}");
    assert_eq!(r["stdout"], "started\n");
    // Its children too: a shell's background sleep is gone with it.
    let (_, r) = run(
        &s,
        json!({"shell": "sleep 1001 & sleep 1002; wait", "timeout": "1s"}),
    )
    .await;
    assert_eq!(r["timed_out"], true, "{r}");
    let (_, ps) = run(&s, json!({"command": ["ps", "-o", "pid,args"]})).await;
    let ps = ps["stdout"].as_str().unwrap().to_string();
    assert!(
        !ps.contains("sleep 1000") && !ps.contains("sleep 1001") && !ps.contains("sleep 1002"),
        "{ps}"
    );

    // An output flood: the first MiB, then the marker; the server keeps answering meanwhile.
    let flood = {
        let http = s.http.clone();
        let url = format!("{}{TB}/process/run", s.url);
        let token = s.admin.clone();
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(token)
                .json(&json!({"shell": "yes | head -c 50000000; echo done >&2"}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    let mut answered = 0;
    while !flood.is_finished() {
        let (st, _) = s.get(&s.admin, "/api/v1/workspaces/w").await;
        assert_eq!(st, StatusCode::OK);
        let (_, r) = run(&s, json!({"command": ["echo", "still here"]})).await;
        assert_eq!(r["stdout"], "still here\n", "{r}");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = flood.await.unwrap();
    assert_eq!(r["exit_code"], 0, "{}", r["stderr"]);
    assert_eq!(r["stdout_truncated"], true);
    assert_eq!(r["stderr"], "done\n");
    let out = r["stdout"].as_str().unwrap();
    let marker = format!(
        "[warren: output truncated: {} bytes dropped]\n",
        50_000_000 - (1 << 20)
    );
    assert!(out.ends_with(&marker), "{}", &out[out.len() - 100..]);
    assert_eq!(out.len(), (1 << 20) + marker.len());
    assert!(answered >= 1);
    s.stop().await;
}

async fn bg(s: &TestServer, body: Value) -> Value {
    let (st, v) = s.post(&s.admin, &format!("{TB}/processes"), body).await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("p_"), "{v}");
    assert_eq!(v["running"], true);
    v
}

async fn send_stdin(s: &TestServer, id: &str, data: &str, eof: bool) -> StatusCode {
    s.http
        .post(format!("{}{TB}/processes/{id}/stdin?eof={eof}", s.url))
        .bearer_auth(&s.admin)
        .body(data.to_string())
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_processes_live_and_are_bounded() {
    let s = setup().await;

    // stdin echo through `cat`: output at offsets, then EOF ends it.
    let p = bg(&s, json!({"command": ["cat"], "name": "echo"})).await;
    let id = p["id"].as_str().unwrap().to_string();
    assert_eq!(p["name"], "echo");
    assert_eq!(
        send_stdin(&s, &id, "hello\n", false).await,
        StatusCode::NO_CONTENT
    );
    let mut out = Value::Null;
    for _ in 0..100 {
        (_, out) = s
            .get(&s.admin, &format!("{TB}/processes/{id}/output"))
            .await;
        if out["data"] == "hello\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(out["data"], "hello\n", "{out}");
    assert_eq!(out["next_offset"], 6);
    assert_eq!(out["truncated_before"], 0);
    assert_eq!(
        send_stdin(&s, &id, "world\n", true).await,
        StatusCode::NO_CONTENT
    );
    let (_, w) = s
        .get(&s.admin, &format!("{TB}/processes/{id}/wait?timeout=20s"))
        .await;
    assert_eq!(w["running"], false, "{w}");
    assert_eq!(w["exit_code"], 0);
    assert!(w["ended_at"].is_string());
    let (_, out) = s
        .get(&s.admin, &format!("{TB}/processes/{id}/output?offset=6"))
        .await;
    assert_eq!(out["data"], "world\n", "{out}");
    assert_eq!(out["next_offset"], 12);
    // stdin of an ended process is closed.
    assert_eq!(send_stdin(&s, &id, "x", false).await, StatusCode::CONFLICT);
    // Following an ended process's output replays it, then the exit.
    let text = s
        .http
        .get(format!("{}{TB}/processes/{id}/output?follow=true", s.url))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let evs = sse_events(&text);
    assert_eq!(evs[0].1["text"], "hello\nworld\n", "{evs:?}");
    assert_eq!(evs.last().unwrap().0, "exit");

    // A signal; wait with a time limit answers a running process as running.
    let p = bg(&s, json!({"command": ["sleep", "1000"]})).await;
    let sid = p["id"].as_str().unwrap().to_string();
    let (_, w) = s
        .get(&s.admin, &format!("{TB}/processes/{sid}/wait?timeout=1s"))
        .await;
    assert_eq!(w["running"], true, "{w}");
    let (st, v) = s
        .post(
            &s.admin,
            &format!("{TB}/processes/{sid}/signal"),
            json!({"signal": "TERM"}),
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{v}");
    let (_, w) = s
        .get(&s.admin, &format!("{TB}/processes/{sid}/wait?timeout=20s"))
        .await;
    assert_eq!(w["running"], false, "{w}");
    assert_eq!(w["exit_code"], 143, "{w}");
    for (sig, code) in [
        (json!("BOGUS"), 400),
        (json!(0), 400),
        (json!(99), 400),
        (json!([1]), 400),
    ] {
        let (st, v) = s
            .post(
                &s.admin,
                &format!("{TB}/processes/{sid}/signal"),
                json!({"signal": sig}),
            )
            .await;
        assert_eq!(st.as_u16(), code, "{sig}: {v}");
        assert!(v["hint"].is_string(), "{v}");
    }
    // Signalling an ended process is a conflict.
    let (st, _) = s
        .post(
            &s.admin,
            &format!("{TB}/processes/{sid}/signal"),
            json!({"signal": 9}),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);

    // Following a live process: events as they come, then the exit.
    let p = bg(
        &s,
        json!({"shell": "for i in 1 2 3; do echo n$i; sleep 0.2; done; echo e >&2; exit 4"}),
    )
    .await;
    let fid = p["id"].as_str().unwrap().to_string();
    let text = s
        .http
        .get(format!(
            "{}{TB}/processes/{fid}/output?stream=both&follow=true",
            s.url
        ))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let evs = sse_events(&text);
    let so: String = evs
        .iter()
        .filter(|(e, _)| e == "stdout")
        .map(|(_, d)| d["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(so, "n1\nn2\nn3\n", "{evs:?}");
    assert!(evs.iter().any(|(e, d)| e == "stderr" && d["text"] == "e\n"));
    assert_eq!(evs.last().unwrap().1["code"], 4, "{evs:?}");

    // The ring keeps the last MiB: what came before is counted, not kept.
    let p = bg(
        &s,
        json!({"shell": "head -c 3000000 /dev/zero | tr '\\0' x"}),
    )
    .await;
    let rid = p["id"].as_str().unwrap().to_string();
    let (_, w) = s
        .get(&s.admin, &format!("{TB}/processes/{rid}/wait?timeout=30s"))
        .await;
    assert_eq!(w["exit_code"], 0, "{w}");
    let (_, out) = s
        .get(&s.admin, &format!("{TB}/processes/{rid}/output"))
        .await;
    assert_eq!(
        out["truncated_before"],
        3_000_000 - (1 << 20),
        "{}",
        out["next_offset"]
    );
    assert_eq!(out["next_offset"], 3_000_000);
    assert_eq!(out["data"].as_str().unwrap().len(), 1 << 20);
    let (_, out) = s
        .get(
            &s.admin,
            &format!("{TB}/processes/{rid}/output?offset=2999990"),
        )
        .await;
    assert_eq!(out["data"], "xxxxxxxxxx");
    assert_eq!(out["truncated_before"], 0);
    let (_, both) = s
        .get(
            &s.admin,
            &format!("{TB}/processes/{rid}/output?stream=both&offset=2999999"),
        )
        .await;
    assert_eq!(both["stdout"]["data"], "x", "{both}");
    assert_eq!(both["stderr"]["data"], "");

    // Bad ids and queries.
    for path in [
        format!("{TB}/processes/p_0000000000000000"),
        format!("{TB}/processes/p_0000000000000000/output"),
        format!("{TB}/processes/p_0000000000000000/wait"),
        format!("{TB}/processes/..%2Fx"),
    ] {
        let (st, v) = s.get(&s.admin, &path).await;
        assert!(
            st == StatusCode::NOT_FOUND || st == StatusCode::BAD_REQUEST,
            "{path}: {st} {v}"
        );
        assert!(v["hint"].is_string(), "{path}: {v}");
    }
    for path in [
        format!("{TB}/processes/p_nope"),
        format!("{TB}/processes/{}", "p_".to_string() + &"a".repeat(500)),
        format!("{TB}/processes/s_0000000000000000/output"),
    ] {
        let (st, v) = s.get(&s.admin, &path).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(v["code"], "invalid_request");
        assert!(v["message"].as_str().unwrap().len() < 200, "{v}");
    }
    let (st, v) = s
        .get(&s.admin, &format!("{TB}/processes/p_0000000000000000"))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    for q in ["stream=sideways", "offset=-1", "follow=maybe"] {
        let (st, v) = s
            .get(&s.admin, &format!("{TB}/processes/{rid}/output?{q}"))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {v}");
    }
    let (st, _) = s
        .get(&s.admin, &format!("{TB}/processes/{rid}/wait?timeout=1y"))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // The list, then deletion kills and forgets.
    let (_, list) = s.get(&s.admin, &format!("{TB}/processes")).await;
    assert_eq!(list.as_array().unwrap().len(), 4, "{list}");
    let p = bg(&s, json!({"command": ["sleep", "1003"]})).await;
    let kid = p["id"].as_str().unwrap().to_string();
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::DELETE,
            &format!("{TB}/processes/{kid}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s.get(&s.admin, &format!("{TB}/processes/{kid}")).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let mut gone = false;
    for _ in 0..50 {
        let (_, ps) = run(&s, json!({"command": ["ps", "-o", "args"]})).await;
        if !ps["stdout"].as_str().unwrap().contains("sleep 1003") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the deleted process still runs");

    // At most 64 per workspace: the 65th is refused with a hint.
    for _ in 0..(64 - 4) {
        bg(&s, json!({"command": ["sleep", "1004"]})).await;
    }
    let (st, v) = s
        .post(
            &s.admin,
            &format!("{TB}/processes"),
            json!({"command": ["true"]}),
        )
        .await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(v["hint"].as_str().unwrap().contains("DELETE"), "{v}");
    assert_eq!(s.state.toolbox.counts().0, 64);

    // Stopping the workspace ends them and forgets them all.
    let (st, v) = s
        .post(&s.admin, "/api/v1/workspaces/w/stop", json!({}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    s.wait_job(&s.admin, v["job"]["id"].as_str().unwrap()).await;
    assert_eq!(s.state.toolbox.counts(), (0, 0));
    let (st, list) = s.get(&s.admin, &format!("{TB}/processes")).await;
    assert_eq!((st, list), (StatusCode::OK, json!([])));
    // Runs in a stopped workspace say so.
    let (st, v) = run(&s, json!({"command": ["true"]})).await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "invalid_state", "{v}");

    // The session audit has the background processes' ends.
    let (_, a) = s
        .get(
            &s.admin,
            "/api/v1/audit?action=session.process_end&limit=500",
        )
        .await;
    assert!(a.to_string().contains(&sid), "{a}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_keep_cwd_and_exports() {
    let s = setup().await;
    let (st, v) = s
        .post(
            &s.admin,
            &format!("{TB}/sessions"),
            json!({"cwd": "/tmp", "env": {"START": "yes"}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("s_"));
    assert_eq!(v["cwd"], "/tmp");
    let srun = |cmd: &str| {
        let cmd = cmd.to_string();
        let s = &s;
        let id = id.clone();
        async move {
            let (st, r) = s
                .post(
                    &s.admin,
                    &format!("{TB}/sessions/{id}/run"),
                    json!({"command": cmd}),
                )
                .await;
            assert_eq!(st, StatusCode::OK, "{r}");
            r
        }
    };
    let r = srun(
        "mkdir -p /tmp/proj/src && cd /tmp/proj && export GREETING='hi there' && X=notexported",
    )
    .await;
    assert_eq!(r["exit_code"], 0, "{r}");
    assert_eq!(r["cwd"], "/tmp/proj");
    assert_eq!(
        r["stderr"], "",
        "the state marker is not the user's stderr: {r}"
    );
    let r = srun("pwd; echo \"$GREETING|$X|$START\"; cd src").await;
    assert_eq!(r["stdout"], "/tmp/proj\nhi there||yes\n", "{r}");
    assert_eq!(r["cwd"], "/tmp/proj/src");
    let r = srun("pwd; echo err >&2; exit 5").await;
    assert_eq!(r["exit_code"], 5);
    assert_eq!(r["stdout"], "/tmp/proj/src\n");
    assert_eq!(r["stderr"], "err\n");
    // Its own time limit per command.
    let (_, r) = s
        .post(
            &s.admin,
            &format!("{TB}/sessions/{id}/run"),
            json!({"command": "sleep 1000", "timeout": "1s"}),
        )
        .await;
    assert_eq!(r["timed_out"], true, "{r}");
    let r = srun("pwd").await;
    assert_eq!(r["stdout"], "/tmp/proj/src\n");

    // Another session starts fresh.
    let (_, v2) = s.post(&s.admin, &format!("{TB}/sessions"), json!({})).await;
    let id2 = v2["id"].as_str().unwrap().to_string();
    let (_, r) = s
        .post(
            &s.admin,
            &format!("{TB}/sessions/{id2}/run"),
            json!({"command": "echo \"[$GREETING]\"; pwd"}),
        )
        .await;
    // (The default directory is the workspace folder, as for any exec.)
    assert!(
        r["stdout"]
            .as_str()
            .unwrap()
            .starts_with("[]\n/workspaces/"),
        "{r}"
    );

    let (_, list) = s.get(&s.admin, &format!("{TB}/sessions")).await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    // At most 16.
    for _ in 0..14 {
        let (st, v) = s.post(&s.admin, &format!("{TB}/sessions"), json!({})).await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }
    let (st, v) = s.post(&s.admin, &format!("{TB}/sessions"), json!({})).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    // Deleting one forgets it and removes its state from the workspace.
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::DELETE,
            &format!("{TB}/sessions/{id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT);
    let (st, _) = s
        .post(
            &s.admin,
            &format!("{TB}/sessions/{id}/run"),
            json!({"command": "true"}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, r) = run(&s, json!({"shell": "ls -d /tmp/.warren-session-* | wc -l"})).await;
    assert_eq!(r["stdout"], "15\n", "{r}");
    // Bad input.
    let (st, _) = s
        .post(
            &s.admin,
            &format!("{TB}/sessions/{id2}/run"),
            json!({"command": ""}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s
        .post(
            &s.admin,
            &format!("{TB}/sessions/{id2}/run"),
            json!({"command": "true", "timeout": "x"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = s
        .post(
            &s.admin,
            &format!("{TB}/sessions"),
            json!({"cwd": "/nonexistent"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    s.stop().await;
}
