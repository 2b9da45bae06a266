//! The SSH gateway driven by the real OpenSSH client against a real server with real workspaces
//! (busybox image): exec with stdout, stderr and exit status, stdin, a PTY with TERM and size,
//! refusals (unknown key, suspended user, another user's workspace, no such workspace, a
//! stopped workspace), and a host key that survives a restart.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::TestServer;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Makes an ed25519 key pair in `dir`; returns the private key's path.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    common::keygen(dir, name)
}

/// Registers `key`'s public half for the token's user, proven with its private half.
async fn register(s: &TestServer, token: &str, key: &Path) {
    s.register_ssh_key(token, key).await;
}

/// The OpenSSH client for the gateway on `port`: no configuration, no known hosts, no prompts;
/// with `key` only, or with no key at all (`None`: no public-key, password or keyboard auth).
fn openssh(port: u16, key: Option<&Path>) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
        .args(["-o", "LogLevel=ERROR", "-p", &port.to_string()]);
    match key {
        Some(k) => {
            c.args(["-o", "IdentitiesOnly=yes", "-i"]).arg(k);
        }
        None => {
            c.args([
                "-o",
                "PubkeyAuthentication=no",
                "-o",
                "PasswordAuthentication=no",
            ])
            .args(["-o", "KbdInteractiveAuthentication=no"]);
        }
    }
    c
}

/// Runs `ssh` with `key` to `user@127.0.0.1` on `port`, extra options first, then `command`.
fn ssh(
    port: u16,
    key: &Path,
    user: &str,
    extra: &[&str],
    command: &str,
    stdin: Option<&[u8]>,
) -> Output {
    let mut c = openssh(port, Some(key));
    c.args(["-o", "ConnectTimeout=20"])
        .args(extra)
        .arg(format!("{user}@127.0.0.1"))
        .arg(command)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = c.spawn().unwrap();
    // Written by a thread while the output is read: both can be larger than a pipe.
    let writer = stdin.map(|input| {
        let input = input.to_vec();
        let mut w = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = w.write_all(&input);
        })
    });
    let out = child.wait_with_output().unwrap();
    if let Some(w) = writer {
        w.join().unwrap();
    }
    out
}

async fn ssh_async(
    port: u16,
    key: PathBuf,
    user: &str,
    extra: &[&str],
    command: &str,
    stdin: Option<&[u8]>,
) -> Output {
    let user = user.to_string();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let command = command.to_string();
    let stdin = stdin.map(<[u8]>::to_vec);
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        ssh(port, &key, &user, &extra, &command, stdin.as_deref())
    })
    .await
    .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The host key fingerprint the gateway shows a client.
