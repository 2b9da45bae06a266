//! `warren bench --ssh`: Warren's SSH gateway against OpenSSH's sshd (Debian `openssh-server`)
//! running inside the same workspace, in the same run, with the same OpenSSH client and cipher.
//!
//! Set up as a user would: a Debian image with openssh-server and socat (bootstrapped with
//! mmdebstrap once and kept in the state directory's image store), a real `warren server` with its
//! SSH gateway on 127.0.0.1, a user's key registered through the API, a template and a workspace.
//! Through the gateway the bench then starts sshd (as root, on 127.0.0.1:2222 of the workspace's
//! own network namespace, same key) and a socat that serves a sparse file to each TCP connection.
//!
//! Each client command reaches its server over a loopback: Warren's over the host's, OpenSSH's
//! over the workspace's (the client runs under `nsenter --net` into that namespace). Both run
//! under nsenter so that both pay for it alike. Measured, each server in turn, alternating which
//! goes first: `ssh … true` (a fresh connection each time), scp of a sparse file both ways with
//! the legacy protocol (`scp -O`) and with SFTP (`scp -s`, when the server has the subsystem), and
//! the socat stream read through `ssh -L`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use warren_image::{BootstrapOptions, ImageStore};

use super::{percentile, progress, r3, Dirs};

/// The cached image with sshd.
const IMAGE: &str = "warren-bench-sshd:latest";
/// Packages on top of minbase. openssh-server brings openssh-client (scp) and
/// openssh-sftp-server.
const PACKAGES: &[&str] = &["openssh-server", "socat"];
/// Cipher both servers are asked for (the fastest both offer by default; russh does not offer
/// aes128-gcm unless configured to).
const CIPHER: &str = "aes256-gcm@openssh.com";
/// Key exchange and host key type both servers are asked for, so that both do the same work
/// (OpenSSH 9.x would otherwise pick the costlier sntrup761x25519 hybrid and an ECDSA host key,
/// which russh does not offer).
const KEX: &str = "curve25519-sha256";
const HOST_KEY: &str = "ssh-ed25519";
/// sshd's port inside the workspace.
const SSHD_PORT: u16 = 2222;
/// socat's port inside the workspace.
const STREAM_PORT: u16 = 9000;
/// The sparse file served for downloads, inside the workspace.
const REMOTE_SRC: &str = "/tmp/warren-bench-src";
/// Workspace name.
const WS: &str = "sshbench";

/// Targets of issue 5.
const TARGET_SETUP_RATIO: f64 = 1.5;
const TARGET_THROUGHPUT_RATIO: f64 = 0.8;

/// How the bench is asked to run.
pub(crate) struct Plan {
    pub setups: usize,
    pub transfers: usize,
    pub mib: u64,
    pub json: bool,
    /// The OCI runtime the server runs workspaces with.
    pub oci: String,
}

/// One SSH server as the client reaches it.
struct Server {
    name: &'static str,
    /// The network namespace the client runs in.
    netns: String,
    port: u16,
    user: String,
    key: PathBuf,
}

