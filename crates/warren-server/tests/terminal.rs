//! The web terminal (`GET /workspaces/{ws}/terminal`) driven by a real WebSocket client against
//! a real server with real workspaces (busybox image): typing and output, resize, reconnecting
//! to the same shell with the output made while away replayed, takeover, exit codes, the
//! grace period, shutdown, the browser's way of sending the token, other users' sessions and
//! workspaces, bad input and the per-user cap.

mod common;

use std::time::Duration;

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use warren_server::config::ConfigLayer;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Generous: a slow machine is not a failure.
const WAIT: Duration = Duration::from_secs(60);

async fn template(s: &TestServer) {
    s.push_template("tiny", json!({"image": "busybox", "overrideCommand": true}))
        .await;
}

async fn create(s: &TestServer, token: &str, name: &str) {
    s.create_workspace(token, name, "tiny").await;
}

/// How a connection authenticates.
enum Auth<'a> {
    /// `Authorization: Bearer`.
    Header(&'a str),
    /// `Sec-WebSocket-Protocol` exactly as given (a browser's way).
    Protocols(&'a str),
    None,
}

/// Upgrades `GET /workspaces/{ws}/terminal?{query}`: the socket and the selected subprotocol, or
/// the refusal's status and JSON body.
async fn upgrade(
    s: &TestServer,
    ws: &str,
    auth: Auth<'_>,
    query: &str,
) -> Result<(Socket, Option<String>), (u16, Value)> {
    let url = format!(
        "{}/api/v1/workspaces/{ws}/terminal?{query}",
        s.url.replace("http://", "ws://")
    );
    let mut r = url.into_client_request().unwrap();
    match auth {
        Auth::Header(t) => {
            r.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Auth::Protocols(p) => {
            r.headers_mut()
                .insert("sec-websocket-protocol", p.parse().unwrap());
        }
        Auth::None => {}
    }
    match tokio_tungstenite::connect_async(r).await {
        Ok((ws, resp)) => Ok((
            ws,
            resp.headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_string()),
        )),
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

/// A connected terminal: what came so far.
struct Term {
    ws: Socket,
    /// Terminal output (lossy UTF-8), all of it.
    out: String,
    /// The same, as bytes.
    raw: Vec<u8>,
    /// Control messages from the server, in order.
    controls: Vec<Value>,
    /// The close frame's code, once closed.
    closed: Option<u16>,
    /// Whether the session was new (from the `attached` message).
    new: bool,
    /// The stream offset of the first byte this connection got (from `attached`).
    offset: u64,
}

impl Term {
    /// Connects and reads the `attached` message.
    async fn open(s: &TestServer, ws: &str, token: &str, query: &str) -> Term {
        let (sock, proto) = upgrade(s, ws, Auth::Header(token), query)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e:?}"));
        assert_eq!(
            proto.as_deref(),
            None,
            "no subprotocol offered, none chosen"
        );
        Term::attached(sock).await
    }

    async fn attached(sock: Socket) -> Term {
        let mut t = Term {
            ws: sock,
            out: String::new(),
            raw: vec![],
            controls: vec![],
            closed: None,
            new: false,
            offset: 0,
        };
        let first = t.control().await;
        assert_eq!(first["type"], "attached", "{first}");
        t.new = first["new"].as_bool().unwrap();
        t.offset = first["offset"].as_u64().unwrap();
        t
    }

    /// Reads one message; false once the socket is closed.
    async fn read_one(&mut self) -> bool {
        let m = tokio::time::timeout(WAIT, self.ws.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "nothing from the terminal; output so far: {:?} controls {:?}",
                    self.out, self.controls
                )
            });
        match m {
            Some(Ok(Message::Binary(b))) => {
                self.out.push_str(&String::from_utf8_lossy(&b));
                self.raw.extend_from_slice(&b);
            }
            Some(Ok(Message::Text(t))) => self.controls.push(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(f))) => {
                self.closed = Some(f.map(|f| u16::from(f.code)).unwrap_or(1005));
                return false;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                self.closed.get_or_insert(1006);
                return false;
            }
        }
        true
    }

    /// Reads until the output contains `needle`.
    async fn until(&mut self, needle: &str) {
        while !self.out.contains(needle) {
            assert!(
                self.read_one().await,
                "closed before {needle:?}; output {:?} controls {:?}",
                self.out,
                self.controls
            );
        }
    }

    /// Reads until a control message comes; returns it.
    async fn control(&mut self) -> Value {
        let seen = self.controls.len();
        while self.controls.len() == seen {
            assert!(
                self.read_one().await,
                "closed before a control message; output {:?} controls {:?}",
                self.out,
                self.controls
            );
        }
        self.controls[seen].clone()
    }

    /// Reads until the socket closes; returns the close code.
    async fn closed(&mut self) -> u16 {
        while self.read_one().await {}
        self.closed.unwrap()
    }

    async fn type_line(&mut self, line: &str) {
        self.ws
            .send(Message::Binary(format!("{line}\n").into_bytes().into()))
            .await
            .unwrap();
    }

    async fn send_text(&mut self, t: &str) {
        self.ws
            .send(Message::Text(t.to_string().into()))
            .await
            .unwrap();
    }

    /// Runs `cmd` and returns what it printed: the output between two markers that only the
    /// command's output (not the echoed input, nor a replay of earlier runs) contains.
    async fn run(&mut self, cmd: &str) -> String {
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let k = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.type_line(&format!("echo S{k}''S; {cmd}; echo E{k}''E"))
            .await;
        let (begin, end) = (format!("S{k}S"), format!("E{k}E"));
        self.until(&end).await;
        let start = self.out.rfind(&begin).unwrap() + begin.len();
        let stop = self.out.rfind(&end).unwrap();
        self.out[start..stop].trim().to_string()
    }

    /// Drops the connection without a goodbye, as a lost network would.
    fn vanish(self) {
        drop(self.ws);
    }
}

