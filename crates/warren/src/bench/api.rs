//! `warren bench --api`: load on the REST API with many recorded workspaces.
//!
//! Starts `warren server` as a separate process on a private state directory seeded with N
//! workspace records (records only: no workspace runs), then drives it from this process with C
//! keep-alive HTTP/1.1 connections for a fixed time per scenario, authenticated with a real
//! token. Reports requests per second and latency percentiles, with `GET /healthz` (no
//! authentication, no database) as the baseline of the same run.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use warren_api::WorkspaceName;
use warren_store::{NewWorkspace, Ownership, Store};

use super::{percentile, progress, r3};

/// One scenario's result.
struct Load {
    name: &'static str,
    path: String,
    requests: usize,
    errors: usize,
    secs: f64,
    p50: f64,
    p99: f64,
}

impl Load {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
}

struct ServerProc(Child);

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn seed(state: &Path, n: usize) -> Result<String> {
    let store = Store::open(&state.join("warren.db")).await?;
    let admin = store
        .user_by_name("admin")
        .await?
        .context("the server init made no admin user")?;
    for i in 0..n {
        store
            .create_workspace(NewWorkspace {
                name: WorkspaceName::new(format!("ws{i:05}"))?,
                project_dir: format!("/nonexistent/bench/{i}"),
                config_path: format!("/nonexistent/bench/{i}/.devcontainer.json"),
                image: "busybox".into(),
                spec_json: "{}".into(),
                ownership: Ownership {
                    owner_id: admin.id.clone(),
                    org_id: admin.org_id.clone(),
                    parameters_json: "{}".into(),
                    ..Default::default()
                },
            })
            .await?;
    }
    store.close().await;
    Ok(admin.id)
}

pub(super) async fn wait_ready(addr: &str) -> Result<()> {
    for _ in 0..200 {
        if let Ok(s) = tokio::net::TcpStream::connect(addr).await {
            drop(s);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the server did not start listening on {addr}")
}

/// One connection sending requests back to back until `until`; returns latencies (ms) and errors.
async fn connection(
    addr: String,
    path: String,
    token: Option<String>,
    until: Instant,
) -> Result<(Vec<f64>, usize)> {
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    stream.set_nodelay(true)?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut lat = Vec::new();
    let mut errors = 0;
    while Instant::now() < until {
        let mut req = hyper::Request::get(&path).header("host", &addr);
        if let Some(t) = &token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Empty::<Bytes>::new())?;
        let t0 = Instant::now();
        send.ready().await?;
        let resp = send.send_request(req).await?;
        let ok = resp.status().is_success();
        resp.into_body().collect().await?;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        if !ok {
            errors += 1;
        }
    }
    Ok((lat, errors))
}

async fn scenario(
    name: &'static str,
    addr: &str,
    path: &str,
    token: Option<&str>,
    conns: usize,
    secs: u64,
) -> Result<Load> {
    // Warm up connections and caches.
    let warm = Instant::now() + Duration::from_millis(300);
    connection(addr.into(), path.into(), token.map(String::from), warm).await?;
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(connection(
            addr.into(),
            path.into(),
            token.map(String::from),
            until,
        )));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await??;
        all.extend(l);
        errors += e;
    }
    let secs = t0.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.total_cmp(b));
    Ok(Load {
        name,
        path: path.into(),
        requests: all.len(),
        errors,
        secs,
        p50: percentile(&all, 50.0),
        p99: percentile(&all, 99.0),
    })
}

/// Runs the API load benchmark in `state` (a fresh directory).
pub async fn run(
    state: &Path,
    workspaces: usize,
    conns: usize,
    secs: u64,
    json_out: bool,
) -> Result<u8> {
    let exe = std::env::current_exe()?;
    let init = Command::new(&exe)
        .args(["server", "init"])
        .env("WARREN_STATE_DIR", state)
        .stderr(Stdio::null())
        .output()?;
    if !init.status.success() {
        bail!("warren server init failed");
    }
    let token = String::from_utf8(init.stdout)?.trim().to_string();
    progress(&format!("recording {workspaces} workspaces"));
    seed(state, workspaces).await?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let addr = format!("127.0.0.1:{port}");
    let _server = ServerProc(
        Command::new(&exe)
            .args(["server", "--listen", &addr])
            .env("WARREN_STATE_DIR", state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_ready(&addr).await?;
    let one = format!("/api/v1/workspaces/ws{:05}", workspaces / 2);
    let mut results = Vec::new();
    for (name, path, auth) in [
        (
            "baseline: GET /healthz (no auth, no database)",
            "/healthz".to_string(),
            false,
        ),
        ("GET one workspace (authenticated)", one, true),
        (
            "GET /api/v1/workspaces?limit=50 (authenticated)",
            "/api/v1/workspaces?limit=50".to_string(),
            true,
        ),
    ] {
        progress(&format!("{name}: {conns} connections for {secs} s"));
        results.push(
            scenario(
                name,
                &addr,
                &path,
                auth.then_some(token.as_str()),
                conns,
                secs,
            )
            .await?,
        );
    }
    let base = results[0].rps();
    if json_out {
        let v: Vec<Value> = results
            .iter()
            .map(|r| {
                json!({"scenario": r.name, "path": r.path, "requests": r.requests, "errors": r.errors,
                       "seconds": r3(r.secs), "rps": r.rps().round(), "p50_ms": r3(r.p50), "p99_ms": r3(r.p99),
                       "rps_vs_baseline": r3(r.rps() / base)})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"workspaces": workspaces, "connections": conns, "results": v})
            )?
        );
    } else {
        println!("API load: {workspaces} workspaces recorded, {conns} keep-alive connections, {secs} s per scenario, server and load generator on this machine\n");
        println!(
            "{:<50} {:>10} {:>9} {:>9} {:>8} {:>7}",
            "scenario", "req/s", "p50 ms", "p99 ms", "errors", "×base"
        );
        for r in &results {
            println!(
                "{:<50} {:>10.0} {:>9.3} {:>9.3} {:>8} {:>7.2}",
                r.name,
                r.rps(),
                r.p50,
                r.p99,
                r.errors,
                r.rps() / base
            );
        }
        let get = &results[1];
        println!(
            "\ntarget: GET one workspace ≥ 5000 req/s with p99 < 10 ms: {}",
            if get.rps() >= 5000.0 && get.p99 < 10.0 && get.errors == 0 {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    if results.iter().any(|r| r.errors > 0) {
        bail!("some requests failed");
    }
    Ok(0)
}