impl Server {
    /// `nsenter --net=NS PROGRAM` with the common client options.
    fn client(&self, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns)).arg(program);
        c.args([
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
            "-o",
            "ControlMaster=no",
            "-o",
            "ControlPath=none",
            "-o",
            "Compression=no",
            "-c",
            CIPHER,
            "-o",
        ])
        .arg(format!("KexAlgorithms={KEX}"))
        .arg("-o")
        .arg(format!("HostKeyAlgorithms={HOST_KEY}"))
        .arg("-i")
        .arg(&self.key);
        c.arg(if program == "scp" { "-P" } else { "-p" })
            .arg(self.port.to_string());
        c
    }

    fn dest(&self) -> String {
        format!("{}@127.0.0.1", self.user)
    }

    /// `ssh SERVER true`: wall time.
    fn setup_once(&self) -> Result<Duration> {
        let mut c = self.client("ssh");
        c.arg(self.dest()).arg("true");
        timed(&mut c)
    }

    /// scp of `mib` MiB, one way; `sftp` picks the protocol.
    fn scp_once(&self, upload: bool, sftp: bool, local: &Path) -> Result<Duration> {
        let mut c = self.client("scp");
        c.arg(if sftp { "-s" } else { "-O" });
        if upload {
            c.arg(local).arg(format!("{}:/dev/null", self.dest()));
        } else {
            c.arg(format!("{}:{REMOTE_SRC}", self.dest()))
                .arg("/dev/null");
        }
        timed(&mut c)
    }

    /// The socat stream read through `ssh -L` on `lport` in the client's namespace.
    fn forward_once(&self, lport: u16, bytes: u64) -> Result<Duration> {
        let mut c = self.client("ssh");
        c.args([
            "-N",
            "-o",
            "ExitOnForwardFailure=yes",
            "-L",
            &format!("127.0.0.1:{lport}:127.0.0.1:{STREAM_PORT}"),
        ])
        .arg(self.dest())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut fwd = Reaped(c.spawn().context("run ssh -L")?);
        let t = Instant::now();
        while !listening(&self.netns, lport) {
            if let Some(st) = fwd.0.try_wait()? {
                bail!("{}: ssh -L exited with {st}", self.name);
            }
            if t.elapsed() > Duration::from_secs(20) {
                bail!("{}: ssh -L did not listen on {lport}", self.name);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // The same reader for both: bash's /dev/tcp into `wc -c`, in the client's namespace.
        let t = Instant::now();
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.netns))
            .args([
                "bash",
                "-c",
                &format!("exec wc -c < /dev/tcp/127.0.0.1/{lport}"),
            ])
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("run the reader")?;
        let d = t.elapsed();
        let got = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || got != bytes.to_string() {
            bail!(
                "{}: read {got:?} bytes of {bytes} through ssh -L: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(d)
    }
}

/// A child killed and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether a TCP socket listens on `port` in namespace `netns` (`/proc/PID/ns/net`): read from
/// that process's `/proc/PID/net/tcp`, which shows its own namespace's sockets.
fn listening(netns: &str, port: u16) -> bool {
    let tcp = netns.replace("/ns/net", "/net/tcp");
    std::fs::read_to_string(tcp).is_ok_and(|s| tcp_listens(&s, port))
}

/// Whether a `/proc/net/tcp` table has a socket in state LISTEN (`0A`) on local `port`.
fn tcp_listens(table: &str, port: u16) -> bool {
    let want = format!(":{port:04X}");
    table.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
    })
}

/// Runs `cmd` with null stdin/stdout; its wall time, or why it failed.
fn timed(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("run {:?}", cmd.get_program()))?;
    let d = t.elapsed();
    if !out.status.success() {
        // nsenter's first argument is the namespace, the program comes next.
        let program = cmd
            .get_args()
            .nth(1)
            .unwrap_or_else(|| cmd.get_program())
            .to_string_lossy()
            .into_owned();
        bail!(
            "{program} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; ")
        );
    }
    Ok(d)
}

/// The image with sshd: from the cache in `cache` (the state dir's image store), else
/// bootstrapped into it; then imported into the server's fresh store `server_images`.
fn image(cache: &Path, server_images: &Path) -> Result<()> {
    let store = ImageStore::open(cache)?;
    let info = match store.resolve(IMAGE) {
        Ok(i) => i,
        Err(_) => {
            progress(&format!(
                "bootstrapping {IMAGE} (Debian bookworm minbase + {}) with mmdebstrap, once per state dir",
                PACKAGES.join(", ")
            ));
            let opts = BootstrapOptions {
                include: PACKAGES.iter().map(|p| (*p).to_string()).collect(),
                ..Default::default()
            };
            let mut last = Instant::now();
            store.bootstrap_debian(IMAGE, &opts, &mut |line| {
                if line.starts_with("I: ") || last.elapsed() > Duration::from_secs(10) {
                    last = Instant::now();
                    progress(&format!("  {line}"));
                }
            })?;
            store.resolve(IMAGE)?
        }
    };
    let [layer] = info.layer_dirs.as_slice() else {
        bail!("{IMAGE} has {} layers, not one", info.layer_dirs.len());
    };
    let server = ImageStore::open(server_images)?;
    server.import_rootfs(layer, IMAGE, Some(info.config.clone()))?;
    Ok(())
}