/// An audit record's details (stored as a JSON string).
fn details(r: &Value) -> Value {
    match &r["details_json"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or_default(),
        v => v.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_resizes_reconnects_to_the_same_shell_and_reports_its_exit() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s).await;
    let alice = s.user_token("alice", "member", None).await;
    create(&s, &alice, "dev").await;

    // Typing runs commands as the remote user in a login shell with a terminal.
    let mut t = Term::open(&s, "dev", &alice, "session=tab-1&rows=24&cols=80").await;
    assert!(t.new);
    assert_eq!(t.run("stty size").await, "24 80");
    let r = t.run("echo $TERM; tty").await;
    assert!(r.starts_with("xterm-256color\r\n/dev/pts/"), "{r:?}");

    // Resize takes effect.
    t.send_text(r#"{"type":"resize","rows":50,"cols":132}"#)
        .await;
    assert_eq!(t.run("stty size").await, "50 132");

    // Shell state set, then a command whose output comes after the client is gone.
    t.type_line("FOO=kept-$((40+2))").await;
    t.type_line("sleep 2; echo mark''er-$((6*7)); touch /tmp/marker-done")
        .await;
    assert!(t.new);
    assert_eq!(t.offset, 0);
    let seen = t.raw.clone();
    t.vanish();

    // Wait (in another session) until that output was produced while nobody was attached.
    let mut probe = Term::open(&s, "dev", &alice, "session=probe").await;
    assert!(probe.new);
    probe
        .type_line("while [ ! -e /tmp/marker-done ]; do sleep 1; done; echo pro''be-ok")
        .await;
    probe.until("probe-ok").await;

    // Reconnecting replays it, keeps the shell's state, and applies the new size.
    let mut t = Term::open(&s, "dev", &alice, "session=tab-1&rows=30&cols=100").await;
    assert!(!t.new, "the same session");
    t.until("marker-42").await;
    // The replay is the session's output from `offset` on: what the first connection got, then
    // what came while nobody was attached. A client that kept its screen skips the first part.
    assert_eq!(t.offset, 0, "nothing fell out of the ring yet");
    assert_eq!(&t.raw[..seen.len()], &seen[..]);
    let missed = String::from_utf8_lossy(&t.raw[seen.len()..]).into_owned();
    assert!(missed.contains("marker-42"), "{missed:?}");
    assert!(
        t.out.contains("50 132"),
        "earlier output is replayed too: {:?}",
        t.out
    );
    assert_eq!(t.run("echo $FOO").await, "kept-42");
    assert_eq!(t.run("stty size").await, "30 100");

    // One client per session: a second attach takes over and the first is told.
    let mut t2 = Term::open(&s, "dev", &alice, "session=tab-1").await;
    assert!(!t2.new);
    let m = t.control().await;
    assert_eq!(m, json!({"type": "taken_over"}));
    assert_eq!(t.closed().await, 4001);
    assert_eq!(t2.run("echo $FOO").await, "kept-42");
    assert_eq!(
        t2.run("stty size").await,
        "30 100",
        "an attach without a size keeps the terminal's"
    );

    // The terminals are open pty sessions on the workspace.
    let (st, act) = s.get(&alice, "/api/v1/workspaces/dev/activity").await;
    assert_eq!(st, StatusCode::OK, "{act}");
    assert_eq!(act["open_sessions"]["pty"], 2, "{act}");
    assert!(act["last"]["pty"].is_string(), "{act}");

    // Exit: the code comes after the last output, the socket closes, the session is gone.
    t2.type_line("echo by''e; exit 7").await;
    let m = t2.control().await;
    assert_eq!(m, json!({"type": "exit", "code": 7}));
    assert!(t2.out.contains("bye"), "{:?}", t2.out);
    assert_eq!(t2.closed().await, 1000);
    let mut t3 = Term::open(&s, "dev", &alice, "session=tab-1").await;
    assert!(t3.new, "a new shell after the old one exited");
    assert_eq!(t3.run("echo \"[$FOO]\"").await, "[]");

    // A process that exits while nobody is attached: the reconnect gets its output and code.
    let mut c = Term::open(
        &s,
        "dev",
        &alice,
        "session=job&command=sleep+1%3B+echo+fin%27%27ished%3B+touch+%2Ftmp%2Fjob-done%3B+exit+3",
    )
    .await;
    assert!(c.new);
    drop(c.ws.close(None).await);
    probe
        .type_line("while [ ! -e /tmp/job-done ]; do sleep 1; done; echo pro''be-2")
        .await;
    probe.until("probe-2").await;
    let mut c = Term::open(&s, "dev", &alice, "session=job").await;
    assert!(!c.new);
    let m = c.control().await;
    assert_eq!(m, json!({"type": "exit", "code": 3}));
    assert!(c.out.contains("finished"), "{:?}", c.out);
    assert_eq!(c.closed().await, 1000);

    // Every connection is audited with who, from where, and whether it started or reattached.
    let (st, audit) = s
        .get(&s.admin, "/api/v1/audit?action=workspace.terminal")
        .await;
    assert_eq!(st, StatusCode::OK, "{audit}");
    let records = audit["records"].as_array().expect("records");
    let tab1: Vec<&Value> = records
        .iter()
        .filter(|r| details(r)["session"] == "tab-1")
        .collect();
    assert_eq!(tab1.len(), 4, "{audit}");
    for r in &tab1 {
        assert_eq!(r["actor_username"], "alice", "{r}");
        assert_eq!(r["source_ip"], "127.0.0.1", "{r}");
        assert_eq!(r["target_name"], "dev", "{r}");
    }
    let attaches: Vec<String> = tab1
        .iter()
        .map(|r| details(r)["attach"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        attaches.iter().filter(|a| *a == "new").count(),
        2,
        "{attaches:?}"
    );
    assert_eq!(
        attaches.iter().filter(|a| *a == "reattach").count(),
        2,
        "{attaches:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminals_authenticate_like_the_api_and_refuse_bad_input() {
    let s = TestServer::start().await;
    s.import_busybox();
    template(&s).await;
    let alice = s.user_token("alice", "member", None).await;
    let bob = s.user_token("bob", "member", None).await;
    create(&s, &alice, "dev").await;

    // A browser's way: the token as a second subprotocol; the server picks the real one.
    let (sock, proto) = upgrade(
        &s,
        "dev",
        Auth::Protocols(&format!("warren.terminal.v1, warren.bearer.{alice}")),
        "session=browser",
    )
    .await
    .unwrap();
    assert_eq!(proto.as_deref(), Some("warren.terminal.v1"));
    let mut b = Term::attached(sock).await;
    assert_eq!(b.run("echo SECRET=alice-$((1+1))").await, "SECRET=alice-2");
    b.type_line("SECRET=alice-only").await;

    // Refusals before the upgrade: status and a JSON error with a code and a hint.
    let refusals = [
        (Auth::None, "session=x", 401, "unauthenticated"),
        (
            Auth::Protocols("warren.terminal.v1, warren.bearer.wrn_nope"),
            "session=x",
            401,
            "unauthenticated",
        ),
        (
            Auth::Protocols(&format!("warren.bearer.{alice}")),
            "session=x",
            400,
            "invalid_request",
        ),
        (Auth::Header(&alice), "", 400, "invalid_request"),
        (
            Auth::Header(&alice),
            "session=a%2Fb",
            400,
            "invalid_request",
        ),
        (
            Auth::Header(&alice),
            "session=x&rows=0",
            400,
            "invalid_request",
        ),
        (
            Auth::Header(&alice),
            "session=x&cols=70000",
            400,
            "invalid_request",
        ),
        (
            Auth::Header(&alice),
            "session=x&rows=tall",
            400,
            "invalid_request",
        ),
        (
            Auth::Header(&alice),
            &format!("session=x&token={alice}"),
            400,
            "invalid_request",
        ),
        // Another user's workspace does not exist for bob, by name or by owner-qualified name.
        (Auth::Header(&bob), "session=browser", 404, "not_found"),
    ];
    for (auth, query, status, code) in refusals {
        let (st, body) = upgrade(&s, "dev", auth, query).await.err().unwrap();
        assert_eq!(
            (st, body["code"].as_str()),
            (status, Some(code)),
            "{query}: {body}"
        );
        assert!(body["message"].is_string(), "{body}");
    }
    let (st, _) = upgrade(&s, "dev.alice", Auth::Header(&bob), "session=browser")
        .await
        .err()
        .unwrap();
    assert_eq!(st, 404);
    let r = s
        .http
        .get(format!(
            "{}/api/v1/workspaces/dev/terminal?session=x",
            s.url
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "not a WebSocket upgrade"
    );
    // The subprotocol carries a token only on a WebSocket upgrade, never on plain requests.
    let r = s
        .http
        .get(format!("{}/api/v1/workspaces", s.url))
        .header("sec-websocket-protocol", format!("warren.bearer.{alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The admin may open terminals in alice's workspace, but the same session id is the
    // admin's own session: alice's shell stays hers.
    let mut a = Term::open(&s, "dev.alice", &s.admin, "session=browser").await;
    assert!(a.new);
    assert_eq!(a.run("echo \"[$SECRET]\"").await, "[]");
    a.type_line("exit").await;
    assert_eq!(a.control().await["type"], "exit");

    // Bad control messages: a clear, non-fatal error each; the session and its neighbours go on.
    let mut bad = Term::open(&s, "dev", &alice, "session=bad").await;
    for (msg, needle) in [
        (r#"{"type":"bogus"}"#.to_string(), "unknown variant"),
        ("not json".to_string(), "invalid control message"),
        (
            r#"{"type":"resize","rows":0,"cols":80}"#.to_string(),
            "rows and cols",
        ),
        (
            r#"{"type":"resize","rows":99999999999,"cols":80}"#.to_string(),
            "invalid control message",
        ),
        (
            format!(r#"{{"type":"resize","pad":"{}"}}"#, "x".repeat(8192)),
            "at most 4096",
        ),
    ] {
        bad.send_text(&msg).await;
        let e = bad.control().await;
        assert_eq!(e["type"], "error", "{e}");
        assert_eq!(e["code"], "invalid_request", "{e}");
        assert_eq!(e["fatal"], false, "{e}");
        assert!(
            e["message"].as_str().unwrap().contains(needle),
            "{msg:.60}: {e}"
        );
        assert!(e["hint"].is_string(), "{e}");
    }
    assert_eq!(bad.run("stty size").await, "24 80");
    assert_eq!(b.run("echo $SECRET").await, "alice-only");

    // At most MAX sessions per user (alice has `browser` and `bad`); the next is refused with a
    // stable code and a hint, and the existing ones still attach.
    let max = warren_server::routes::workspaces::terminal::MAX_SESSIONS_PER_USER;
    let mut held = vec![];
    for i in 2..max {
        let t = Term::open(&s, "dev", &alice, &format!("session=cap-{i}")).await;
        assert!(t.new);
        held.push(t);
    }
    let (sock, _) = upgrade(&s, "dev", Auth::Header(&alice), "session=one-too-many")
        .await
        .unwrap();
    let mut over = Term {
        ws: sock,
        out: String::new(),
        raw: vec![],
        controls: vec![],
        closed: None,
        new: false,
        offset: 0,
    };
    let e = over.control().await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "limit_exceeded", "{e}");
    assert_eq!(e["fatal"], true, "{e}");
    assert!(e["hint"].as_str().unwrap().contains("exit"), "{e}");
    assert_eq!(over.closed().await, 4000);
    // Bob is not affected by alice's cap (his own workspace would do; here, the admin's).
    let mut again = Term::open(&s, "dev", &alice, "session=cap-2").await;
    assert!(!again.new);
    assert_eq!(again.run("echo st''ill").await, "still");
    // Ending one frees a place.
    again.type_line("exit").await;
    assert_eq!(again.control().await["type"], "exit");
    let t = Term::open(&s, "dev", &alice, "session=one-more").await;
    assert!(t.new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_terminal_is_hung_up_after_the_grace_period_and_at_shutdown() {
    let layer = || ConfigLayer {
        terminal_grace: Some("1s".into()),
        ..Default::default()
    };
    let s = TestServer::start_with(layer()).await;
    s.import_busybox();
    template(&s).await;
    let alice = s.user_token("alice", "member", None).await;
    create(&s, &alice, "dev").await;

    let mut t = Term::open(&s, "dev", &alice, "session=gone").await;
    let pid: u32 = t.run("echo $$").await.parse().unwrap();
    t.vanish();

    // Another terminal watches the first shell's process until it is gone.
    let mut w = Term::open(&s, "dev", &alice, "session=watch").await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = w
            .run(&format!(
                "kill -0 {pid} 2>/dev/null && echo alive || echo gone"
            ))
            .await;
        if r == "gone" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pid} still {r}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The session is forgotten: the same id starts a new shell, and only live terminals count.
    let mut t = Term::open(&s, "dev", &alice, "session=gone").await;
    assert!(t.new);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, act) = s.get(&alice, "/api/v1/workspaces/dev/activity").await;
        if act["open_sessions"]["pty"] == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{act}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A shutdown hangs up every terminal: the attached client is told, and the shells are gone
    // when the server is back.
    let p1: u32 = t.run("echo $$").await.parse().unwrap();
    let p2: u32 = w.run("echo $$").await.parse().unwrap();
    let stop = tokio::spawn(async move { s.restart_with(layer()).await });
    let e = t.control().await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "unavailable", "{e}");
    assert_eq!(t.closed().await, 1001);
    let s = tokio::time::timeout(WAIT, stop).await.unwrap().unwrap();
    let mut n = Term::open(&s, "dev", &alice, "session=after").await;
    assert!(n.new);
    for pid in [p1, p2] {
        assert_eq!(
            n.run(&format!(
                "kill -0 {pid} 2>/dev/null && echo alive || echo gone"
            ))
            .await,
            "gone",
            "{pid}"
        );
    }

    // The workspace stops: the terminal's shell ends with it; a new terminal is refused in-band
    // (browsers cannot read a refused handshake) with a stable code and a hint.
    let (st, v) = s
        .post(&alice, "/api/v1/workspaces/dev/stop", json!({}))
        .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{v}");
    let job = s.wait_job(&alice, v["job"]["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let e = n.control().await;
    assert_eq!(e["type"], "exit", "{e}");
    let (sock, _) = upgrade(&s, "dev", Auth::Header(&alice), "session=stopped")
        .await
        .unwrap();
    let mut t = Term {
        ws: sock,
        out: String::new(),
        raw: vec![],
        controls: vec![],
        closed: None,
        new: false,
        offset: 0,
    };
    let e = t.control().await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "invalid_state", "{e}");
    assert_eq!(e["fatal"], true, "{e}");
    assert!(e["hint"].is_string(), "{e}");
    assert_eq!(t.closed().await, 4000);
}
