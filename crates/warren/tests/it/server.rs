//! The CLI against a real `warren server` process, as a user drives it: `login` (token, stdin and
//! the device flow), contexts, users and tokens, template push with parameters, `create`, `up DIR`
//! (upload), `list`, `exec` over the WebSocket (exit codes, stdin, env), `logs`, `jobs`, `stop`,
//! `start`, `delete`, what another user may see, the audit log, and `--json` everywhere.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{read_until, stderr, stdout, warren_exe, World};

/// A `warren server` on a free loopback port, with its own state dir (busybox imported) and a
/// private CLI configuration directory. Dropping it deletes the workspaces left on it and stops
/// the server.
struct Server {
    url: String,
    /// The owner's token from `warren server init`.
    admin: String,
    config: tempfile::TempDir,
    log: PathBuf,
    child: Child,
    world: World,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.starts_with("HTTP/1.1 200") || resp.starts_with("HTTP/1.0 200")
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    /// [`Server::start`] with more arguments to `warren server`.
    fn start_with(extra: &[&str]) -> Server {
        let world = World::new();
        let o = world.warren(&["server", "init"]);
        assert!(o.status.success(), "server init: {}", stderr(&o));
        let admin = stdout(&o).trim().to_string();
        assert!(admin.starts_with("wrn_"), "init prints the token: {admin}");
        let port = free_port();
        let log = world.dir.join("server.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = world
            .command(
                &[
                    &["server", "--listen", &format!("127.0.0.1:{port}")][..],
                    extra,
                ]
                .concat(),
            )
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        let mut s = Server {
            url: format!("http://127.0.0.1:{port}"),
            admin,
            config: tempfile::tempdir().unwrap(),
            log,
            child,
            world,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(port) {
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("the server exited ({st}): {}", s.server_log());
            }
            assert!(
                Instant::now() < deadline,
                "the server did not become healthy: {}",
                s.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `warren args...` with this test's CLI configuration (no server selected until `login`).
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(warren_exe());
        c.args(args)
            .env("WARREN_CONFIG_DIR", self.config.path())
            // Anything that falls back to the embedded engine stays in the test's directory.
            .env("WARREN_STATE_DIR", self.world.dir.join("cli-state"))
            .env("NO_COLOR", "1")
            .env_remove("WARREN_URL")
            .env_remove("WARREN_TOKEN")
            .env_remove("WARREN_CONTEXT")
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "warren {args:?} failed ({:?})\nstdout: {}\nstderr: {}\nserver log:\n{}",
            o.status.code(),
            stdout(&o),
            stderr(&o),
            self.server_log()
        );
        stdout(&o)
    }

    /// Runs with `--json`, asserts success, parses stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// Runs, asserts failure (exit 1); returns (stdout, stderr).
    fn fails(&self, args: &[&str]) -> (String, String) {
        let o = self.run(args);
        assert_eq!(
            o.status.code(),
            Some(1),
            "warren {args:?} should fail\nstdout: {}\nstderr: {}",
            stdout(&o),
            stderr(&o)
        );
        (stdout(&o), stderr(&o))
    }

    /// `login` as the owner, in context `admin`.
    fn login_admin(&self) {
        self.ok(&[
            "login",
            &self.url,
            "--token",
            &self.admin,
            "--name",
            "admin",
        ]);
    }

    /// Creates user `name` (member) and signs in as them in context `name`.
    fn login_member(&self, name: &str) -> String {
        self.ok(&[
            "--context",
            "admin",
            "user",
            "create",
            name,
            "--role",
            "member",
        ]);
        let token = self
            .ok(&["--context", "admin", "token", "create", "--user", name])
            .trim()
            .to_string();
        assert!(
            token.starts_with("wrn_"),
            "only the token on stdout: {token}"
        );
        self.ok(&["login", &self.url, "--token", &token, "--name", name]);
        token
    }

    /// `(exit code, stdout, stderr)` of `warren exec WS -- sh -c SCRIPT`.
    fn sh(&self, ws: &str, script: &str) -> (i32, String, String) {
        let o = self.run(&["exec", ws, "--", "sh", "-c", script]);
        (o.status.code().unwrap_or(-1), stdout(&o), stderr(&o))
    }

    /// The workspace `name` in `list --json`, if any.
    fn listed(&self, name: &str) -> Option<Value> {
        self.json(&["list"])
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name)
            .cloned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Delete whatever the test left on the server, as the owner, then stop the server.
        let as_admin = |args: &[&str]| {
            self.cmd(args)
                .env("WARREN_URL", &self.url)
                .env("WARREN_TOKEN", &self.admin)
                .output()
        };
        if let Ok(o) = as_admin(&["list", "--all", "--json"]) {
            if let Ok(Value::Array(list)) = serde_json::from_slice::<Value>(&o.stdout) {
                for w in list {
                    if let Some(id) = w["id"].as_str() {
                        let _ = as_admin(&["delete", "--force", id]);
                    }
                }
            }
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Lines of a child's stream, delivered through a channel (to wait with a timeout).
fn lines_of(r: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn login_contexts_users_tokens_device_flow_and_audit() {
    let s = Server::start();
    let url = s.url.clone();

    // With no context, server commands say how to get one.
    let (_, err) = s.fails(&["whoami"]);
    assert!(
        err.contains("needs a server") && err.contains("warren login"),
        "{err}"
    );
    // A bad token is refused and nothing is saved.
    let (_, err) = s.fails(&["login", &url, "--token", "wrn_nope_nope"]);
    assert!(err.contains("refused the token"), "{err}");
    assert!(!s.config.path().join("contexts.json").exists());

    // Token login: verified with /me, saved 0600, made current.
    s.login_admin();
    let file = s.config.path().join("contexts.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let saved: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(saved["current"], "admin");
    assert_eq!(saved["contexts"]["admin"]["url"], url.as_str());
    assert_eq!(saved["contexts"]["admin"]["ca_cert"], Value::Null);
    let out = s.ok(&["whoami"]);
    assert!(out.contains("admin (owner)"), "{out}");
    assert_eq!(s.json(&["whoami"])["user"]["username"], "admin");

    // A member, their token, and a second context; `--token-stdin`.
    s.ok(&["user", "create", "alice", "--role", "member"]);
    let users = s.json(&["user", "list"]);
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "alice" && u["role"] == "member"),
        "{users}"
    );
    let o = s
        .cmd(&["token", "create", "--user", "alice", "--name", "laptop"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let alice = stdout(&o).trim().to_string();
    assert!(
        alice.starts_with("wrn_") && !alice.contains('\n'),
        "{alice}"
    );
    assert!(
        stderr(&o).contains("shown only this once"),
        "{}",
        stderr(&o)
    );
    let mut c = s
        .cmd(&["login", &url, "--token-stdin", "--name", "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("{alice}\n").as_bytes())
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(s.ok(&["whoami"]).starts_with("alice (member)"));

    // Selection: --context, WARREN_CONTEXT, WARREN_URL + WARREN_TOKEN, `context use`.
    assert!(s.ok(&["--context", "admin", "whoami"]).starts_with("admin"));
    let o = s
        .cmd(&["whoami"])
        .env("WARREN_CONTEXT", "admin")
        .output()
        .unwrap();
    assert!(stdout(&o).starts_with("admin"), "{}", stderr(&o));
    let o = s
        .cmd(&["whoami"])
        .env("WARREN_URL", &url)
        .env("WARREN_TOKEN", &s.admin)
        .output()
        .unwrap();
    assert!(stdout(&o).starts_with("admin"), "{}", stderr(&o));
    let (_, err) = s.fails(&["--context", "nope", "whoami"]);
    assert!(
        err.contains("no context named `nope`") && err.contains("admin, alice"),
        "{err}"
    );
    let list = s.json(&["context", "list"]);
    let names: Vec<(&str, bool)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["current"].as_bool().unwrap()))
        .collect();
    assert_eq!(names, [("admin", false), ("alice", true)]);
    assert!(
        !list.to_string().contains(&alice),
        "no secrets in context list"
    );
    s.ok(&["context", "use", "admin"]);
    assert!(s.ok(&["whoami"]).starts_with("admin"));
    let show = s.json(&["context", "show"]);
    assert_eq!(
        (show["name"].as_str(), show["current"].as_bool()),
        (Some("admin"), Some(true))
    );
    assert!(s.ok(&["context", "list"]).contains("*"));

    // A member may not manage users: the server's message, and its code with --json.
    let (out, err) = s.fails(&["--context", "alice", "user", "create", "bob", "--json"]);
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["error"]["code"], "permission_denied", "{out}");
    assert!(err.starts_with("error: "), "{err}");

    // Tokens: list and revoke.
    let t = s.json(&[
        "token",
        "create",
        "--name",
        "short",
        "--lifetime",
        "15m",
        "--scope",
        "workspace:read",
    ]);
    let id = t["info"]["id"].as_str().unwrap().to_string();
    assert_eq!(t["info"]["scopes"], serde_json::json!(["workspace:read"]));
    let (_, err) = s.fails(&["token", "create", "--scope", "everything"]);
    assert!(err.contains("unknown scope `everything`"), "{err}");
    s.ok(&["token", "revoke", &id]);
    let tokens = s.json(&["token", "list"]);
    let revoked = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");

    // Teams.
    s.ok(&["team", "create", "core"]);
    s.ok(&["team", "add", "core", "alice"]);
    let teams = s.json(&["team", "list"]);
    assert_eq!(teams[0]["members"], serde_json::json!(["alice"]), "{teams}");
    s.ok(&["team", "remove", "core", "alice"]);
    s.ok(&["team", "delete", "core"]);

    // Device login: the waiting CLI shows a code; a signed-in session approves it.
    let mut waiting = s
        .cmd(&["login", &url, "--name", "device"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(waiting.stderr.take().unwrap());
    let mut seen = String::new();
    let code = loop {
        let l = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no code shown: {seen}"));
        seen.push_str(&l);
        seen.push('\n');
        if let Some(code) = l.split("warren login --approve ").nth(1) {
            break code.trim().to_string();
        }
    };
    assert_eq!(code.len(), 9, "{code}");
    s.ok(&["login", "--approve", &code]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = waiting.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the device login did not finish");
        std::thread::sleep(Duration::from_millis(100));
    };
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(status.success(), "{seen}{}", rest.join("\n"));
    assert!(rest.join("\n").contains("Logged in"), "{}", rest.join("\n"));
    let show = s.json(&["context", "show"]);
    assert_eq!(show["name"], "device");
    assert!(s.ok(&["whoami"]).starts_with("admin"));
    // An approved code cannot be approved again.
    let (_, err) = s.fails(&["--context", "admin", "login", "--approve", &code]);
    assert!(err.contains("error:"), "{err}");

    // Logout revokes the token and forgets the context.
    let token_id = show["token_id"].as_str().unwrap().to_string();
    s.ok(&["logout"]);
    let ctx = s.json(&["context", "list"]);
    assert!(!ctx.to_string().contains("\"device\""), "{ctx}");
    let tokens = s.json(&["--context", "admin", "token", "list"]);
    let t = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == token_id.as_str())
        .unwrap();
    assert!(t["revoked_at"].is_string(), "{t}");
    // No current context now: back to this host for workspace commands.
    assert_eq!(s.json(&["context", "show"])["embedded"], true);
    s.ok(&["context", "use", "admin"]);
    s.ok(&["context", "rm", "alice"]);
    assert_eq!(s.json(&["context", "list"]).as_array().unwrap().len(), 1);

    // The audit log: a table, JSON, verification on the server and of an export, offline.
    let table = s.ok(&["audit"]);
    assert!(table.starts_with("ID") && table.contains("user"), "{table}");
    let page = s.json(&["audit", "--limit", "5"]);
    assert_eq!(page["records"].as_array().unwrap().len(), 5, "{page}");
    assert!(page["next_after"].is_i64(), "{page}");
    let out = s.ok(&["audit", "verify"]);
    assert!(out.starts_with("ok: "), "{out}");
    assert_eq!(s.json(&["audit", "verify"])["ok"], true);
    let export = s.ok(&["audit", "export"]);
    let n = export.lines().count();
    assert!(n >= 10, "{export}");
    let file = s.world.dir.join("audit.jsonl");
    std::fs::write(&file, &export).unwrap();
    // Offline: a server that does not exist is not asked.
    let o = s
        .cmd(&["audit", "verify", "--file", file.to_str().unwrap()])
        .env("WARREN_URL", "http://127.0.0.1:1")
        .env("WARREN_TOKEN", "x")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("ok: {n} records")),
        "{}",
        stdout(&o)
    );
    // `warren audit export | warren audit verify --file -`.
    let mut exporter = s
        .cmd(&["audit", "export"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let verify = s
        .cmd(&["audit", "verify", "--file", "-", "--json"])
        .stdin(exporter.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(exporter.wait().unwrap().success());
    assert!(verify.status.success(), "{}", stderr(&verify));
    let v: Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    // A changed record breaks the chain there: exit 1 with its id and why.
    let mut lines: Vec<String> = export.lines().map(str::to_string).collect();
    let mut rec: Value = serde_json::from_str(&lines[2]).unwrap();
    let bad_id = rec["id"].as_i64().unwrap();
    rec["user_agent"] = "forged".into();
    lines[2] = rec.to_string();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (out, err) = s.fails(&[
        "audit",
        "verify",
        "--file",
        file.to_str().unwrap(),
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["first_bad_id"].as_i64()),
        (Some(false), Some(bad_id)),
        "{v}"
    );
    assert!(err.contains(&format!("broken at record {bad_id}")), "{err}");
}

const TEMPLATE_DEVCONTAINER: &str = r#"{
  "image": "busybox",
  "containerEnv": { "GREETING": "${param:greeting}" },
  "waitFor": "postCreateCommand",
  "postCreateCommand": "echo post-create says ${param:greeting}"
}"#;

const TEMPLATE_MANIFEST: &str = r#"{
  "name": "busy",
  "description": "busybox for the tests",
  "parameters": [
    {"name": "greeting", "type": "string", "default": "hello"},
    {"name": "size", "type": "number", "default": 1, "validation": {"min": 1, "max": 4}}
  ]
}"#;

#[test]
fn templates_create_exec_logs_lifecycle_and_visibility() {
    let s = Server::start();
    s.login_admin();
    let tpl = s.world.dir.join("tpl");
    write(
        &tpl.join(".devcontainer/devcontainer.json"),
        TEMPLATE_DEVCONTAINER,
    );
    write(&tpl.join("warren-template.json"), TEMPLATE_MANIFEST);
    write(&tpl.join("README"), "a file of the template\n");

    // Push: the name comes from warren-template.json.
    let out = s.ok(&[
        "template",
        "push",
        tpl.to_str().unwrap(),
        "--message",
        "first",
    ]);
    assert_eq!(out.trim(), "1");
    let v = s.json(&["template", "push", tpl.to_str().unwrap(), "--no-activate"]);
    assert_eq!(
        (v["number"].as_i64(), v["active"].as_bool()),
        (Some(2), Some(false)),
        "{v}"
    );
    let list = s.json(&["template", "list"]);
    let busy = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "busy")
        .unwrap();
    assert_eq!(busy["active_version"], 1, "{busy}");
    let show = s.json(&["template", "show", "busy"]);
    assert_eq!(
        show["active_version"]["parameters"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{show}"
    );
    let text = s.ok(&["template", "show", "busy"]);
    assert!(
        text.contains("greeting") && text.contains("number"),
        "{text}"
    );
    assert_eq!(
        s.json(&["template", "versions", "busy"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    s.ok(&["template", "activate", "busy", "2"]);
    assert_eq!(
        s.json(&["template", "show", "busy"])["template"]["active_version"],
        2
    );

    // Bad parameters: errors that name the parameter, before and at the server.
    let (_, err) = s.fails(&[
        "create",
        "ws1",
        "--template",
        "busy",
        "--param",
        "size=many",
    ]);
    assert!(
        err.contains("parameter `size`") && err.contains("expected a number"),
        "{err}"
    );
    let (_, err) = s.fails(&[
        "create",
        "ws1",
        "--template",
        "busy",
        "--param",
        "colour=red",
    ]);
    assert!(
        err.contains("parameter `colour`") && err.contains("greeting"),
        "{err}"
    );
    let (out, err) = s.fails(&[
        "create",
        "ws1",
        "--template",
        "busy",
        "--param",
        "size=9",
        "--json",
    ]);
    assert!(
        err.contains("parameter `size`") && err.contains("maximum"),
        "{err}"
    );
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["error"]["code"], "invalid_parameter", "{out}");
    let (_, err) = s.fails(&["create", "ws1", "--template", "nope"]);
    assert!(err.contains("no template `nope`"), "{err}");
    assert!(s.listed("ws1").is_none());

    // Create: the job's log is followed on stderr; the name on stdout.
    let o = s.run(&[
        "create",
        "ws1",
        "--template",
        "busy",
        "--param",
        "greeting=bonjour",
        "--param",
        "size=2",
    ]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), s.server_log());
    assert_eq!(stdout(&o).trim(), "ws1");
    assert_eq!(s.listed("ws1").unwrap()["state"], "running");
    let listed = s.json(&["list", "--status", "running"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");

    // exec: output, exit codes, stderr, env, cwd, user, stdin (with EOF).
    assert_eq!(
        s.sh("ws1", "echo $GREETING"),
        (0, "bonjour\n".into(), String::new())
    );
    let (code, out, _) = s.sh("ws1", "echo hi; exit 3");
    assert_eq!((code, out.as_str()), (3, "hi\n"));
    let (code, _, err) = s.sh("ws1", "echo oops >&2; exit 0");
    assert_eq!((code, err.as_str()), (0, "oops\n"));
    let o = s.run(&[
        "exec",
        "-e",
        "K=V",
        "-w",
        "/tmp",
        "-u",
        "dev",
        "ws1",
        "--",
        "sh",
        "-c",
        "echo $K; pwd; id -un",
    ]);
    assert_eq!(stdout(&o), "V\n/tmp\ndev\n", "{}", stderr(&o));
    let mut c = s
        .cmd(&["exec", "ws1", "--", "sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    stdin.write_all(b"piped line 1\npiped line 2\n").unwrap();
    drop(stdin);
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "piped line 1\npiped line 2\ndone\n");
    let o = s.run(&["exec", "ws1", "--", "/no/such/program"]);
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));

    // Logs and jobs.
    let logs = s.ok(&["logs", "ws1"]);
    assert!(logs.contains("post-create says bonjour"), "{logs}");
    let jobs = s.json(&["jobs", "ws1"]);
    let job = &jobs[0];
    assert_eq!(
        (job["kind"].as_str(), job["status"].as_str()),
        (Some("create"), Some("succeeded")),
        "{jobs}"
    );
    let job_log = s.ok(&["logs", "--job", job["id"].as_str().unwrap()]);
    assert!(!job_log.is_empty());
    let followed = s.ok(&["logs", "--job", job["id"].as_str().unwrap(), "--follow"]);
    assert_eq!(followed, job_log);

    // stop / start / restart, with --json.
    let v = s.json(&["stop", "ws1"]);
    assert_eq!(
        (
            v["workspace"]["state"].as_str(),
            v["job"]["status"].as_str()
        ),
        (Some("stopped"), Some("succeeded")),
        "{v}"
    );
    let (code, _, err) = s.sh("ws1", "true");
    assert_eq!(code, 1, "exec on a stopped workspace fails: {err}");
    s.ok(&["start", "ws1"]);
    assert_eq!(s.listed("ws1").unwrap()["state"], "running");
    assert_eq!(s.sh("ws1", "echo $GREETING").1, "bonjour\n");
    let detached = s.ok(&["restart", "ws1", "--detach"]).trim().to_string();
    s.ok(&["logs", "--job", &detached, "--follow"]);
    let ext = s.json(&["extend", "ws1", "--by", "2h"]);
    assert!(ext["deadline_at"].is_string(), "{ext}");

    // Another member sees nothing of it, and exec on it is "not found".
    s.login_member("bob");
    assert_eq!(s.json(&["list"]), serde_json::json!([]));
    let (out, err) = s.fails(&["exec", "ws1", "--json", "--", "true"]);
    assert!(err.contains("no workspace `ws1`"), "{err}");
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["error"]["code"], "not_found");
    let (_, err) = s.fails(&["exec", "ws1.admin", "--", "true"]);
    assert!(err.contains("no workspace"), "{err}");
    let (_, err) = s.fails(&["stop", "ws1"]);
    assert!(err.contains("no workspace"), "{err}");
    // The admin sees everyone's with --all.
    let all = s.json(&["--context", "admin", "list", "--all"]);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    let table = s.ok(&["--context", "admin", "list", "--all"]);
    assert!(
        table.contains("OWNER") && table.contains("admin"),
        "{table}"
    );

    // delete: refused while running unless --force.
    s.ok(&["context", "use", "admin"]);
    let (_, err) = s.fails(&["delete", "ws1"]);
    assert!(
        err.contains("is running") && err.contains("--force"),
        "{err}"
    );
    let v = s.json(&["delete", "--force", "ws1"]);
    assert_eq!(v["deleted"], "ws1", "{v}");
    assert!(s.listed("ws1").is_none());
    let (_, err) = s.fails(&["logs", "ws1"]);
    assert!(err.contains("no workspace"), "{err}");
}

#[test]
fn up_uploads_the_folder_to_the_server_and_local_still_works() {
    let s = Server::start();
    s.login_admin();
    let proj = s.world.project(
        "hello-up",
        r#"{"image": "busybox", "waitFor": "postStartCommand", "postCreateCommand": "cat marker.txt", "postStartCommand": "echo started >> starts.log"}"#,
    );
    write(&proj.join("marker.txt"), "uploaded!\n");
    write(&proj.join("sub/dir/file"), "deep\n");
    std::os::unix::fs::symlink("marker.txt", proj.join("link")).unwrap();

    let o = s.run(&["up", proj.to_str().unwrap()]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), s.server_log());
    assert_eq!(stdout(&o).trim(), "hello-up");
    let err = stderr(&o);
    assert!(
        err.contains("Uploading") && err.contains("is running"),
        "{err}"
    );
    assert_eq!(
        s.sh("hello-up", "cat marker.txt sub/dir/file; readlink link"),
        (0, "uploaded!\ndeep\nmarker.txt\n".into(), String::new())
    );
    assert!(s.ok(&["logs", "hello-up"]).contains("uploaded!"));
    // The workspace has a copy: changing the folder changes nothing there.
    write(&proj.join("marker.txt"), "changed locally\n");
    assert_eq!(s.sh("hello-up", "cat marker.txt").1, "uploaded!\n");

    // up again: already running, nothing runs again.
    let v = s.json(&["up", proj.to_str().unwrap()]);
    assert_eq!(v["workspace"]["state"], "running", "{v}");
    assert_eq!(s.sh("hello-up", "wc -l < starts.log").1.trim(), "1");
    // Stopped: up starts it (postStartCommand again).
    s.ok(&["stop", "hello-up"]);
    assert_eq!(s.ok(&["up", proj.to_str().unwrap()]).trim(), "hello-up");
    assert_eq!(s.listed("hello-up").unwrap()["state"], "running");
    assert_eq!(s.sh("hello-up", "wc -l < starts.log").1.trim(), "2");
    // --name, --detach.
    let job = s.ok(&["up", proj.to_str().unwrap(), "--name", "second", "--detach"]);
    s.ok(&["logs", "--job", job.trim(), "--follow"]);
    assert_eq!(s.listed("second").unwrap()["state"], "running");
    s.ok(&["delete", "--force", "second"]);
    s.ok(&["delete", "--force", "hello-up"]);

    // Too big to upload: a clear error before anything is sent.
    let big = s.world.project("big", r#"{"image": "busybox"}"#);
    std::fs::File::create(big.join("blob"))
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    let (_, err) = s.fails(&["up", big.to_str().unwrap()]);
    assert!(
        err.contains("too large to upload") && err.contains("64 MiB"),
        "{err}"
    );
    // No devcontainer.json: said before uploading.
    let empty = s.world.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (_, err) = s.fails(&["up", empty.to_str().unwrap()]);
    assert!(err.contains("devcontainer.json"), "{err}");

    // --local runs on this host even with a context selected; the server never sees it.
    let host = World::new();
    let local = host.project("local-one", r#"{"image": "busybox"}"#);
    let o = s
        .cmd(&["--local", "up", local.to_str().unwrap()])
        .env("WARREN_STATE_DIR", host.state())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(host.state_of("local-one").as_deref(), Some("running"));
    assert!(s.listed("local-one").is_none());
}

#[test]
fn without_a_context_up_runs_embedded_and_server_commands_say_how_to_sign_in() {
    let w = World::new();
    let cfg = tempfile::tempdir().unwrap();
    let dir = w.project("plain", r#"{"image": "busybox"}"#);
    let run = |args: &[&str]| {
        let mut c = w.command(args);
        c.env("WARREN_CONFIG_DIR", cfg.path());
        c.output().unwrap()
    };
    let o = run(&["up", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "plain");
    assert_eq!(w.state_of("plain").as_deref(), Some("running"));
    let v: Value = serde_json::from_slice(&run(&["list", "--json"]).stdout).unwrap();
    assert_eq!(v[0]["name"], "plain");
    for args in [
        &["create", "x", "--template", "t"][..],
        &["template", "list"],
        &["logs", "--job", "j"],
        &["whoami"],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert!(
            err.contains("needs a server") && err.contains("warren login URL"),
            "{err}"
        );
    }
    // A named context that does not exist is an error, not a silent fallback.
    let o = run(&["--context", "prod", "list"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no context named `prod`"),
        "{}",
        stderr(&o)
    );
    assert!(run(&["delete", "--force", "plain"]).status.success());
}

#[test]
fn remote_exec_forwards_signals_and_gives_shells_a_terminal_that_follows_resizes() {
    use std::os::fd::AsFd;
    let s = Server::start();
    s.login_admin();
    let dir = s.world.project("term", r#"{"image": "busybox"}"#);
    assert_eq!(s.ok(&["up", dir.to_str().unwrap()]).trim(), "term");

    // Signals to the CLI reach the process; its exit code is ours.
    let mut child = s
        .cmd(&[
            "exec",
            "term",
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(child.wait().unwrap().code(), Some(7));

    // -t: a terminal of our size, resized when ours is.
    let pty = nix::pty::openpty(None, None).unwrap();
    warren_runtime::tty::set_window_size(pty.master.as_fd(), 33, 101).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = s
        .cmd(&[
            "exec",
            "-t",
            "term",
            "--",
            "sh",
            "-c",
            "tty; stty size; read line; stty size; echo got $line; exit 5",
        ])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    let mut seen = String::new();
    read_until(&mut master, "33 101", &mut seen);
    assert!(seen.contains("/dev/pts/"), "a terminal: {seen}");
    warren_runtime::tty::set_window_size(master.as_fd(), 40, 120).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGWINCH,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    master.write_all(b"typed\r").unwrap();
    read_until(&mut master, "got typed", &mut seen);
    assert!(seen.contains("40 120"), "resized: {seen}");
    assert_eq!(child.wait().unwrap().code(), Some(5));

    // `warren shell`: a login shell on such a terminal; its exit status is ours.
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = std::fs::File::from(pty.slave);
    let mut child = s
        .cmd(&["shell", "term"])
        .stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave)
        .spawn()
        .unwrap();
    let mut master = std::fs::File::from(pty.master);
    master.write_all(b"echo answer=$((6*7)); exit 3\r").unwrap();
    let mut seen = String::new();
    read_until(&mut master, "answer=42", &mut seen);
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

/// A TCP relay to `target` whose connections can all be cut at once, as a lost network would.
struct Relay {
    port: u16,
    conns: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let held = conns.clone();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                let Ok(up) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                held.lock()
                    .unwrap()
                    .extend([c.try_clone().unwrap(), up.try_clone().unwrap()]);
                for (mut from, mut to) in
                    [(c.try_clone().unwrap(), up.try_clone().unwrap()), (up, c)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, conns }
    }

    /// Cuts every connection made so far.
    fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn shell_with_a_session_reconnects_to_the_same_shell_after_a_lost_connection() {
    let s = Server::start();
    s.login_admin();
    let dir = s.world.project("rt", r#"{"image": "busybox"}"#);
    assert_eq!(s.ok(&["up", dir.to_str().unwrap()]).trim(), "rt");
    let port: u16 = s.url.rsplit(':').next().unwrap().parse().unwrap();
    let relay = Relay::start(port);

    let mut child = s
        .cmd(&["shell", "rt", "--session", "work"])
        .env("WARREN_URL", format!("http://127.0.0.1:{}", relay.port))
        .env("WARREN_TOKEN", &s.admin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let collect = |mut r: Box<dyn Read + Send>| {
        let buf = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let b = buf.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = r.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                b.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        buf
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let wait_for = |buf: &std::sync::Arc<std::sync::Mutex<String>>, want: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !buf.lock().unwrap().contains(want) {
            assert!(
                Instant::now() < deadline,
                "no {want:?}; stdout {:?} stderr {:?}",
                out.lock().unwrap(),
                err.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"FOO=kept-$((40+2)); echo fir''st\n")
        .unwrap();
    wait_for(&out, "first");

    // The network goes away; the CLI reconnects to the same shell, and what it had shown
    // already is not shown again.
    relay.cut();
    wait_for(&err, "reconnecting");
    wait_for(&err, "reconnected");
    stdin.write_all(b"echo sec''ond-$FOO\n").unwrap();
    wait_for(&out, "second-kept-42");
    assert_eq!(
        out.lock().unwrap().matches("first").count(),
        1,
        "{:?}",
        out.lock().unwrap()
    );

    // The shell's exit status is ours.
    stdin.write_all(b"exit 5\n").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "{:?}", err.lock().unwrap());

    // --session needs a server; it does not go with --user.
    let o = s.run(&["--local", "shell", "rt", "--session", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--session needs a server"),
        "{}",
        stderr(&o)
    );
    let o = s.run(&["shell", "rt", "--session", "x", "--user", "root"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Starts `warren server` with `args` and `env` on `world`'s state; waits until it answers on
/// `port` (or fails with its output).
fn spawn_server(world: &World, args: &[&str], env: &[(&str, &str)], port: u16) -> (Child, PathBuf) {
    let log = world.dir.join(format!("server-{port}.log"));
    let f = std::fs::File::create(&log).unwrap();
    let mut cmd = world.command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(port) {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "the server exited ({st}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the server did not answer on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, log)
}

#[test]
fn first_start_prints_a_token_settings_layer_and_sigterm_leaves_workspaces_running() {
    let world = World::new();
    let (p_file, p_env, p_flag) = (free_port(), free_port(), free_port());
    let conf = world.dir.join("warren.toml");
    std::fs::write(&conf, format!("listen = \"127.0.0.1:{p_file}\"\n")).unwrap();
    let conf_s = conf.display().to_string();

    // The file alone decides; the first start prints the owner's token.
    let (mut child, log) = spawn_server(&world, &["server", "--config", &conf_s], &[], p_file);
    let out = std::fs::read_to_string(&log).unwrap();
    let token = out
        .split_whitespace()
        .find(|w| w.starts_with("wrn_"))
        .unwrap_or_else(|| panic!("no token printed: {out}"))
        .to_string();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "graceful shutdown exits 0: {status}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // The environment beats the file; the second start prints no token.
    let env_listen = format!("127.0.0.1:{p_env}");
    let (mut child, log) = spawn_server(
        &world,
        &["server", "--config", &conf_s],
        &[("WARREN_LISTEN", &env_listen)],
        p_env,
    );
    assert!(!healthy(p_file));
    assert!(!std::fs::read_to_string(&log).unwrap().contains("wrn_"));
    // A workspace made through it...
    let url = format!("http://127.0.0.1:{p_env}");
    let cfg = world.dir.join("cli");
    let cli = |args: &[&str]| {
        Command::new(warren_exe())
            .args(args)
            .env("WARREN_CONFIG_DIR", &cfg)
            .env("WARREN_URL", &url)
            .env("WARREN_TOKEN", &token)
            .env_remove("WARREN_CONTEXT")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let proj = world.project("survivor", r#"{"image": "busybox"}"#);
    let o = cli(&["up", proj.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = world.supervisors();
    assert_eq!(before.len(), 1);
    // ... keeps running through a SIGTERM of the server.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(world.supervisors(), before);

    // A flag beats the environment; the new server serves the same workspace.
    let flag_listen = format!("127.0.0.1:{p_flag}");
    let (mut child, _) = spawn_server(
        &world,
        &["server", "--config", &conf_s, "--listen", &flag_listen],
        &[("WARREN_LISTEN", &env_listen)],
        p_flag,
    );
    assert!(!healthy(p_env));
    let url = format!("http://127.0.0.1:{p_flag}");
    let o = Command::new(warren_exe())
        .args(["exec", "survivor", "--", "echo", "still here"])
        .env("WARREN_CONFIG_DIR", &cfg)
        .env("WARREN_URL", &url)
        .env("WARREN_TOKEN", &token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout(&o), "still here\n", "{}", stderr(&o));
    let o = Command::new(warren_exe())
        .args(["delete", "--force", "survivor"])
        .env("WARREN_CONFIG_DIR", &cfg)
        .env("WARREN_URL", &url)
        .env("WARREN_TOKEN", &token)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = child.kill();
    let _ = child.wait();
}

/// A `build.dockerfile` project uploaded with `up`: the server builds it with Warren's builder,
/// with no network for its RUN steps (server users' builds stay isolated).
#[test]
fn up_of_a_dockerfile_project_builds_on_the_server_without_network() {
    let s = Server::start();
    s.login_admin();
    let proj = s.world.project(
        "dockerfile-up",
        r#"{"build": {"dockerfile": "Dockerfile"}, "postCreateCommand": "cat /etc/netdevs"}"#,
    );
    write(
        &proj.join(".devcontainer/Dockerfile"),
        "FROM busybox\nRUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /etc/netdevs\n",
    );
    let o = s.run(&["up", proj.to_str().unwrap()]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), s.server_log());
    assert_eq!(
        s.sh("dockerfile-up", "cat /etc/netdevs"),
        (0, "lo\n".into(), String::new()),
        "only loopback in a server build's RUN"
    );
    s.ok(&["delete", "--force", "dockerfile-up"]);
}

/// `ssh-keygen -t TYPE` into `path` (no passphrase); returns the fingerprint `ssh-keygen -lf`
/// prints.
fn keygen(path: &Path, args: &[&str], comment: &str) -> String {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let st = Command::new("ssh-keygen")
        .args(args)
        .args(["-q", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (openssh-client) is needed");
    assert!(st.success());
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[test]
fn ssh_keys_are_added_listed_and_removed_with_the_cli() {
    let s = Server::start();
    s.login_admin();
    s.login_member("kim");
    let home = tempfile::tempdir().unwrap();
    let ssh = home.path().join(".ssh");
    let ed_fp = keygen(&ssh.join("id_ed25519"), &["-t", "ed25519"], "kim@laptop");
    let ec_fp = keygen(&ssh.join("id_ecdsa"), &["-t", "ecdsa"], "kim@ecdsa");
    let rsa = home.path().join("keys/work_rsa");
    let rsa_fp = keygen(&rsa, &["-t", "rsa", "-b", "3072"], "kim@work");
    let weak = home.path().join("keys/weak");
    keygen(&weak, &["-t", "rsa", "-b", "1024"], "weak");
    let with_home = |args: &[&str]| {
        let mut c = s.cmd(args);
        c.env("HOME", home.path());
        c.output().unwrap()
    };

    // No FILE: ~/.ssh/id_ed25519.pub.
    let o = with_home(&["ssh-key", "add"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("Added SSH key {ed_fp} (kim@laptop, ssh-ed25519)")),
        "{}",
        stderr(&o)
    );
    // A FILE with a name, as JSON.
    let k = s.json(&[
        "ssh-key",
        "add",
        &format!("{}.pub", rsa.display()),
        "--name",
        "work",
    ]);
    assert_eq!(
        (
            k["fingerprint"].as_str(),
            k["name"].as_str(),
            k["key_type"].as_str()
        ),
        (Some(rsa_fp.as_str()), Some("work"), Some("ssh-rsa"))
    );
    // From stdin.
    let mut child = s
        .cmd(&["ssh-key", "add", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = std::fs::read(ssh.join("id_ecdsa.pub")).unwrap();
    child.stdin.take().unwrap().write_all(&line).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(&ec_fp), "{}", stderr(&o));

    // The list, as a table and as JSON.
    let table = s.ok(&["ssh-key", "list"]);
    assert!(table.starts_with("ID"), "{table}");
    for want in [
        &ed_fp,
        &rsa_fp,
        &ec_fp,
        &"kim@laptop".to_string(),
        &"work".to_string(),
    ] {
        assert!(table.contains(want.as_str()), "{want} not in:\n{table}");
    }
    let list = s.json(&["ssh-key", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 3);
    // Admins see it too.
    let theirs = s.json(&["--context", "admin", "ssh-key", "list", "--user", "kim"]);
    assert_eq!(theirs.as_array().unwrap().len(), 3);
    assert_eq!(
        s.json(&["--context", "admin", "ssh-key", "list"]),
        serde_json::json!([])
    );

    // Refusals: one line and a hint each.
    let (_, err) = s.fails(&["ssh-key", "add", &format!("{}.pub", rsa.display())]);
    assert!(
        err.contains("already registered") && err.contains("hint:"),
        "{err}"
    );
    let (_, err) = s.fails(&[
        "--context",
        "admin",
        "ssh-key",
        "add",
        &format!("{}.pub", rsa.display()),
    ]);
    assert!(err.contains("already registered"), "{err}");
    let (_, err) = s.fails(&["ssh-key", "add", rsa.to_str().unwrap()]);
    assert!(
        err.contains("private key") && err.contains("hint:"),
        "{err}"
    );
    let (_, err) = s.fails(&["ssh-key", "add", &format!("{}.pub", weak.display())]);
    assert!(
        err.contains("1024 bits") && err.contains("ssh-keygen -t ed25519"),
        "{err}"
    );
    let (_, err) = s.fails(&["ssh-key", "add", "/nonexistent/key.pub"]);
    assert!(err.contains("cannot read /nonexistent/key.pub"), "{err}");
    let empty_home = tempfile::tempdir().unwrap();
    let o = s
        .cmd(&["ssh-key", "add"])
        .env("HOME", empty_home.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no public key") && stderr(&o).contains("ssh-keygen -t ed25519"),
        "{}",
        stderr(&o)
    );

    // Removal by fingerprint and by id.
    s.ok(&["ssh-key", "rm", &ed_fp]);
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["fingerprint"] == rsa_fp.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    s.ok(&["ssh-key", "rm", &id]);
    let (_, err) = s.fails(&["ssh-key", "rm", &id]);
    assert!(err.contains("no SSH key") && err.contains("hint:"), "{err}");
    let (_, err) = s.fails(&["ssh-key", "rm", &ed_fp]);
    assert!(err.contains("no SSH key with fingerprint"), "{err}");
    let left = s.json(&["ssh-key", "list"]);
    assert_eq!(left.as_array().unwrap().len(), 1);
    assert_eq!(left[0]["fingerprint"], ec_fp.as_str());
    // An admin removes it.
    s.ok(&[
        "--context",
        "admin",
        "ssh-key",
        "rm",
        &ec_fp,
        "--user",
        "kim",
    ]);
    assert_eq!(s.json(&["ssh-key", "list"]), serde_json::json!([]));

    // Without a server: a one-line error that says how to sign in.
    let no_ctx = tempfile::tempdir().unwrap();
    for args in [&["ssh-key", "list"][..], &["ssh-key", "add"]] {
        let o = s
            .cmd(args)
            .env("WARREN_CONFIG_DIR", no_ctx.path())
            .env("HOME", home.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert!(
            err.contains("`warren ssh-key` needs a server") && err.contains("warren login URL"),
            "{err}"
        );
    }
}

/// The status line of a WebSocket upgrade of `path` (with `token`, if any) on the server.
fn upgrade_status(s: &Server, path: &str, token: Option<&str>) -> String {
    let addr = s.url.trim_start_matches("http://");
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{auth}\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

#[test]
fn ssh_through_the_api_tunnel_with_warren_ssh_and_config_ssh() {
    let s = Server::start_with(&["--ssh-listen", "127.0.0.1:0"]);
    s.login_admin();
    let lee_token = s.login_member("lee");
    let kim_token = s.login_member("kim");
    let dir = s.world.project("box", r#"{"image": "busybox"}"#);
    assert_eq!(s.ok(&["up", dir.to_str().unwrap()]).trim(), "box");
    let home = tempfile::tempdir().unwrap();
    let key = home.path().join(".ssh/id_ed25519");
    keygen(&key, &["-t", "ed25519"], "kim@laptop");
    s.ok(&["ssh-key", "add", &format!("{}.pub", key.display())]);
    let key_s = key.to_str().unwrap();

    // warren ssh: output, and the exit code of the remote command.
    let o = s
        .cmd(&[
            "ssh",
            "-i",
            key_s,
            "box",
            "--",
            "sh",
            "-c",
            "echo hi; exit 4",
        ])
        .env("HOME", home.path())
        .output()
        .unwrap();
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(4), "hi\n"),
        "stderr: {}\nserver log:\n{}",
        stderr(&o),
        s.server_log()
    );

    // config-ssh: a managed block, written twice, one block; the user's lines stay.
    let cfg = home.path().join("ssh_config");
    let mine = "Host mine\n  User me\n";
    write(&cfg, mine);
    for _ in 0..2 {
        s.ok(&["config-ssh", "--ssh-config", cfg.to_str().unwrap()]);
    }
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.starts_with(mine), "{text}");
    assert_eq!(
        text.matches("# --- START WARREN (context kim) ---").count(),
        1,
        "{text}"
    );
    assert_eq!(text.matches("# --- END WARREN ---").count(), 1, "{text}");
    assert!(text.contains("Host warren.box\n  User box\n"), "{text}");
    let ssh = |host: &str, cmd: &str| {
        Command::new("ssh")
            .arg("-F")
            .arg(&cfg)
            .args([
                "-i",
                key_s,
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
            ])
            .args(["-o", "StrictHostKeyChecking=accept-new"])
            .args([host, cmd])
            // The ProxyCommand (this warren) finds the test's contexts.
            .env("WARREN_CONFIG_DIR", s.config.path())
            .env_remove("WARREN_URL")
            .env_remove("WARREN_TOKEN")
            .env_remove("WARREN_CONTEXT")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = ssh("warren.box", "true");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = ssh("warren.box", "echo via-config");
    assert_eq!(stdout(&o), "via-config\n", "{}", stderr(&o));
    // Files through the same entries: scp both ways (SFTP underneath) and sftp.
    let files = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .arg("-F")
            .arg(&cfg)
            .args([
                "-i",
                key_s,
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=accept-new",
            ])
            .args(args)
            .env("WARREN_CONFIG_DIR", s.config.path())
            .env_remove("WARREN_URL")
            .env_remove("WARREN_TOKEN")
            .env_remove("WARREN_CONTEXT")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let up = home.path().join("up.txt");
    let data = "through the tunnel\n".repeat(50_000);
    write(&up, &data);
    let o = files("scp", &[up.to_str().unwrap(), "warren.box:/tmp/up.txt"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let down = home.path().join("down.txt");
    let o = files("scp", &["warren.box:/tmp/up.txt", down.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&down).unwrap() == data);
    let batch = home.path().join("batch");
    write(&batch, "ls -l /tmp\n");
    let o = files("sftp", &["-b", batch.to_str().unwrap(), "warren.box"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("up.txt"), "{}", stdout(&o));
    s.ok(&[
        "config-ssh",
        "--remove",
        "--ssh-config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), mine);
    // The file's mode is kept; a new file is 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o640)).unwrap();
    s.ok(&["config-ssh", "--ssh-config", cfg.to_str().unwrap()]);
    assert_eq!(mode(&cfg), 0o640);
    let fresh = home.path().join("new/.ssh/config");
    s.ok(&["config-ssh", "--ssh-config", fresh.to_str().unwrap()]);
    assert_eq!(mode(&fresh), 0o600);

    // The tunnel: another user's workspace is not found, no token is unauthorized.
    let path = "/api/v1/workspaces/box/ssh";
    assert!(upgrade_status(&s, path, Some(&kim_token)).contains(" 101 "));
    assert!(upgrade_status(&s, path, Some(&lee_token)).contains(" 404 "));
    assert!(upgrade_status(&s, path, None).contains(" 401 "));
    let o = s.run(&["--context", "lee", "ssh", "--stdio", "warren.box"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not found") || stderr(&o).contains("no workspace"),
        "{}",
        stderr(&o)
    );

    // Without OpenSSH: a clear error.
    let o = s
        .cmd(&["ssh", "box"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("`ssh` is not installed"),
        "{}",
        stderr(&o)
    );

    // Without a context: one line and a hint.
    let no_ctx = tempfile::tempdir().unwrap();
    let o = s
        .cmd(&["ssh", "box"])
        .env("WARREN_CONFIG_DIR", no_ctx.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("`warren ssh` needs a server") && err.contains("warren login URL"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
}

#[test]
fn ssh_access_tokens_made_listed_and_revoked_from_the_cli() {
    let s = Server::start_with(&["--ssh-listen", "127.0.0.1:0"]);
    s.login_admin();
    s.login_member("kim");
    let dir = s.world.project("box", r#"{"image": "busybox"}"#);
    assert_eq!(s.ok(&["up", dir.to_str().unwrap()]).trim(), "box");
    let made: serde_json::Value = serde_json::from_str(&s.ok(&[
        "ssh-access",
        "create",
        "box",
        "--lifetime",
        "10m",
        "--json",
    ]))
    .unwrap();
    // The printed command is what a user (or an agent) runs: no key, no configuration.
    let command = made["ssh_command"].as_str().unwrap().to_string();
    let words: Vec<&str> = command.split(' ').collect();
    assert_eq!(words[..2], ["ssh", "-p"], "{command}");
    let run = |cmd: &str| {
        Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"])
            .args(["-o", "PubkeyAuthentication=no", "-o", "LogLevel=ERROR"])
            .args(&words[1..])
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = run("echo via-token");
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "via-token\n"),
        "{}",
        stderr(&o)
    );

    // Without --json: the token alone on stdout, the rest on stderr.
    let o = s.run(&["ssh-access", "create", "box"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).trim().starts_with("wsa_"), "{}", stdout(&o));
    assert_eq!(stdout(&o).lines().count(), 1, "{}", stdout(&o));
    assert!(
        stderr(&o).contains("Connect with: ssh -p"),
        "{}",
        stderr(&o)
    );
    let list = s.ok(&["ssh-access", "list", "box"]);
    assert_eq!(list.lines().count(), 3, "{list}");
    let id = made["info"]["id"].as_str().unwrap();
    assert!(list.contains(id), "{list}");

    s.ok(&["ssh-access", "revoke", "box", id]);
    let o = run("echo via-token");
    assert_eq!(o.status.code(), Some(255), "{}", stderr(&o));
    let (_, err) = s.fails(&["ssh-access", "create", "box", "--lifetime", "3d"]);
    assert!(
        err.contains("error: lifetime 3d") && err.contains("hint:"),
        "{err}"
    );
    let (_, err) = s.fails(&["ssh-access", "revoke", "box", "nope"]);
    assert!(err.contains("no SSH access token `nope`"), "{err}");
}

/// A request a receiver got: headers (names lowercased) and body.
type Received = (std::collections::HashMap<String, String>, Vec<u8>);

/// A one-request-at-a-time HTTP receiver on 127.0.0.1 that answers 200 and sends each request
/// to the returned channel.
fn webhook_receiver() -> (String, std::sync::mpsc::Receiver<Received>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut headers = std::collections::HashMap::new();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.trim_end().split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
            }
            let n: usize = headers["content-length"].parse().unwrap();
            let mut body = vec![0; n];
            r.read_exact(&mut body).unwrap();
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if tx.send((headers, body)).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

#[test]
fn webhooks_are_added_tested_listed_and_removed_with_the_cli() {
    use hmac::Mac;
    let s = Server::start();
    s.login_admin();
    s.login_member("kim");
    let (url, requests) = webhook_receiver();
    let add = |extra: &[&str]| {
        let mut args = vec!["--context", "admin", "webhook", "add"];
        args.extend_from_slice(extra);
        s.run(&args)
    };

    // The secret alone on stdout, once.
    let o = add(&[&url, "--name", "recv", "--events", "workspace.*,budget.*"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let secret = stdout(&o).trim().to_string();
    assert_eq!(secret.len(), 64, "{secret}");
    assert!(
        stderr(&o).contains("shown only this once"),
        "{}",
        stderr(&o)
    );
    let list = s.json(&["--context", "admin", "webhook", "list"]);
    let hook = list[0].clone();
    let id = hook["id"].as_str().unwrap().to_string();
    assert_eq!(hook["name"], "recv");
    assert_eq!(
        hook["events"],
        serde_json::json!(["workspace.*", "budget.*"])
    );
    assert!(!list.to_string().contains(&secret));
    let table = s.ok(&["--context", "admin", "webhook", "list"]);
    assert!(table.starts_with("ID") && table.contains("recv"), "{table}");

    // A test event reaches the receiver, signed with that secret.
    let o = s.run(&["--context", "admin", "webhook", "test", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (headers, body) = requests.recv_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(headers["warren-event"], "webhook.test");
    let sig = &headers["warren-signature"];
    let (t, v1) = sig
        .strip_prefix("t=")
        .and_then(|r| r.split_once(",v1="))
        .unwrap_or_else(|| panic!("{sig}"));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&body);
    assert!(mac.verify_slice(&hex::decode(v1).unwrap()).is_ok(), "{sig}");
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["data"]["webhook_id"], id.as_str());

    // Its delivery, as JSON and as a table.
    let mut delivered = false;
    for _ in 0..100 {
        let d = s.json(&["--context", "admin", "webhook", "deliveries", &id]);
        if d[0]["status"] == "delivered" {
            assert_eq!(
                d[0]["id"].as_str(),
                Some(headers["warren-delivery"].as_str())
            );
            delivered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(delivered);
    let table = s.ok(&["--context", "admin", "webhook", "deliveries", &id]);
    assert!(
        table.contains("webhook.test") && table.contains("delivered"),
        "{table}"
    );

    // Bad input: one line naming the field, with a hint.
    let o = add(&["ftp://example.com/x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("`url`") && stderr(&o).contains("hint:"),
        "{}",
        stderr(&o)
    );
    let o = add(&[&url, "--events", "workspace.stoped"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("`workspace.stoped`"), "{}", stderr(&o));
    // A member may not see them.
    let (_, err) = s.fails(&["--context", "kim", "webhook", "list"]);
    assert!(err.contains("role does not permit"), "{err}");

    // Disabled and enabled by hand (skipping its backlog).
    let (_, err) = s.fails(&["--context", "kim", "webhook", "disable", &id]);
    assert!(err.contains("role does not permit"), "{err}");
    let o = s.run(&["--context", "admin", "webhook", "disable", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("webhook enable"), "{}", stderr(&o));
    let list = s.json(&["--context", "admin", "webhook", "list"]);
    assert_eq!(list[0]["disabled"], true, "{list}");
    let table = s.ok(&["--context", "admin", "webhook", "list"]);
    assert!(table.contains("disabled"), "{table}");
    let w = s.json(&[
        "--context",
        "admin",
        "webhook",
        "enable",
        &id,
        "--skip-backlog",
    ]);
    assert_eq!(
        (&w["disabled"], &w["pending"]),
        (&serde_json::json!(false), &serde_json::json!(0)),
        "{w}"
    );

    s.ok(&["--context", "admin", "webhook", "rm", &id]);
    assert_eq!(
        s.json(&["--context", "admin", "webhook", "list"]),
        serde_json::json!([])
    );
    let (_, err) = s.fails(&["--context", "admin", "webhook", "rm", &id]);
    assert!(err.contains("no webhook"), "{err}");
}

#[test]
fn quotas_overrides_and_cost_from_the_cli() {
    let s = Server::start();
    s.login_admin();
    s.ok(&["--context", "admin", "team", "create", "infra"]);
    s.login_member("kim");
    s.ok(&["--context", "admin", "team", "add", "infra", "kim"]);
    s.ok(&[
        "--context",
        "admin",
        "quota",
        "set",
        "--user",
        "kim",
        "--max-workspaces",
        "1",
        "--budget",
        "100",
        "--period",
        "week",
    ]);
    let one = s.world.project("one", r#"{"image": "busybox"}"#);
    let two = s.world.project("two", r#"{"image": "busybox"}"#);
    assert_eq!(
        s.ok(&["up", one.to_str().unwrap(), "--team", "infra"])
            .trim(),
        "one"
    );
    // A second running workspace is over the quota: the error names the limit, the hint says
    // what to do.
    let (_, err) = s.fails(&["up", two.to_str().unwrap()]);
    assert!(
        err.contains("error: user `kim` has 1 of at most 1 workspaces running"),
        "{err}"
    );
    assert!(err.contains("hint: stop one"), "{err}");
    let shown = s.ok(&["quota", "show"]);
    assert!(shown.contains("user kim (limits: user)"), "{shown}");
    assert!(shown.contains("workspaces running  1 of 1"), "{shown}");
    assert!(shown.contains("this week"), "{shown}");
    assert!(shown.contains("team infra (limits: none)"), "{shown}");
    // Members set nothing.
    let (_, err) = s.fails(&["quota", "set", "--user", "kim", "--max-workspaces", "9"]);
    assert!(err.contains("your role does not permit this"), "{err}");
    let (_, err) = s.fails(&["quota", "show", "--user", "admin"]);
    assert!(err.contains("your role does not permit this"), "{err}");

    // An override lifts the limit until revoked.
    let id = s
        .ok(&[
            "--context",
            "admin",
            "quota",
            "override",
            "--user",
            "kim",
            "--unlimited",
            "--for",
            "1d",
            "--note",
            "demo",
        ])
        .trim()
        .to_string();
    let listed = s.ok(&["--context", "admin", "quota", "overrides", "--user", "kim"]);
    assert!(
        listed.contains(&id) && listed.contains("unlimited") && listed.contains("demo"),
        "{listed}"
    );
    assert_eq!(s.ok(&["up", two.to_str().unwrap()]).trim(), "two");
    s.ok(&[
        "--context",
        "admin",
        "quota",
        "revoke",
        "--user",
        "kim",
        &id,
    ]);
    let listed = s.ok(&["--context", "admin", "quota", "overrides", "--user", "kim"]);
    assert!(listed.contains("revoked"), "{listed}");

    // Cost: a table, JSON, CSV (these templates are free: zero cost, real hours).
    // Both are charged to kim's only team, named or not.
    let table = s.ok(&["cost", "--by", "team"]);
    assert!(
        table.lines().nth(1).unwrap_or("").starts_with("infra "),
        "{table}"
    );
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.contains("TOTAL"), "{table}");
    let report = s.json(&["cost"]);
    assert_eq!(report["group_by"], "workspace");
    let names: Vec<&str> = report["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one.kim", "two.kim"], "{report}");
    let csv = s.ok(&["cost", "--by", "user", "--csv"]);
    assert!(
        csv.starts_with("user,id,hours_running,hours_stopped,cost\nkim,"),
        "{csv}"
    );
    let (_, err) = s.fails(&["cost", "--by", "owner"]);
    assert!(err.contains("`group_by`"), "{err}");
    // The admin sees kim's usage too.
    let all = s.ok(&["--context", "admin", "cost", "--by", "user"]);
    assert!(all.contains("kim"), "{all}");
}

#[test]
fn lifecycle_policy_keepalive_and_events_from_the_cli() {
    let s = Server::start();
    s.login_admin();
    s.login_member("kim");
    let proj = s.world.project("proj", r#"{"image": "busybox"}"#);
    assert_eq!(s.ok(&["up", proj.to_str().unwrap()]).trim(), "proj");
    // An uploaded folder has no template: no policy until the workspace gets one.
    let shown = s.ok(&["policy", "show", "proj"]);
    assert!(shown.contains("Next: nothing scheduled"), "{shown}");
    let set = s.ok(&[
        "policy",
        "set",
        "proj",
        "--idle-timeout",
        "45m",
        "--autostart",
        "0 9 * * 1-5",
        "--timezone",
        "Europe/Berlin",
    ]);
    assert!(set.contains("Next: stop at"), "{set}");
    assert!(set.contains("(idle)"), "{set}");
    let row = set
        .lines()
        .find(|l| l.starts_with("idle_timeout"))
        .unwrap_or_default();
    assert!(row.contains("45m") && row.contains("workspace"), "{set}");
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(&["--json", "policy", "show", "proj"])).unwrap();
    assert_eq!(json["effective"]["autostart"]["timezone"], "Europe/Berlin");
    assert_eq!(json["next"]["reason"], "idle");
    // Bad values: one line naming the flag or the field, a hint, nothing changed.
    let (_, err) = s.fails(&["policy", "set", "proj", "--idle-timeout", "soon"]);
    assert!(err.contains("error: --idle-timeout `soon`"), "{err}");
    assert!(err.contains("hint: durations look like"), "{err}");
    let (_, err) = s.fails(&["policy", "set", "proj", "--autostart", "0 25 * * *"]);
    assert!(err.contains("autostart.schedule"), "{err}");
    let (_, err) = s.fails(&["policy", "set", "proj", "--unset", "colour"]);
    assert!(
        err.contains("--unset `colour` is not a policy field"),
        "{err}"
    );
    let again: serde_json::Value =
        serde_json::from_str(&s.ok(&["--json", "policy", "show", "proj"])).unwrap();
    assert_eq!(again["own"], json["own"]);
    // A keep-alive says when the workspace would stop next.
    let kept = s.run(&["keepalive", "proj"]);
    assert!(kept.status.success());
    let said = String::from_utf8_lossy(&kept.stderr);
    assert!(said.contains("Kept proj alive; next: stop at"), "{said}");
    assert!(s
        .ok(&["extend", "proj", "--by", "2h"])
        .trim()
        .ends_with('Z'));
    // The events say what happened, and why.
    let events = s.ok(&["events", "proj"]);
    for kind in [
        "workspace.created",
        "workspace.starting",
        "workspace.started",
    ] {
        assert!(events.contains(kind), "{events}");
    }
    s.ok(&["stop", "proj"]);
    let stops = s.ok(&["events", "proj", "--kind", "workspace.stop"]);
    assert_eq!(stops.lines().count(), 2, "{stops}");
    assert!(stops.contains("workspace `proj` stopped"), "{stops}");
    // Back to no policy.
    let reset = s.ok(&["policy", "reset", "proj"]);
    assert!(reset.contains("Next: nothing scheduled"), "{reset}");
}

#[test]
fn network_policy_from_the_cli() {
    let s = Server::start();
    s.login_admin();
    s.login_member("kim");
    let proj = s.world.project("netp", r#"{"image": "busybox"}"#);
    assert_eq!(s.ok(&["up", proj.to_str().unwrap()]).trim(), "netp");
    // An uploaded folder: the server's default policy, an address, no own policy.
    let shown = s.ok(&["net", "show", "netp"]);
    assert!(
        shown.contains("Base policy (the server's default)"),
        "{shown}"
    );
    assert!(shown.contains("egress: allow-all"), "{shown}");
    assert!(shown.contains("Own policy: none"), "{shown}");
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(&["--json", "net", "show", "netp"])).unwrap();
    let addr = json["address"].as_str().unwrap();
    assert!(addr.parse::<std::net::Ipv4Addr>().is_ok(), "{json}");
    // Rules added and replaced, live.
    let set = s.ok(&[
        "net",
        "set",
        "netp",
        "--egress",
        "allowlist",
        "--allow",
        "203.0.113.0/24:443",
        "--allow",
        "*.example.org",
        "--max-connections",
        "64",
    ]);
    assert!(
        set.contains("allow:  203.0.113.0/24:443, *.example.org"),
        "{set}"
    );
    assert!(set.contains("limits: 64 connections"), "{set}");
    let denied = s.ok(&["net", "deny", "netp", "api.example.org"]);
    assert!(denied.contains("deny:   api.example.org"), "{denied}");
    // Bad rules: one line naming the rule, a hint, nothing changed.
    for (rule, named) in [
        ("*.com", "*.com"),
        ("10.0.0.1/8", "10.0.0.1/8"),
        ("*", "`*`"),
    ] {
        let (_, err) = s.fails(&["net", "allow", "netp", rule]);
        assert!(err.contains(named), "{rule}: {err}");
        assert!(err.contains("hint:"), "{rule}: {err}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{err}"
        );
    }
    let (_, err) = s.fails(&["net", "set", "netp", "--egress", "open"]);
    assert!(err.contains("--egress `open`"), "{err}");
    let again: serde_json::Value =
        serde_json::from_str(&s.ok(&["--json", "net", "show", "netp"])).unwrap();
    assert_eq!(again["own"]["deny"], serde_json::json!(["api.example.org"]));
    let reset = s.ok(&["net", "reset", "netp"]);
    assert!(reset.contains("Own policy: none"), "{reset}");
}

#[test]
fn secrets_are_set_listed_used_and_removed_with_the_cli() {
    let s = Server::start();
    s.login_admin();
    s.login_member("sam");
    let set = |args: &[&str], stdin: &[u8]| {
        use std::io::Write;
        let mut c = s.cmd(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    // From stdin (one trailing newline dropped), and from a file (kept as is).
    let o = set(&["secret", "set", "api-key"], b"cli-value-81\n");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("Set secret api-key"), "{}", stderr(&o));
    let file = s.world.dir.join("token.txt");
    write(&file, "from-file\n");
    s.ok(&[
        "secret",
        "set",
        "filed",
        "--from-file",
        file.to_str().unwrap(),
    ]);
    let o = set(
        &[
            "secret",
            "set",
            "gh",
            "--git-host",
            "git.example.test",
            "--username",
            "bot",
        ],
        b"ghp_1\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Listed without values.
    let list = s.ok(&["secret", "list"]);
    for n in ["api-key", "filed", "gh", "git.example.test"] {
        assert!(list.contains(n), "{list}");
    }
    assert!(
        !list.contains("cli-value-81") && !list.contains("ghp_1"),
        "{list}"
    );
    let listed = s.json(&["secret", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    // Used by a workspace.
    let dir = s.world.project("sec", r#"{"image": "busybox"}"#);
    s.ok(&[
        "up",
        dir.to_str().unwrap(),
        "--secret",
        "api-key",
        "--secret",
        "filed",
    ]);
    let (code, out, err) = s.sh(
        "sec",
        "cat /run/secrets/api-key; echo; cat /run/secrets/filed",
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "cli-value-81\nfrom-file\n"),
        "{err}"
    );
    // Bad input: an empty value, a team one is not in, an unknown secret at create.
    let o = set(&["secret", "set", "empty"], b"");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot be empty"), "{}", stderr(&o));
    let o = set(&["secret", "set", "x", "--team", "nope"], b"v");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("team"), "{}", stderr(&o));
    let dir2 = s.world.project("sec2", r#"{"image": "busybox"}"#);
    let (_, err) = s.fails(&["up", dir2.to_str().unwrap(), "--secret", "missing"]);
    assert!(
        err.contains("no secret named `missing`") && err.contains("hint:"),
        "{err}"
    );
    // Removed.
    s.ok(&["secret", "rm", "api-key"]);
    assert!(!s.ok(&["secret", "list"]).contains("api-key"));
    let (_, err) = s.fails(&["secret", "rm", "api-key"]);
    assert!(err.contains("api-key"), "{err}");
}

/// A busybox root with the host's git (and the libraries it needs), imported as `gitbox`.
fn import_gitbox(world: &World) {
    let root = world.dir.join("rootfs-gitbox");
    crate::util::busybox_rootfs(&root);
    let bins = ["/usr/bin/git", "/usr/lib/git-core/git-remote-http"];
    let mut files: Vec<PathBuf> = bins.iter().map(PathBuf::from).collect();
    for b in bins {
        let ldd = Command::new("ldd").arg(b).output().unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim().split(' ').next().unwrap_or(""),
                None => line.trim().split(' ').next().unwrap_or(""),
            };
            if path.starts_with('/') {
                files.push(PathBuf::from(path));
            }
        }
    }
    for f in files {
        let dest = root.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&f, &dest).unwrap();
    }
    let o = world.warren(&["image", "import", root.to_str().unwrap(), "gitbox"]);
    assert!(o.status.success(), "import: {}", stderr(&o));
}

#[test]
fn task_run_follows_the_log_and_exits_with_the_tasks_code() {
    let s = Server::start();
    import_gitbox(&s.world);
    s.login_admin();
    let tpl = s.world.dir.join("agent-tpl");
    write(
        &tpl.join(".devcontainer/devcontainer.json"),
        r#"{"image": "gitbox", "overrideCommand": true, "remoteUser": "dev"}"#,
    );
    write(&tpl.join("warren-template.json"), r#"{"name": "agent"}"#);
    s.ok(&["template", "push", tpl.to_str().unwrap()]);
    let gitdir = tempfile::tempdir().unwrap();
    let git = crate::gitserve::GitServer::start(gitdir.path(), "bot", "pw-1").unwrap();
    git.create_repo(
        "proj",
        &[
            ("greeting.txt", "hello\n", false),
            ("test.sh", "#!/bin/sh\ngrep -q fixed greeting.txt && echo 'test passed' || { echo 'test failed'; exit 1; }\n", true),
        ],
    )
    .unwrap();
    // The password is a git secret, never part of the URL (which is refused with one).
    let pwfile = s.world.dir.join("git-pw");
    std::fs::write(&pwfile, "pw-1").unwrap();
    s.ok(&[
        "secret",
        "set",
        "gitpw",
        "--git-host",
        &git.host(),
        "--username",
        "bot",
        "--from-file",
        pwfile.to_str().unwrap(),
    ]);
    let o = s.run(&[
        "task",
        "run",
        "-t",
        "agent",
        "--repo",
        &git.url_with_auth("proj"),
        "--",
        "true",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("secret"), "{}", stderr(&o));
    let repo = git.url("proj");
    // A failing command: its output followed live, and its exit code.
    let o = s.run(&[
        "task",
        "run",
        "-t",
        "agent",
        "--repo",
        &repo,
        "--secret",
        "gitpw",
        "--label",
        "k=v",
        "--",
        "sh",
        "-c",
        "echo from-the-agent; ./test.sh; exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}\n{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("from-the-agent") && out.contains("test failed"),
        "{out}"
    );
    assert!(
        stderr(&o).contains("failed (exit code 7)"),
        "{}",
        stderr(&o)
    );
    // A succeeding one that pushes: exit 0, the branch on the remote.
    let o = s.run(&[
        "task", "run", "-t", "agent", "--repo", &repo, "--secret", "gitpw", "--branch", "agent/fix", "--", "sh", "-c",
        "echo fixed > greeting.txt && ./test.sh && git commit -qam fix && git push -q origin HEAD:agent/fix",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("test passed"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("Pushed branch agent/fix."),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        git.git("proj", &["show", "agent/fix:greeting.txt"])
            .unwrap(),
        "fixed\n"
    );
    // list, show, logs.
    let list = s.json(&["task", "list", "--label", "k=v"]);
    let tasks = list["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1, "{list}");
    let id = tasks[0]["id"].as_str().unwrap().to_string();
    assert_eq!(tasks[0]["exit_code"], 7);
    let shown = s.ok(&["task", "show", &id]);
    assert!(
        shown.contains("state:     failed") && shown.contains("exit code: 7"),
        "{shown}"
    );
    assert!(s.ok(&["task", "logs", &id]).contains("from-the-agent"));
    // Detached: the id on stdout; then canceled.
    let id = s
        .ok(&[
            "task", "run", "-t", "agent", "--repo", &repo, "--detach", "--", "sleep", "1000",
        ])
        .trim()
        .to_string();
    assert!(id.starts_with("t_"), "{id}");
    s.ok(&["task", "cancel", &id]);
    let o = s.run(&["task", "logs", "-f", &id]);
    assert_eq!(
        o.status.code(),
        Some(130),
        "a canceled task: {}",
        stderr(&o)
    );
    // Bad input: one line naming the field, with a hint.
    let (_, err) = s.fails(&[
        "task",
        "run",
        "-t",
        "agent",
        "--repo",
        &repo,
        "--time-limit",
        "soon",
        "--",
        "true",
    ]);
    assert!(err.contains("time_limit"), "{err}");
    let (_, err) = s.fails(&["task", "run", "-t", "agent", "--repo", &repo]);
    assert!(err.contains("no command") && err.contains("hint:"), "{err}");
}

/// `warren bench --toolbox --quick` runs end to end against a server it starts: every figure is
/// there and the workspace is gone afterwards (no timing is asserted).
#[test]
fn the_toolbox_benchmark_runs() {
    let o = std::process::Command::new(crate::util::warren_exe())
        .args(["bench", "--toolbox", "--quick", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in ["toolbox_run_ms", "api_exec_ndjson_ms", "cli_exec_ms"] {
        for p in ["p50", "p90", "p99"] {
            assert!(v[k][p].as_f64().is_some_and(|x| x > 0.0), "{k}.{p}: {v}");
        }
    }
    assert_eq!(v["toolbox_run_ms"]["count"], 100, "{v}");
    assert_eq!(v["cli_exec_ms"]["count"], 10, "{v}");
    assert!(v["ratio_cli_to_toolbox"].as_f64().is_some(), "{v}");
    assert!(err.contains("deleting the workspace"), "{err}");
}
