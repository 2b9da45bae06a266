//! Test harness: a real server (real store, real engine) on an ephemeral loopback port with a
//! private state directory, and an HTTP client.
#![allow(dead_code)]

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use warren_server::config::{ConfigLayer, ServerConfig};

/// A running server.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The first user's (owner) token.
    pub admin: String,
    /// Private state directory.
    pub dir: tempfile::TempDir,
    /// HTTP client.
    pub http: reqwest::Client,
    /// The SSH gateway's address once it listens.
    pub ssh_addr: std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
    /// The server's shared state (to run a policy pass, or read the store, directly).
    pub state: warren_server::app::AppState,
    /// The fake clock the server's store reads, when started with one.
    pub clock: Option<std::sync::Arc<warren_store::clock::FakeClock>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The `warren` binary, re-executed as each workspace's supervisor.
pub fn warren_exe() -> PathBuf {
    // target/<profile>/deps/<test> -> target/<profile>/warren
    let mut p = std::env::current_exe().unwrap();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("warren")
}

impl TestServer {
    /// Starts a server with default settings.
    pub async fn start() -> TestServer {
        Self::start_with(ConfigLayer::default()).await
    }

    /// Starts a server with `layer` over the test defaults.
    pub async fn start_with(layer: ConfigLayer) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("warren-srv-")
            .tempdir_in(std::env::var("WARREN_TEST_TMP").unwrap_or_else(|_| "/tmp".into()))
            .unwrap();
        Self::start_in(dir, layer, None, None).await
    }

    /// Starts a server whose store reads a fake clock (starting at the real time now), so tests
    /// drive time-based policies forward without sleeping. The background policy loop runs
    /// too (every second, at the fake time); tests call [`TestServer::pass`] for a pass now.
    pub async fn start_fake_clock() -> TestServer {
        Self::start_fake_clock_with(ConfigLayer::default()).await
    }

    /// Like [`TestServer::start_fake_clock`], with `layer` over the test defaults.
    pub async fn start_fake_clock_with(layer: ConfigLayer) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix("warren-srv-")
            .tempdir_in(std::env::var("WARREN_TEST_TMP").unwrap_or_else(|_| "/tmp".into()))
            .unwrap();
        let clock = warren_store::clock::FakeClock::starting_now();
        Self::start_in(dir, layer, None, Some(clock)).await
    }

    /// Moves the fake clock forward.
    pub fn advance(&self, d: std::time::Duration) {
        self.clock
            .as_ref()
            .expect("started with a fake clock")
            .advance(d);
    }

    /// One lifecycle-policy pass now.
    pub async fn pass(&self) -> warren_server::governor::PassReport {
        warren_server::governor::pass(&self.state).await
    }

    /// Stops the server gracefully and starts a new one on the same state directory (the same
    /// admin token keeps working, and the same fake clock, if any).
    pub async fn restart(self) -> TestServer {
        self.restart_with(ConfigLayer::default()).await
    }

    /// [`TestServer::restart`] with `layer` over the test defaults.
    pub async fn restart_with(mut self, layer: ConfigLayer) -> TestServer {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        let admin = self.admin.clone();
        let clock = self.clock.clone();
        // Keep the directory: move it out of `self` without running Drop's cleanup.
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        std::mem::forget(self);
        Self::start_in(dir, layer, Some(admin), clock).await
    }

    async fn start_in(
        dir: tempfile::TempDir,
        layer: ConfigLayer,
        admin: Option<String>,
        clock: Option<std::sync::Arc<warren_store::clock::FakeClock>>,
    ) -> TestServer {
        // Bound first, so that the configuration (and the public URL made from it) has the
        // real port.
        let listener = tokio::net::TcpListener::bind(
            layer.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into()),
        )
        .await
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let base = ConfigLayer {
            listen: Some(addr.to_string()),
            ssh_listen: Some("127.0.0.1:0".into()),
            state_dir: Some(dir.path().join("state")),
            ..Default::default()
        };
        let cfg = ServerConfig::resolve(layer.over(base)).unwrap();
        let state = warren_server::serve::open(cfg, warren_exe()).await.unwrap();
        if let Some(c) = &clock {
            state.store.set_clock(c.clone());
        }
        let admin = match admin {
            Some(a) => a,
            None => warren_server::serve::init_admin(&state, "admin")
                .await
                .unwrap()
                .unwrap(),
        };
        let ssh_addr = state.ssh_addr.clone();
        let shared = state.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            warren_server::serve::serve(state, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            url: format!("http://{addr}"),
            admin,
            dir,
            http: reqwest::Client::new(),
            ssh_addr,
            state: shared,
            clock,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// The SSH gateway's port (waits for it to listen).
    pub async fn ssh_port(&self) -> u16 {
        for _ in 0..200 {
            if let Some(a) = *self.ssh_addr.lock().unwrap() {
                return a.port();
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the SSH gateway did not start");
    }

    /// Shuts the server down gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Sends a request; returns status and JSON body (Null when empty or not JSON).
    pub async fn call(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GET as `token`.
    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        self.call(Some(token), Method::GET, path, None).await
    }

    /// POST JSON as `token`.
    pub async fn post(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Some(token), Method::POST, path, Some(body)).await
    }

    /// Creates a user with `role` and returns a token for them with `scopes` (None: all the
    /// role's scopes), made by the admin.
    pub async fn user_token(&self, username: &str, role: &str, scopes: Option<&[&str]>) -> String {
        let (s, _) = self
            .post(
                &self.admin,
                "/api/v1/users",
                serde_json::json!({"username": username, "role": role}),
            )
            .await;
        assert!(
            s == StatusCode::CREATED || s == StatusCode::CONFLICT,
            "create user: {s}"
        );
        self.token_for(username, scopes).await
    }

    /// A new token for an existing user, made by the admin.
    /// Registers the SSH key whose private half is the file `key` (public half `key.pub`) for the
    /// token's user, with the proof of possession `warren ssh-key add` makes
    /// (`ssh-keygen -Y sign` over the key's proof message).
    pub async fn register_ssh_key(&self, token: &str, key: &std::path::Path) -> serde_json::Value {
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        let (_, me) = self.get(token, "/api/v1/me").await;
        let user_id = me["user"]["id"].as_str().unwrap().to_string();
        let signature = sign_proof(key, &user_id, &public);
        let (st, v) = self
            .post(
                token,
                "/api/v1/me/ssh-keys",
                serde_json::json!({ "public_key": public, "signature": signature }),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
        assert!(v["verified_at"].is_string(), "{v}");
        v
    }

    /// Pushes a version of template `name` with `devcontainer` (a devcontainer.json value), as
    /// the first owner.
    pub async fn push_template(&self, name: &str, devcontainer: serde_json::Value) {
        let (st, v) = self
            .post(
                &self.admin,
                &format!("/api/v1/templates/{name}/versions"),
                serde_json::json!({"devcontainer": devcontainer.to_string()}),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{v}");
    }

    /// Creates workspace `name` from `template` with `token` and waits until it runs.
    pub async fn create_workspace(&self, token: &str, name: &str, template: &str) {
        let (st, v) = self
            .post(
                token,
                "/api/v1/workspaces",
                serde_json::json!({"name": name, "template": template}),
            )
            .await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        let job = self.wait_job(token, v["job"]["id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }

    pub async fn token_for(&self, username: &str, scopes: Option<&[&str]>) -> String {
        let mut body = serde_json::json!({"user": username, "name": "test"});
        if let Some(s) = scopes {
            body["scopes"] = serde_json::json!(s);
        }
        let (s, v) = self.post(&self.admin, "/api/v1/tokens", body).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }
}

/// Writes a busybox root filesystem (static busybox, root and a `dev` user).
pub fn busybox_rootfs(dir: &std::path::Path) {
    use std::os::unix::fs::symlink;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed");
    let out = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", bin.join(applet));
        }
    }
    for d in ["etc", "root", "home/dev", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndev:x:1000:1000:dev:/home/dev:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\ndev:x:1000:\n").unwrap();
}

impl TestServer {
    /// The server's state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Imports a busybox image named `busybox` into the server's image store.
    pub fn import_busybox(&self) {
        let rootfs = self.dir.path().join("rootfs");
        busybox_rootfs(&rootfs);
        let o = std::process::Command::new(warren_exe())
            .args(["image", "import"])
            .arg(&rootfs)
            .arg("busybox")
            .env("WARREN_STATE_DIR", self.state())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "import: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// Waits for a job to finish; returns it.
    pub async fn wait_job(&self, token: &str, id: &str) -> Value {
        for _ in 0..600 {
            let (_, j) = self.get(token, &format!("/api/v1/jobs/{id}")).await;
            if !matches!(j["status"].as_str(), Some("pending") | Some("running")) {
                return j;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("job {id} did not finish");
    }

    /// Supervisor processes of this server's workspaces.
    pub fn supervisors(&self) -> Vec<i32> {
        let needle = self.state().display().to_string();
        let mut out = vec![];
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("__supervise") && cmd.contains(&needle) {
                out.push(pid);
            }
        }
        out
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Leave nothing running behind a test, whatever happened: the supervisors and every
        // process under them (a workspace's init outlives a killed supervisor, and holds its
        // network namespace and veth).
        let sups = self.supervisors();
        let mut doomed = descendants(&sups);
        doomed.extend(sups);
        for pid in doomed {
            // std cannot signal an arbitrary pid; the `kill` command can.
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
        // The server's network on the host: its resolver, bridge, tables and registry entry.
        warren_runtime::network::teardown(&self.state().join("workspaces"));
    }
}

/// The armored SSH signature of the key's proof message for `user_id`, made by `ssh-keygen -Y
/// sign` with the private key file `key`.
pub fn sign_proof(key: &std::path::Path, user_id: &str, public: &str) -> String {
    let fp = warren_api::ssh_key::parse(public).unwrap().fingerprint();
    let dir = tempfile::tempdir().unwrap();
    let msg = dir.path().join("proof");
    std::fs::write(&msg, warren_api::ssh_key::proof_message(user_id, &fp)).unwrap();
    let o = std::process::Command::new("ssh-keygen")
        .args([
            "-q",
            "-Y",
            "sign",
            "-n",
            warren_api::ssh_key::PROOF_NAMESPACE,
            "-f",
        ])
        .arg(key)
        .arg(&msg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(dir.path().join("proof.sig")).unwrap()
}

/// A new ed25519 key without a passphrase at `dir/name` (public half `dir/name.pub`).
pub fn keygen(dir: &std::path::Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let o = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    p
}

/// Every process below `roots` (children, their children...).
pub fn descendants(roots: &[i32]) -> Vec<i32> {
    let mut parents = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok())
        {
            parents.push((pid, ppid));
        }
    }
    let mut out = Vec::new();
    let mut frontier = roots.to_vec();
    while let Some(p) = frontier.pop() {
        for (child, _) in parents.iter().filter(|(_, pp)| *pp == p) {
            out.push(*child);
            frontier.push(*child);
        }
    }
    out
}