/// The REST API as the bench's user.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Waits for the job a 202 answer names; fails unless it succeeded.
    async fn wait_job(&self, accepted: &Value) -> Result<()> {
        let id = accepted["job"]["id"]
            .as_str()
            .context("no job in the answer")?;
        for _ in 0..3000 {
            let j = self
                .call(reqwest::Method::GET, &format!("/api/v1/jobs/{id}"), None)
                .await?;
            match j["status"].as_str() {
                Some("pending") | Some("running") => {}
                Some("succeeded") => return Ok(()),
                _ => bail!("job {id}: {j}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("job {id} did not finish")
    }
}

/// The network namespace of the only workspace of the server with state `state`: the first
/// descendant of its supervisor in another namespace than the bench's.
pub(super) fn workspace_netns(state: &Path) -> Result<String> {
    let sup = super::supervisor_pids(state);
    let [sup] = sup.as_slice() else {
        bail!("expected one workspace supervisor, found {}", sup.len());
    };
    let ours = std::fs::read_link("/proc/self/ns/net")?;
    let mut parents = Vec::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut frontier = vec![*sup];
    while let Some(p) = frontier.pop() {
        for (child, _) in parents.iter().filter(|(_, pp)| *pp == p) {
            let ns = format!("/proc/{child}/ns/net");
            if std::fs::read_link(&ns).is_ok_and(|l| l != ours) {
                return Ok(ns);
            }
            frontier.push(*child);
        }
    }
    bail!("no process of the workspace in a network namespace of its own")
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (
        percentile(&s, 50.0),
        s.first().copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN),
    )
}

/// One measured row: samples per server (ms), or why a server could not be measured.
struct Row {
    key: &'static str,
    label: &'static str,
    /// Throughput rows report MiB/s from the median time.
    throughput: bool,
    warren: Result<Vec<f64>, String>,
    openssh: Result<Vec<f64>, String>,
}

impl Row {
    fn median(&self, which: &Result<Vec<f64>, String>) -> Option<f64> {
        which.as_ref().ok().map(|v| stats(v).0)
    }

    /// Warren relative to OpenSSH: time ratio for latency, throughput ratio otherwise.
    fn ratio(&self) -> Option<f64> {
        let (w, o) = (self.median(&self.warren)?, self.median(&self.openssh)?);
        Some(if self.throughput { o / w } else { w / o })
    }

    fn target(&self) -> (String, Option<bool>) {
        let r = self.ratio();
        if self.throughput {
            (
                format!("≥ {TARGET_THROUGHPUT_RATIO}×"),
                r.map(|r| r >= TARGET_THROUGHPUT_RATIO),
            )
        } else {
            (
                format!("≤ {TARGET_SETUP_RATIO}×"),
                r.map(|r| r <= TARGET_SETUP_RATIO),
            )
        }
    }
}

/// Measures `f` for each server `n` times, alternating which goes first; a server whose first
/// attempt fails is reported as unavailable with the reason.
fn measure(
    servers: &[Server; 2],
    n: usize,
    what: &str,
    mut f: impl FnMut(&Server) -> Result<Duration>,
) -> [Result<Vec<f64>, String>; 2] {
    let mut out: [Result<Vec<f64>, String>; 2] = [Ok(vec![]), Ok(vec![])];
    for i in 0..n {
        for k in 0..2 {
            let s = (i + k) % 2;
            if out[s].is_err() {
                continue;
            }
            match f(&servers[s]) {
                Ok(d) => {
                    if let Ok(v) = &mut out[s] {
                        v.push(d.as_secs_f64() * 1000.0);
                    }
                }
                Err(e) => {
                    progress(&format!("{what}: {} unavailable: {e:#}", servers[s].name));
                    out[s] = Err(format!("{e:#}"));
                }
            }
        }
    }
    out
}

/// Runs the benchmark in `d.state`: the image cache is `STATE/images`, the server's own state a
/// fresh `STATE/bench/ssh-server`.
pub(super) async fn run(d: &Dirs, plan: &Plan) -> Result<u8> {
    for tool in ["ssh", "scp", "ssh-keygen", "nsenter", "bash", "wc"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            bail!("`{tool}` is not installed (the OpenSSH client, util-linux's nsenter and bash are needed)");
        }
    }
    let root = d.state.join("bench/ssh");
    let srv_state = root.join("server");
    std::fs::create_dir_all(&srv_state)?;
    let cache = d.state.join("images");
    let (c, s) = (cache.clone(), srv_state.join("images"));
    tokio::task::spawn_blocking(move || image(&c, &s)).await??;

    let exe = std::env::current_exe()?;
    let init = Command::new(&exe)
        .args(["server", "init"])
        .env("WARREN_STATE_DIR", &srv_state)
        .stderr(Stdio::inherit())
        .output()?;
    if !init.status.success() {
        bail!("warren server init failed");
    }
    let token = String::from_utf8(init.stdout)?.trim().to_string();
    let free_port = || -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let (http_port, ssh_port) = (free_port()?, free_port()?);
    let log = std::fs::File::create(root.join("server.log"))?;
    let server = Reaped(
        Command::new(&exe)
            .args(["server", "--listen", &format!("127.0.0.1:{http_port}")])
            .args(["--ssh-listen", &format!("127.0.0.1:{ssh_port}")])
            .args(["--runtime", &plan.oci])
            .env("WARREN_STATE_DIR", &srv_state)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://127.0.0.1:{http_port}"),
        token,
    };
    let mut ready = false;
    for _ in 0..200 {
        if api
            .call(reqwest::Method::GET, "/api/v1/me", None)
            .await
            .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        // The state dir goes at the end: show the log's end now.
        let log = std::fs::read_to_string(root.join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        bail!(
            "the server did not answer: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join("; ")
        );
    }
    let res = bench(&api, &root, &srv_state, ssh_port, plan).await;
    progress("deleting the workspace");
    if let Ok(v) = api
        .call(
            reqwest::Method::DELETE,
            &format!("/api/v1/workspaces/{WS}"),
            None,
        )
        .await
    {
        if let Err(e) = api.wait_job(&v).await {
            progress(&format!("delete: {e:#}"));
        }
    }
    drop(server);
    let report = res?;
    if plan.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&report, plan))?);
    } else {
        print!("{}", to_text(&report, plan));
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(0)
}