fn scanned_fingerprint(port: u16) -> String {
    let scan = Command::new("ssh-keyscan")
        .args([
            "-T",
            "10",
            "-t",
            "ed25519",
            "-p",
            &port.to_string(),
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    let mut kg = Command::new("ssh-keygen")
        .args(["-l", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        kg.stdin.take().unwrap().write_all(&scan.stdout).unwrap();
    }
    let o = kg.wait_with_output().unwrap();
    let line = text(&o.stdout);
    let fp = line
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap_or_else(|| panic!("no fingerprint from ssh-keyscan: {line:?}"))
        .to_string();
    fp
}

async fn template(s: &TestServer) {
    s.push_template("tiny", json!({"image": "busybox", "overrideCommand": true}))
        .await;
}

async fn create(s: &TestServer, token: &str, name: &str) {
    s.create_workspace(token, name, "tiny").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_into_a_workspace_runs_commands_as_exec_does() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s).await;
    let keys = tempfile::tempdir().unwrap();
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    let carol = s.user_token("carol", "member", None).await;
    let alice_key = keygen(keys.path(), "alice");
    let bob_key = keygen(keys.path(), "bob");
    let carol_key = keygen(keys.path(), "carol");
    let stranger_key = keygen(keys.path(), "stranger");
    register(&s, &alice, &alice_key).await;
    register(&s, &bob, &bob_key).await;
    register(&s, &carol, &carol_key).await;
    create(&s, &alice, "dev").await;
    create(&s, &carol, "cw").await;
    let port = s.ssh_port().await;

    // exec: stdout, stderr and the exit status.
    let o = ssh_async(
        port,
        alice_key.clone(),
        "dev",
        &[],
        "echo hi; echo err >&2; exit 3",
        None,
    )
    .await;
    assert_eq!(text(&o.stdout), "hi\n", "stderr: {}", text(&o.stderr));
    assert_eq!(text(&o.stderr), "err\n");
    assert_eq!(o.status.code(), Some(3));

    // stdin goes through, then EOF.
    let input = b"line one\nline two\n".repeat(2000);
    let o = ssh_async(port, alice_key.clone(), "dev", &[], "cat", Some(&input)).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(o.stdout, input);
    // Much more than every buffer on the way holds, both ways at once.
    let big: Vec<u8> = (0..24u32 << 20).map(|i| (i % 251) as u8).collect();
    let o = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        ssh_async(port, alice_key.clone(), "dev", &[], "cat", Some(&big)),
    )
    .await
    .expect("24 MiB through cat finishes");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(o.stdout == big, "{} bytes back", o.stdout.len());
    // A process that writes much before it reads stdin, while the client sends much: stdin is
    // buffered rather than stalling the connection its output needs.
    let o = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        ssh_async(
            port,
            alice_key.clone(),
            "dev",
            &[],
            "head -c 20000000 /dev/zero; wc -c",
            Some(&big),
        ),
    )
    .await
    .expect("output and stdin at once finish");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(o.stdout.len() > 20_000_000, "{} bytes", o.stdout.len());
    assert_eq!(
        text(&o.stdout[20_000_000..]).trim(),
        big.len().to_string(),
        "wc counted all of stdin"
    );

    // A PTY: TERM from the client, its window size, and allowlisted environment only.
    let o = ssh_async(
        port,
        alice_key.clone(),
        "dev",
        &[
            "-tt",
            "-o",
            "SendEnv=LC_PAPER FOO",
            "-o",
            "SetEnv=LC_PAPER=xx FOO=bar",
        ],
        "echo term=$TERM; stty size; echo paper=$LC_PAPER foo=$FOO; test -t 0 && echo tty",
        None,
    )
    .await;
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out} {}", text(&o.stderr));
    assert!(out.contains("term="), "{out}");
    assert!(!out.contains("term=\r"), "TERM is set: {out}");
    assert!(out.contains("24 80"), "default size: {out}");
    assert!(out.contains("paper=xx foo=\r"), "{out}");
    assert!(out.contains("tty\r\n"), "{out}");
    let o2 = {
        let key = alice_key.clone();
        tokio::task::spawn_blocking(move || {
            let out = Command::new("ssh")
                .env("TERM", "vt220")
                .args([
                    "-F",
                    "/dev/null",
                    "-o",
                    "StrictHostKeyChecking=no",
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "LogLevel=ERROR",
                    "-tt",
                    "-i",
                ])
                .arg(&key)
                .args(["-p", &port.to_string(), "dev@127.0.0.1", "echo term=$TERM"])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            out
        })
        .await
        .unwrap()
    };
    assert_eq!(o2.status.code(), Some(0));
    assert!(
        text(&o2.stdout).contains("term=vt220"),
        "{}",
        text(&o2.stdout)
    );

    // Refusals, all alike: an unregistered key, another user's workspace, no such workspace,
    // a suspended user.
    for (key, user) in [
        (&stranger_key, "dev"),
        (&bob_key, "dev"),
        (&alice_key, "cw"),
        (&alice_key, "nope"),
    ] {
        let o = ssh_async(port, key.clone(), user, &[], "echo in", None).await;
        assert_eq!(o.status.code(), Some(255), "{user}: {}", text(&o.stderr));
        assert!(o.stdout.is_empty());
        assert!(
            text(&o.stderr).contains("Permission denied"),
            "{}",
            text(&o.stderr)
        );
    }
    // Commands are audited as the API's exec is.
    let (st, audit) = s.get(&s.admin, "/api/v1/audit?action=workspace.exec").await;
    assert_eq!(st, StatusCode::OK, "{audit}");
    let audit = audit.to_string();
    assert!(audit.contains("echo hi; echo err"), "{audit}");
    assert!(audit.contains("\\\"via\\\":\\\"ssh\\\""), "{audit}");
    assert!(
        audit.contains("SSH-2.0-OpenSSH"),
        "the client's version: {audit}"
    );
    // Sessions and their commands are activity on the workspace; none is open once they ended.
    let mut activity = json!(null);
    for _ in 0..100 {
        let (st, a) = s.get(&alice, "/api/v1/workspaces/dev/activity").await;
        assert_eq!(st, StatusCode::OK, "{a}");
        activity = a;
        if activity["open_sessions"] == json!({}) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(activity["open_sessions"], json!({}), "{activity}");
    assert!(activity["last"]["ssh"].is_string(), "{activity}");
    assert!(activity["last"]["exec"].is_string(), "{activity}");
    assert!(activity["last"].get("port").is_none(), "{activity}");
    assert_eq!(
        activity["last_at"],
        *activity["last"]
            .as_object()
            .unwrap()
            .values()
            .max_by_key(|v| v.as_str().unwrap().to_string())
            .unwrap(),
        "{activity}"
    );
    // Each connection leaves one record when it ends: who, from where, how long, what it opened.
    let mut sessions = json!(null);
    for _ in 0..100 {
        let (st, a) = s
            .get(&s.admin, "/api/v1/audit?action=workspace.ssh_session")
            .await;
        assert_eq!(st, StatusCode::OK, "{a}");
        sessions = a;
        if sessions.to_string().contains("duration_ms") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text_of = sessions.to_string();
    assert!(text_of.contains("duration_ms"), "{sessions}");
    assert!(text_of.contains("\\\"auth\\\":\\\"key\\\""), "{sessions}");
    assert!(
        text_of.contains("127.0.0.1") && text_of.contains("OpenSSH"),
        "{sessions}"
    );
    // The key's last use is recorded.
    let (_, mine) = s.get(&alice, "/api/v1/me/ssh-keys").await;
    assert!(mine[0]["last_used_at"].is_string(), "{mine}");
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/users/carol",
            Some(json!({"suspended": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let o = ssh_async(port, carol_key.clone(), "cw", &[], "echo in", None).await;
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_workspaces_start_on_connect_and_admins_address_others_workspaces() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s).await;
    let dc = json!({"image": "busybox", "overrideCommand": true}).to_string();
    let (st, v) = s
        .post(
            &s.admin,
            "/api/v1/templates/pinned/versions",
            json!({"devcontainer": dc, "policy": {"start_on_connect": false}}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let keys = tempfile::tempdir().unwrap();
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    let alice_key = keygen(keys.path(), "alice");
    let bob_key = keygen(keys.path(), "bob");
    let admin_key = keygen(keys.path(), "admin");
    register(&s, &alice, &alice_key).await;
    register(&s, &bob, &bob_key).await;
    register(&s, &s.admin, &admin_key).await;
    create(&s, &alice, "dev").await;
    let (st, v) = s
        .post(
            &alice,
            "/api/v1/workspaces",
            json!({"name": "pinned", "template": "pinned"}),
        )
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
    let port = s.ssh_port().await;
    let stop = |name: &'static str| {
        let (s, alice) = (&s, alice.clone());
        async move {
            let (st, v) = s
                .post(
                    &alice,
                    &format!("/api/v1/workspaces/{name}/stop"),
                    json!({}),
                )
                .await;
            assert_eq!(st, StatusCode::ACCEPTED, "{v}");
            let job = s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
            assert_eq!(job["status"], "succeeded", "{job}");
        }
    };

    // Stopped: the connection starts it, with progress on stderr, then runs the command.
    stop("dev").await;
    let o = ssh_async(port, alice_key.clone(), "dev", &[], "echo in", None).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "in\n");
    assert!(
        text(&o.stderr).contains("starting workspace `dev`"),
        "{}",
        text(&o.stderr)
    );
    let (_, w) = s.get(&alice, "/api/v1/workspaces/dev").await;
    assert_eq!(w["state"], "running", "{w}");
    let (_, audit) = s
        .get(&s.admin, "/api/v1/audit?action=workspace.start")
        .await;
    assert!(audit.to_string().contains("on_connect"), "{audit}");

    // A template that says no: a clear message, status 1, and the workspace stays stopped.
    stop("pinned").await;
    let o = ssh_async(port, alice_key.clone(), "pinned", &[], "echo in", None).await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("not running") && text(&o.stderr).contains("warren start"),
        "{}",
        text(&o.stderr)
    );
    assert!(o.stdout.is_empty());
    let (_, w) = s.get(&alice, "/api/v1/workspaces/pinned").await;
    assert_eq!(w["state"], "stopped", "{w}");

    // An admin reaches alice's workspace as `dev.alice`; bob, a member, cannot; nor can anyone
    // address a user or workspace that does not exist.
    let o = ssh_async(port, admin_key.clone(), "dev.alice", &[], "hostname", None).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    // Access is checked again for every channel: bob, made admin, connects to alice's workspace,
    // is made a member again, and his open connection runs nothing more there.
    let (st, v) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/users/bob",
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let conn = russh_session(port, &bob_key, "dev.alice").await;
    assert_eq!(
        run_on(&conn, "echo first").await,
        (Some(0), "first\n".to_string())
    );
    let (st, v) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/users/bob",
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(run_on(&conn, "echo second").await, (Some(1), String::new()));
    // Likewise a key removed while connected.
    let alice_conn = russh_session(port, &alice_key, "dev").await;
    assert_eq!(run_on(&alice_conn, "echo mine").await.0, Some(0));
    let (_, keys) = s.get(&alice, "/api/v1/me/ssh-keys").await;
    let key_id = keys[0]["id"].as_str().unwrap().to_string();
    let (st, _) = s
        .call(
            Some(&alice),
            Method::DELETE,
            &format!("/api/v1/me/ssh-keys/{key_id}"),
            None,
        )
        .await;
    assert!(st.is_success());
    assert_eq!(run_on(&alice_conn, "echo mine").await.0, Some(1));
    register(&s, &alice, &alice_key).await;
    for (key, user) in [
        (&bob_key, "dev.alice"),
        (&admin_key, "dev.nobody"),
        (&admin_key, "nothing.alice"),
        (&admin_key, "dev"),
    ] {
        let o = ssh_async(port, key.clone(), user, &[], "hostname", None).await;
        assert_eq!(o.status.code(), Some(255), "{user}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("Permission denied"),
            "{}",
            text(&o.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_key_survives_a_restart() {
    let s = TestServer::start().await;
    let port = s.ssh_port().await;
    let before = tokio::task::spawn_blocking(move || scanned_fingerprint(port))
        .await
        .unwrap();
    let path = s.state().join("ssh_host_ed25519_key");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let s = s.restart().await;
    let port = s.ssh_port().await;
    let after = tokio::task::spawn_blocking(move || scanned_fingerprint(port))
        .await
        .unwrap();
    assert_eq!(before, after);
    // The file is the key the client sees.
    let o = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&path)
        .output()
        .unwrap();
    assert!(text(&o.stdout).contains(&before), "{}", text(&o.stdout));
}

/// A client that trusts any host key (the tests check the key with `ssh-keyscan`).
struct TrustingClient;

/// A russh client connection authenticated with `key` as `user`.
async fn russh_session(port: u16, key: &Path, user: &str) -> russh::client::Handle<TrustingClient> {
    let config = std::sync::Arc::new(russh::client::Config::default());
    let mut session = russh::client::connect(config, ("127.0.0.1", port), TrustingClient)
        .await
        .unwrap();
    let secret = russh::keys::load_secret_key(key, None).unwrap();
    let auth = session
        .authenticate_publickey(
            user,
            russh::keys::PrivateKeyWithHashAlg::new(std::sync::Arc::new(secret), None),
        )
        .await
        .unwrap();
    assert!(auth.success());
    session
}

impl russh::client::Handler for TrustingClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

// OpenSSH's client sends neither window changes (without a terminal of its own) nor signals, so
// these go through russh's client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_changes_and_signals_reach_the_process() {
    use russh::ChannelMsg;
    use std::time::Duration;

    let s = TestServer::start().await;
    s.import_busybox();
    template(&s).await;
    let keys = tempfile::tempdir().unwrap();
    let dana = s.user_token("dana", "member", None).await;
    let key = keygen(keys.path(), "dana");
    register(&s, &dana, &key).await;
    create(&s, &dana, "term").await;
    let port = s.ssh_port().await;

    let session = russh_session(port, &key, "term").await;
    let mut ch = session.channel_open_session().await.unwrap();
    ch.request_pty(true, "xterm-256color", 100, 30, 0, 0, &[])
        .await
        .unwrap();
    ch.exec(
        true,
        "trap 'echo got-term; exit 7' TERM; while true; do stty size; sleep 0.2; done",
    )
    .await
    .unwrap();
    let mut out = String::new();
    let (mut resized, mut signalled) = (false, false);
    let status = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ch.wait().await {
                Some(ChannelMsg::Data { data }) => {
                    out.push_str(&String::from_utf8_lossy(&data));
                    if !resized && out.contains("30 100") {
                        resized = true;
                        ch.window_change(120, 40, 0, 0).await.unwrap();
                    }
                    if resized && !signalled && out.contains("40 120") {
                        signalled = true;
                        ch.signal(russh::Sig::TERM).await.unwrap();
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => break Some(exit_status),
                Some(_) => {}
                None => break None,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no exit: {out}"));
    assert!(signalled, "{out}");
    assert!(out.contains("got-term"), "{out}");
    assert_eq!(status, Some(7), "{out}");

    // A client that goes away: its process gets SIGHUP, and SIGKILL if it ignores that.
    let mut ch = session.channel_open_session().await.unwrap();
    ch.exec(true, "trap '' HUP; echo started; sleep 1000; echo never")
        .await
        .unwrap();
    let mut out = String::new();
    while !out.contains("started") {
        match tokio::time::timeout(Duration::from_secs(20), ch.wait()).await {
            Ok(Some(ChannelMsg::Data { data })) => out.push_str(&String::from_utf8_lossy(&data)),
            Ok(Some(_)) => {}
            other => panic!("{other:?}: {out}"),
        }
    }
    // The exec'd shell, by its command line (its `sleep` child is signalled by no one, as with
    // the API's exec: signals go to the process the exec started).
    let count = "ps | grep -c '[e]cho never'";
    let o = ssh_async(port, key.clone(), "term", &[], count, None).await;
    assert_eq!(text(&o.stdout).trim(), "1", "{}", text(&o.stderr));
    drop(ch);
    session
        .disconnect(russh::Disconnect::ByApplication, "", "")
        .await
        .unwrap();
    drop(session);
    let mut left = String::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let o = ssh_async(port, key.clone(), "term", &[], count, None).await;
        left = text(&o.stdout).trim().to_string();
        if left == "0" {
            break;
        }
    }
    assert_eq!(left, "0", "the abandoned shell is gone");

    // A user suspended while connected runs nothing more on that connection.
    let session = russh_session(port, &key, "term").await;
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/users/dana",
            Some(json!({"suspended": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let mut ch = session.channel_open_session().await.unwrap();
    ch.exec(true, "echo ran").await.unwrap();
    let (mut out, mut err, mut status) = (String::new(), String::new(), None);
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(20), ch.wait()).await {
        match msg {
            ChannelMsg::Data { data } => out.push_str(&String::from_utf8_lossy(&data)),
            ChannelMsg::ExtendedData { data, .. } => err.push_str(&String::from_utf8_lossy(&data)),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    assert_eq!((out.as_str(), status), ("", Some(1)), "{err}");
    assert!(err.contains("suspended"), "{err}");
}

/// `GET /workspaces/{ws}/ssh` upgraded with `token`: the socket, or the refusal's status and body.
async fn tunnel(
    s: &TestServer,
    ws: &str,
    token: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    (u16, serde_json::Value),
> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!(
        "{}/api/v1/workspaces/{ws}/ssh",
        s.url.replace("http://", "ws://")
    );
    let mut r = url.into_client_request().unwrap();
    r.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    match tokio_tungstenite::connect_async(r).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err((
            resp.status().as_u16(),
            resp.body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or_default(),
        )),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_tunnel_relays_to_the_gateway_and_says_when_it_is_off() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s).await;
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    create(&s, &alice, "dev").await;

    // The gateway's banner comes through, and ours reaches it (it answers with its key exchange).
    let mut ws = tunnel(&s, "dev", &alice).await.unwrap();
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Message::Binary(b) = first else {
        panic!("{first:?}")
    };
    assert!(b.starts_with(b"SSH-2.0-"), "{}", text(&b));
    ws.send(Message::Binary(b"SSH-2.0-tunnel_test\r\n".to_vec().into()))
        .await
        .unwrap();
    ws.close(None).await.unwrap();

    // The tunnel is audited with who opened it.
    let (st, audit) = s
        .get(&s.admin, "/api/v1/audit?action=workspace.ssh_tunnel")
        .await;
    assert_eq!(st, StatusCode::OK, "{audit}");
    let text = audit.to_string();
    assert!(text.contains("alice") && text.contains("dev"), "{audit}");

    // Another user's workspace is not found.
    let (st, v) = tunnel(&s, "dev", &bob).await.err().unwrap();
    assert_eq!((st, v["code"].as_str()), (404, Some("not_found")), "{v}");

    // With the gateway off: 503 with a hint.
    let s = s
        .restart_with(warren_server::config::ConfigLayer {
            ssh_listen: Some("off".into()),
            ..Default::default()
        })
        .await;
    let (st, v) = tunnel(&s, "dev", &alice).await.err().unwrap();
    assert_eq!((st, v["code"].as_str()), (503, Some("unavailable")), "{v}");
    assert!(
        v["hint"].as_str().unwrap_or("").contains("ssh_listen"),
        "{v}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `curl -s` of `url`: (exit code, body).
async fn curl(url: String) -> (i32, String) {
    tokio::task::spawn_blocking(move || {
        let o = Command::new("curl")
            .args(["-s", "--max-time", "20", &url])
            .output()
            .unwrap();
        (o.status.code().unwrap_or(-1), text(&o.stdout))
    })
    .await
    .unwrap()
}

/// `ssh -N` with `-L` forwards, until killed.
fn ssh_forwarding(port: u16, key: &Path, user: &str, forwards: &[String]) -> std::process::Child {
    let mut c = openssh(port, Some(key));
    c.args(["-N", "-o", "ExitOnForwardFailure=yes"]);
    for f in forwards {
        c.args(["-L", f]);
    }
    c.arg(format!("{user}@127.0.0.1"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_local_forwards_reach_the_workspace_loopback_and_nothing_else() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s).await;
    let keys = tempfile::tempdir().unwrap();
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    let alice_key = keygen(keys.path(), "alice");
    let bob_key = keygen(keys.path(), "bob");
    register(&s, &alice, &alice_key).await;
    register(&s, &bob, &bob_key).await;
    create(&s, &alice, "dev").await;
    create(&s, &bob, "bw").await;
    let port = s.ssh_port().await;
    // The same port inside both workspaces, serving different pages, and on neither the host.
    for (key, ws, page) in [
        (&alice_key, "dev", "alice-inside"),
        (&bob_key, "bw", "bob-inside"),
    ] {
        let o = ssh_async(
            port,
            key.clone(),
            ws,
            &[],
            &format!("mkdir -p /www && echo {page} > /www/index.html && httpd -p 127.0.0.1:18080 -h /www"),
            None,
        )
        .await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
    assert!(std::net::TcpStream::connect("127.0.0.1:18080").is_err());

    let api_port: u16 = s.url.rsplit(':').next().unwrap().parse().unwrap();
    let (good, far, host_api, closed) = (free_port(), free_port(), free_port(), free_port());
    let mut child = ssh_forwarding(
        port,
        &alice_key,
        "dev",
        &[
            format!("{good}:localhost:18080"),
            format!("{far}:10.1.2.3:80"),
            format!("{host_api}:127.0.0.1:{api_port}"),
            format!("{closed}:localhost:18081"),
        ],
    );
    let mut body = (0, String::new());
    for _ in 0..100 {
        body = curl(format!("http://127.0.0.1:{good}/")).await;
        if body.0 == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(body, (0, "alice-inside\n".to_string()));
    // Several connections at once through one SSH connection.
    let many = futures_util::future::join_all(
        (0..8).map(|_| curl(format!("http://127.0.0.1:{good}/index.html"))),
    )
    .await;
    assert!(many.iter().all(|r| r.1 == "alice-inside\n"), "{many:?}");
    // Anything but the workspace's own loopback is refused: another network, the host's own
    // services (the API listens on the host's loopback, not the workspace's), closed ports.
    for p in [far, host_api, closed] {
        let (code, body) = curl(format!("http://127.0.0.1:{p}/")).await;
        assert_ne!(code, 0, "port {p}: {body}");
        assert!(body.is_empty(), "port {p}: {body}");
    }
    child.kill().unwrap();
    let _ = child.wait();

    // Forwards are audited, with the port and whether they connected; they are activity.
    let (_, audit) = s
        .get(&s.admin, "/api/v1/audit?action=workspace.port_forward")
        .await;
    let audit = audit.to_string();
    assert!(
        audit.contains("18080") && audit.contains("18081"),
        "{audit}"
    );
    assert!(audit.contains("failure"), "{audit}");
    let (_, a) = s.get(&alice, "/api/v1/workspaces/dev/activity").await;
    assert!(a["last"]["port"].is_string(), "{a}");
}

/// `ssh TOKEN@127.0.0.1 -p PORT COMMAND` with no key at all.
async fn ssh_token(port: u16, token: &str, command: &str) -> Output {
    let (token, command) = (token.to_string(), command.to_string());
    tokio::task::spawn_blocking(move || {
        openssh(port, None)
            .arg(format!("{token}@127.0.0.1"))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_access_tokens_reach_one_workspace_until_they_expire_or_are_revoked() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s).await;
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    create(&s, &alice, "dev").await;
    create(&s, &alice, "other").await;
    let port = s.ssh_port().await;
    let make = |lifetime: Option<&str>| {
        let body = match lifetime {
            Some(l) => json!({ "lifetime": l }),
            None => json!({}),
        };
        let (s, alice) = (&s, alice.clone());
        async move {
            let (st, v) = s
                .post(&alice, "/api/v1/workspaces/dev/ssh-access", body)
                .await;
            assert_eq!(st, StatusCode::CREATED, "{v}");
            v
        }
    };

    // A token is the user name; no key is needed. It lasts an hour by default.
    let made = make(None).await;
    let token = made["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("wsa_"), "{made}");
    assert_eq!(
        made["ssh_command"],
        format!("ssh -p {port} {token}@127.0.0.1"),
        "{made}"
    );
    let created = time::OffsetDateTime::parse(
        made["info"]["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        made["info"]["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!((expires - created).whole_minutes(), 60, "{made}");
    let o = ssh_token(port, &token, "hostname; echo via-token").await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).ends_with("via-token\n"),
        "{}",
        text(&o.stdout)
    );
    // Its use is recorded; the secret is never shown again.
    let (_, list) = s.get(&alice, "/api/v1/workspaces/dev/ssh-access").await;
    assert!(list[0]["last_used_at"].is_string(), "{list}");
    assert!(!list.to_string().contains(&token), "{list}");

    // Unknown tokens, and a token made for `dev` used with another workspace's name, fail.
    for user in ["wsa_0123456789abcdefghijklmnopqrstuv", "other", "dev"] {
        let o = ssh_token(port, user, "echo in").await;
        assert_eq!(o.status.code(), Some(255), "{user}: {}", text(&o.stderr));
        assert!(o.stdout.is_empty());
    }
    // Bob cannot make one for alice's workspace; bad lifetimes are refused with a reason.
    let (st, v) = s
        .post(&bob, "/api/v1/workspaces/dev.alice/ssh-access", json!({}))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    for (lifetime, want) in [("48h", "longer than"), ("soon", "lifetime `soon`")] {
        let (st, v) = s
            .post(
                &alice,
                "/api/v1/workspaces/dev/ssh-access",
                json!({ "lifetime": lifetime }),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["message"].as_str().unwrap().contains(want), "{v}");
    }
    let (st, v) = s
        .post(
            &alice,
            "/api/v1/workspaces/dev/ssh-access",
            json!({"ttl": "1h"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");

    // Expired: refused.
    let short = make(Some("1s")).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let o = ssh_token(port, short["token"].as_str().unwrap(), "echo in").await;
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stderr));

    // A token only execs: it does not start a stopped workspace.
    let (st, v) = s
        .post(&alice, "/api/v1/workspaces/dev/stop", json!({}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
    let o = ssh_token(port, &token, "echo in").await;
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("not running"),
        "{}",
        text(&o.stderr)
    );
    let (st, v) = s
        .post(&alice, "/api/v1/workspaces/dev/start", json!({}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;

    // Revoked: refused at once.
    let id = made["info"]["id"].as_str().unwrap();
    let (st, v) = s
        .call(
            Some(&alice),
            Method::DELETE,
            &format!("/api/v1/workspaces/dev/ssh-access/{id}"),
            None,
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["revoked_at"].is_string(), "{v}");
    let o = ssh_token(port, &token, "echo in").await;
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stderr));
    // A token made with an API token dies with it: revoking a stolen API token also ends the SSH
    // access it minted.
    let agent = s.token_for("alice", Some(&["workspace:exec"])).await;
    let (st, v) = s
        .post(&agent, "/api/v1/workspaces/dev/ssh-access", json!({}))
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let minted = v["token"].as_str().unwrap().to_string();
    let o = ssh_token(port, &minted, "echo minted").await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (_, me) = s.get(&agent, "/api/v1/me").await;
    let agent_id = me["token"]["id"].as_str().unwrap_or_default().to_string();
    let (_, list) = s.get(&alice, "/api/v1/tokens").await;
    let agent_id = if agent_id.is_empty() {
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["scopes"] == json!(["workspace:exec"]))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    } else {
        agent_id
    };
    let (st, v) = s
        .call(
            Some(&alice),
            Method::DELETE,
            &format!("/api/v1/tokens/{agent_id}"),
            None,
        )
        .await;
    assert!(st.is_success(), "{v}");
    let o = ssh_token(port, &minted, "echo minted").await;
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stderr));

    // A suspended user's tokens stop working.
    let fresh = make(None).await;
    let (st, _) = s
        .call(
            Some(&s.admin),
            Method::PATCH,
            "/api/v1/users/alice",
            Some(json!({"suspended": true})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let o = ssh_token(port, fresh["token"].as_str().unwrap(), "echo in").await;
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stderr));
}

/// Runs `cmd` on a new channel of `conn`: (exit status, stdout).
async fn run_on(conn: &russh::client::Handle<TrustingClient>, cmd: &str) -> (Option<u32>, String) {
    let mut ch = conn.channel_open_session().await.unwrap();
    ch.exec(true, cmd).await.unwrap();
    let (mut out, mut status) = (String::new(), None);
    while let Ok(Some(msg)) =
        tokio::time::timeout(std::time::Duration::from_secs(20), ch.wait()).await
    {
        match msg {
            russh::ChannelMsg::Data { data } => out.push_str(&String::from_utf8_lossy(&data)),
            russh::ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            russh::ChannelMsg::Close => break,
            _ => {}
        }
    }
    (status, out)
}

/// Waits for three more `tick` lines from the bystander.
async fn three_ticks(watch: &mut russh::Channel<russh::client::Msg>) {
    let mut n = 0;
    while n < 3 {
        match tokio::time::timeout(std::time::Duration::from_secs(20), watch.wait()).await {
            Ok(Some(russh::ChannelMsg::Data { data })) => {
                n += String::from_utf8_lossy(&data).matches("tick").count()
            }
            Ok(Some(_)) => {}
            other => panic!("the bystander stopped: {other:?}"),
        }
    }
}

/// Whether the next reply on `ch` to a request sent with want_reply is a success.
async fn replied_ok(ch: &mut russh::Channel<russh::client::Msg>) -> bool {
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(20), ch.wait()).await {
            Ok(Some(russh::ChannelMsg::Success)) => return true,
            Ok(Some(russh::ChannelMsg::Failure)) => return false,
            Ok(Some(_)) => continue,
            other => panic!("no reply: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_garbage_are_refused_without_disturbing_other_sessions() {
    use russh::ChannelMsg;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // Connections that never authenticate are dropped after the login grace period.
    let s = TestServer::start_with(warren_server::config::ConfigLayer {
        ssh_login_grace: Some("2s".into()),
        ..Default::default()
    })
    .await;
    s.import_busybox();
    template(&s).await;
    let keys = tempfile::tempdir().unwrap();
    let eve = s.user_token("eve", "member", None).await;
    let key = keygen(keys.path(), "eve");
    register(&s, &eve, &key).await;
    create(&s, &eve, "box").await;
    let port = s.ssh_port().await;

    // A bystander session printing a counter the whole time.
    let bystander = russh_session(port, &key, "box").await;
    let mut watch = bystander.channel_open_session().await.unwrap();
    watch
        .exec(
            true,
            "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.05; done",
        )
        .await
        .unwrap();
    three_ticks(&mut watch).await;

    let attacker = russh_session(port, &key, "box").await;
    let mut ch = attacker.channel_open_session().await.unwrap();
    // Unknown subsystems, outsized windows, non-allowlisted or huge environment values.
    ch.request_subsystem(true, "nonsense").await.unwrap();
    assert!(!replied_ok(&mut ch).await);
    ch.set_env(true, "LD_PRELOAD", "/tmp/x.so").await.unwrap();
    assert!(!replied_ok(&mut ch).await);
    ch.set_env(true, "LANG", "x".repeat(100_000)).await.unwrap();
    assert!(!replied_ok(&mut ch).await);
    ch.request_pty(true, &"x".repeat(1000), 80, 24, 0, 0, &[])
        .await
        .unwrap();
    assert!(!replied_ok(&mut ch).await);
    // A window beyond what a terminal can be gets the default size rather than an error.
    ch.request_pty(true, "xterm", u32::MAX, u32::MAX, u32::MAX, u32::MAX, &[])
        .await
        .unwrap();
    assert!(replied_ok(&mut ch).await);
    ch.exec(true, "stty size; sleep 30").await.unwrap();
    let mut out = String::new();
    while !out.contains("24 80") {
        match tokio::time::timeout(Duration::from_secs(20), ch.wait()).await {
            Ok(Some(ChannelMsg::Data { data })) => out.push_str(&String::from_utf8_lossy(&data)),
            Ok(Some(_)) => {}
            other => panic!("{other:?}: {out}"),
        }
    }
    ch.window_change(u32::MAX, u32::MAX, 0, 0).await.unwrap();
    ch.window_change(0, 0, 0, 0).await.unwrap();
    // A second exec on a channel that runs one already is refused.
    ch.exec(true, "echo twice").await.unwrap();
    assert!(!replied_ok(&mut ch).await);
    // Forwards anywhere but the workspace's loopback are refused.
    for (host, p) in [
        ("10.0.0.1", 80u32),
        ("169.254.169.254", 80),
        ("example.com", 443),
        ("localhost", 0),
        ("localhost", 70_000),
    ] {
        assert!(
            attacker
                .channel_open_direct_tcpip(host, p, "127.0.0.1", 4000)
                .await
                .is_err(),
            "{host}:{p}"
        );
    }
    three_ticks(&mut watch).await;

    // Garbage instead of the protocol, or a packet that never completes: the gateway drops those
    // connections (at once, or at the end of the login grace), and only those. The authenticated
    // sessions outlive the grace period.
    for junk in [
        b"SSH-2.0-x\r\n\x00\x00\xff\xff\xff\xffgarbage garbage garbage".to_vec(),
        vec![b'A'; 300_000],
        b"SSH-2.0-x\r\n"
            .iter()
            .copied()
            .chain((0..64_000u32).map(|i| (i * 7 % 256) as u8))
            .collect(),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let _ = tcp.write_all(&junk).await;
        let mut buf = vec![0u8; 65536];
        let closed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the gateway kept a garbage connection open");
    }
    three_ticks(&mut watch).await;
    // The attacker's own good channel still works.
    let mut again = attacker.channel_open_session().await.unwrap();
    again.exec(true, "echo still-here").await.unwrap();
    let mut out = String::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(20), again.wait()).await {
        match msg {
            ChannelMsg::Data { data } => out.push_str(&String::from_utf8_lossy(&data)),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    assert!(out.contains("still-here"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_key_authenticates_only_the_user_who_proved_holding_it() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s).await;
    let keys = tempfile::tempdir().unwrap();
    let alice = s.user_token("alice", "member", None).await;
    let mallory = s.user_token("mallory", "member", None).await;
    let alice_key = keygen(keys.path(), "alice");
    let mallory_key = keygen(keys.path(), "mallory");
    create(&s, &alice, "dev").await;
    create(&s, &mallory, "dev").await;
    let port = s.ssh_port().await;
    let alice_pub = std::fs::read_to_string(alice_key.with_extension("pub")).unwrap();

    // Mallory copies Alice's public key (public keys are public) and registers it as hers.
    let (st, v) = s
        .post(
            &mallory,
            "/api/v1/me/ssh-keys",
            json!({ "public_key": alice_pub }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    assert!(v["verified_at"].is_null(), "{v}");
    let squatted = v["id"].as_str().unwrap().to_string();
    // She cannot prove it: a signature by her own key, or over her own message, is refused.
    let (_, me) = s.get(&mallory, "/api/v1/me").await;
    let mallory_id = me["user"]["id"].as_str().unwrap().to_string();
    let (_, me) = s.get(&alice, "/api/v1/me").await;
    let alice_id = me["user"]["id"].as_str().unwrap().to_string();
    let mallory_pub = std::fs::read_to_string(mallory_key.with_extension("pub")).unwrap();
    for sig in [
        common::sign_proof(&mallory_key, &mallory_id, &mallory_pub),
        // Alice's own proof, replayed, is bound to Alice.
        common::sign_proof(&alice_key, &alice_id, &alice_pub),
    ] {
        let (st, v) = s
            .post(
                &mallory,
                &format!("/api/v1/me/ssh-keys/{squatted}/verify"),
                json!({ "signature": sig }),
            )
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["code"], "invalid_ssh_key", "{v}");
    }
    // Alice, connecting with her key to `dev`, is not let into Mallory's `dev`.
    let o = ssh_async(port, alice_key.clone(), "dev", &[], "echo landed", None).await;
    assert_eq!(o.status.code(), Some(255), "{}", text(&o.stdout));
    assert!(o.stdout.is_empty());

    // Alice registers and proves it: hers from now on; Mallory's unproven copy is gone.
    s.register_ssh_key(&alice, &alice_key).await;
    let (_, theirs) = s.get(&mallory, "/api/v1/me/ssh-keys").await;
    assert_eq!(theirs, json!([]), "{theirs}");
    let o = ssh_async(port, alice_key.clone(), "dev", &[], "echo landed", None).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let (_, audit) = s.get(&s.admin, "/api/v1/audit?action=workspace.exec").await;
    assert!(audit.to_string().contains("alice"), "{audit}");
    assert!(!audit.to_string().contains("mallory"), "{audit}");
    // A proven key is taken: nobody else can register it any more.
    let (st, v) = s
        .post(
            &mallory,
            "/api/v1/me/ssh-keys",
            json!({ "public_key": alice_pub }),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{v}");
    // A later proof through the verify route works too (for a key added without one).
    let (st, v) = s
        .post(
            &mallory,
            "/api/v1/me/ssh-keys",
            json!({ "public_key": mallory_pub }),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let (st, v) = s
        .post(
            &mallory,
            &format!("/api/v1/me/ssh-keys/{id}/verify"),
            json!({ "signature": common::sign_proof(&mallory_key, &mallory_id, &mallory_pub) }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(v["verified_at"].is_string(), "{v}");
    let o = ssh_async(port, mallory_key.clone(), "dev", &[], "echo mine", None).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_on_connect_over_quota_is_refused_with_the_reason() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s).await;
    let keys = tempfile::tempdir().unwrap();
    let alice = s.user_token("alice", "member", None).await;
    let key = keygen(keys.path(), "alice");
    register(&s, &alice, &key).await;
    create(&s, &alice, "one").await;
    create(&s, &alice, "two").await;
    let (st, v) = s
        .post(&alice, "/api/v1/workspaces/two/stop", json!({}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
    let (st, v) = s
        .call(
            Some(&s.admin),
            Method::PUT,
            "/api/v1/quotas/users/alice",
            Some(json!({"max_workspaces": 1})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let port = s.ssh_port().await;
    // The connection would start a second workspace: refused, saying why and what to do.
    let o = ssh_async(port, key.clone(), "two", &[], "echo in", None).await;
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("has 1 of at most 1 workspaces running")
            && err.contains("warren quota override"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    let (_, w) = s.get(&alice, "/api/v1/workspaces/two").await;
    assert_eq!(w["state"], "stopped", "{w}");
    // The running one is still reachable.
    let o = ssh_async(port, key, "one", &[], "echo in", None).await;
    assert_eq!(text(&o.stdout), "in\n", "{}", text(&o.stderr));
}