async fn bench(
    api: &Api,
    root: &Path,
    srv_state: &Path,
    ssh_port: u16,
    plan: &Plan,
) -> Result<Report> {
    let key = root.join("id_ed25519");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(key.with_extension("pub"));
    timed(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "warren-bench", "-f"])
            .arg(&key),
    )?;
    let public = std::fs::read_to_string(key.with_extension("pub"))?;
    api.call(
        reqwest::Method::POST,
        "/api/v1/me/ssh-keys",
        Some(json!({ "public_key": public })),
    )
    .await?;
    let dc = json!({"image": IMAGE, "overrideCommand": true}).to_string();
    api.call(
        reqwest::Method::POST,
        "/api/v1/templates/sshbench/versions",
        Some(json!({ "devcontainer": dc })),
    )
    .await?;
    progress("creating the workspace");
    let v = api
        .call(
            reqwest::Method::POST,
            "/api/v1/workspaces",
            Some(json!({"name": WS, "template": "sshbench"})),
        )
        .await?;
    api.wait_job(&v).await?;

    let bytes = plan.mib << 20;
    let warren = Server {
        name: "warren",
        netns: format!("/proc/{}/ns/net", std::process::id()),
        port: ssh_port,
        user: WS.into(),
        key: key.clone(),
    };
    // sshd and the stream server, started through Warren's gateway as a user would.
    progress("starting sshd and socat inside the workspace (through the gateway)");
    let script = format!(
        "set -e\n\
         mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh\n\
         cat > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys\n\
         ssh-keygen -A >/dev/null\n\
         /usr/sbin/sshd -p {SSHD_PORT} -o ListenAddress=127.0.0.1 -E /tmp/sshd.log \
         || {{ cat /tmp/sshd.log >&2; exit 1; }}\n\
         rm -f {REMOTE_SRC} && truncate -s {bytes} {REMOTE_SRC}\n\
         setsid socat -U TCP-LISTEN:{STREAM_PORT},bind=127.0.0.1,reuseaddr,fork OPEN:{REMOTE_SRC} \
         </dev/null >/dev/null 2>&1 &\n\
         ssh -V 2>&1\n"
    );
    let mut c = warren.client("ssh");
    c.arg(warren.dest())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(public.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "starting sshd in the workspace failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let sshd_version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let client_version = Command::new("ssh")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    progress(&format!("sshd: {sshd_version}; client: {client_version}"));
    let netns = workspace_netns(srv_state)?;
    let openssh = Server {
        name: "openssh",
        netns,
        port: SSHD_PORT,
        user: "root".into(),
        key: key.clone(),
    };
    for port in [SSHD_PORT, STREAM_PORT] {
        let t = Instant::now();
        while !listening(&openssh.netns, port) {
            if t.elapsed() > Duration::from_secs(20) {
                bail!("nothing listens on port {port} in the workspace");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let local = root.join("upload.bin");
    std::fs::File::create(&local)?.set_len(bytes)?;
    let servers = [warren, openssh];
    // Warm-up, unrecorded.
    for s in &servers {
        s.setup_once()
            .with_context(|| format!("{}: ssh true", s.name))?;
    }
    let mut rows = Vec::new();
    let mut row = |key, label, throughput, [w, o]: [Result<Vec<f64>, String>; 2]| {
        rows.push(Row {
            key,
            label,
            throughput,
            warren: w,
            openssh: o,
        })
    };
    progress(&format!(
        "connection setup: {} × ssh true each",
        plan.setups
    ));
    row(
        "setup",
        "connection setup: ssh WS true",
        false,
        measure(&servers, plan.setups, "ssh true", Server::setup_once),
    );
    let n = plan.transfers;
    let mib = plan.mib;
    for (key, label, upload, sftp) in [
        ("scp_legacy_up", "scp -O upload (legacy scp)", true, false),
        (
            "scp_legacy_down",
            "scp -O download (legacy scp)",
            false,
            false,
        ),
        ("scp_sftp_up", "scp -s upload (SFTP)", true, true),
        ("scp_sftp_down", "scp -s download (SFTP)", false, true),
    ] {
        progress(&format!("{label}: {n} × {mib} MiB each"));
        row(
            key,
            label,
            true,
            measure(&servers, n, label, |s| s.scp_once(upload, sftp, &local)),
        );
    }
    progress(&format!("ssh -L: {n} × {mib} MiB each"));
    let lport = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    row(
        "forward_down",
        "ssh -L stream (workspace → client)",
        true,
        measure(&servers, n, "ssh -L", |s| s.forward_once(lport, bytes)),
    );
    let _ = std::fs::remove_file(&local);
    Ok(Report {
        rows,
        sshd: sshd_version,
        client: client_version,
    })
}

/// What the bench measured.
struct Report {
    rows: Vec<Row>,
    /// `ssh -V` inside the workspace (the sshd's package) and on the host (the client).
    sshd: String,
    client: String,
}

fn mib_s(mib: u64, ms: f64) -> f64 {
    mib as f64 / (ms / 1000.0)
}

fn cell(row: &Row, which: &Result<Vec<f64>, String>, mib: u64) -> String {
    match which {
        Ok(v) => {
            let m = stats(v).0;
            if row.throughput {
                format!("{:.0} MiB/s", mib_s(mib, m))
            } else {
                format!("{m:.1} ms")
            }
        }
        Err(_) => "unavailable".into(),
    }
}

fn to_text(report: &Report, plan: &Plan) -> String {
    use std::fmt::Write;
    let rows = &report.rows;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nSSH: Warren's gateway vs OpenSSH's sshd in the same workspace; medians of {} connection \
         setups and {} transfers of {} MiB each\nsshd {}, client {}, cipher {CIPHER}, kex {KEX}, \
         host key {HOST_KEY}\n",
        plan.setups, plan.transfers, plan.mib, report.sshd, report.client
    );
    let _ = writeln!(
        o,
        "{:<38} {:>13} {:>13} {:>8} {:>8}",
        "", "warren", "openssh", "ratio", "target"
    );
    for r in rows {
        let (target, ok) = r.target();
        let _ = writeln!(
            o,
            "{:<38} {:>13} {:>13} {:>8} {:>8}  {}",
            r.label,
            cell(r, &r.warren, plan.mib),
            cell(r, &r.openssh, plan.mib),
            r.ratio().map_or("n/a".into(), |x| format!("{x:.2}×")),
            target,
            match ok {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "n/a",
            }
        );
    }
    let _ = writeln!(
        o,
        "\nratio: setup = warren time / openssh time; throughput = warren MiB/s / openssh MiB/s"
    );
    for r in rows {
        for (name, which) in [("warren", &r.warren), ("openssh", &r.openssh)] {
            if let Err(e) = which {
                let _ = writeln!(o, "note: {} via {name}: {e}", r.label);
            }
        }
    }
    o
}

fn to_json(report: &Report, plan: &Plan) -> Value {
    let rows = &report.rows;
    let side = |r: &Row, which: &Result<Vec<f64>, String>| match which {
        Ok(v) => {
            let (p50, min, max) = stats(v);
            let mut j =
                json!({"n": v.len(), "p50_ms": r3(p50), "min_ms": r3(min), "max_ms": r3(max)});
            if r.throughput {
                j["mib_per_s"] = r3(mib_s(plan.mib, p50));
            }
            j
        }
        Err(e) => json!({"unavailable": e}),
    };
    let v: Vec<Value> = rows
        .iter()
        .map(|r| {
            let (target, ok) = r.target();
            json!({"measure": r.key, "label": r.label, "warren": side(r, &r.warren),
                   "openssh": side(r, &r.openssh), "ratio": r.ratio().map(r3),
                   "target": target, "met": ok})
        })
        .collect();
    json!({"cipher": CIPHER, "kex": KEX, "host_key": HOST_KEY, "sshd": report.sshd,
           "client": report.client, "setups": plan.setups, "transfers": plan.transfers,
           "mib": plan.mib, "results": v})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_found_in_proc_net_tcp() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                 0: 0100007F:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n\
                 1: 0100007F:2328 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1\n";
        assert!(tcp_listens(t, 2222));
        // Port 9000 has only an established connection.
        assert!(!tcp_listens(t, 9000));
        assert!(!tcp_listens(t, 22));
        assert!(!tcp_listens("", 2222));
    }

    #[test]
    fn ratios_put_warren_over_openssh() {
        let row = |throughput, w: Vec<f64>, o: Vec<f64>| Row {
            key: "k",
            label: "l",
            throughput,
            warren: Ok(w),
            openssh: Ok(o),
        };
        // Setup: Warren's time over OpenSSH's; 2× slower misses ≤ 1.5×.
        let r = row(false, vec![20.0, 200.0, 20.0], vec![10.0]);
        assert_eq!(r.ratio(), Some(2.0));
        assert_eq!(r.target().1, Some(false));
        // Throughput: Warren taking twice as long is half the MiB/s, under ≥ 0.8×.
        let r = row(true, vec![2000.0], vec![1000.0]);
        assert_eq!(r.ratio(), Some(0.5));
        assert_eq!(r.target().1, Some(false));
        assert_eq!(row(true, vec![900.0], vec![1000.0]).target().1, Some(true));
        let mut r = row(true, vec![1.0], vec![1.0]);
        r.warren = Err("subsystem request failed".into());
        assert_eq!((r.ratio(), r.target().1), (None, None));
    }
}
