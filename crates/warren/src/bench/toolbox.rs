//! `warren bench --toolbox`: the round trip of a command through the toolbox API against the
//! other ways of running one, on the same server and workspace in the same run.
//!
//! Starts `warren server` on a private state directory with a busybox image and creates a
//! workspace through the API, as a user would. Then, alternating in rounds so drift on a noisy
//! machine hits all alike, it runs `true` in the workspace:
//! - `POST /toolbox/process/run` (buffered JSON answer) on one keep-alive HTTP connection;
//! - `POST /exec` (the API's NDJSON exec), read to its end, on the same kind of connection;
//! - `warren exec WS -- true`, the CLI as a user runs it (a process, a new connection each time).
//!
//! Reported: p50/p90/p99 of each, the medians' ratios to the toolbox, and the target of issue 8
//! (toolbox round trip ≤ 5 ms p50).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{percentile, progress, r3};

const WS: &str = "toolbox";
/// Target of issue 8: toolbox round trip for `true`, p50, in milliseconds.
const TARGET_P50_MS: f64 = 5.0;

async fn api(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut rb = http
        .request(method.clone(), format!("{base}/api/v1{path}"))
        .bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await?;
    let st = resp.status();
    let text = resp.text().await?;
    if !st.is_success() {
        bail!("{method} {path}: {st} {text}");
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn wait_job(http: &reqwest::Client, base: &str, token: &str, id: &str) -> Result<()> {
    for _ in 0..1200 {
        let j = api(
            http,
            base,
            token,
            reqwest::Method::GET,
            &format!("/jobs/{id}"),
            None,
        )
        .await?;
        match j["status"].as_str() {
            Some("pending") | Some("running") => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Some("succeeded") => return Ok(()),
            other => bail!("job {id} ended {other:?}"),
        }
    }
    bail!("job {id} did not finish")
}

/// One toolbox run of `true`: milliseconds.
async fn toolbox_once(http: &reqwest::Client, url: &str, token: &str) -> Result<f64> {
    let t = Instant::now();
    let resp = http
        .post(url)
        .bearer_auth(token)
        .json(&json!({"command": ["true"]}))
        .send()
        .await?;
    let st = resp.status();
    let v: Value = resp.json().await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !st.is_success() || v["exit_code"] != 0 {
        bail!("toolbox run: {st} {v}");
    }
    Ok(ms)
}

/// One NDJSON exec of `true`, read to its end: milliseconds.
async fn ndjson_once(http: &reqwest::Client, url: &str, token: &str) -> Result<f64> {
    let t = Instant::now();
    let resp = http
        .post(url)
        .bearer_auth(token)
        .json(&json!({"command": ["true"]}))
        .send()
        .await?;
    let st = resp.status();
    let text = resp.text().await?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !st.is_success() || !text.contains(r#""code":0"#) {
        bail!("exec: {st} {text}");
    }
    Ok(ms)
}

/// One `warren exec WS -- true`: milliseconds.
fn cli_once(exe: &Path, base: &str, token: &str) -> Result<f64> {
    let t = Instant::now();
    let st = Command::new(exe)
        .args(["exec", WS, "--", "true"])
        .env("WARREN_URL", base)
        .env("WARREN_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if !st.success() {
        bail!("warren exec failed: {st}");
    }
    Ok(ms)
}

/// p50, p90, p99 of `v` (unsorted).
fn pcts(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (
        percentile(v, 50.0),
        percentile(v, 90.0),
        percentile(v, 99.0),
    )
}

/// Runs the toolbox benchmark in `state` (a fresh directory): `iterations` toolbox and NDJSON
/// runs, `cli_iterations` CLI runs.
pub async fn run(
    state: &Path,
    rootfs: &Path,
    busybox: &Path,
    iterations: usize,
    cli_iterations: usize,
    json_out: bool,
) -> Result<u8> {
    let (_server, token, addr) = super::server::start(state, rootfs, busybox).await?;
    let exe = std::env::current_exe()?;
    let base = format!("http://{addr}");
    // One keep-alive connection, as an agent's HTTP client holds.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    use reqwest::Method;
    progress("creating a workspace through the API");
    api(
        &http,
        &base,
        &token,
        Method::POST,
        "/templates/bench-toolbox/versions",
        Some(json!({"devcontainer": "{\"image\":\"busybox\",\"overrideCommand\":true}"})),
    )
    .await?;
    let created = api(
        &http,
        &base,
        &token,
        Method::POST,
        "/workspaces",
        Some(json!({"name": WS, "template": "bench-toolbox"})),
    )
    .await?;
    wait_job(
        &http,
        &base,
        &token,
        created["job"]["id"].as_str().unwrap_or(""),
    )
    .await?;
    let run_url = format!("{base}/api/v1/workspaces/{WS}/toolbox/process/run");
    let exec_url = format!("{base}/api/v1/workspaces/{WS}/exec");
    // Warm up every path (connection, caches).
    for _ in 0..10 {
        toolbox_once(&http, &run_url, &token).await?;
        ndjson_once(&http, &exec_url, &token).await?;
    }
    cli_once(&exe, &base, &token)?;
    let (mut tb, mut nd, mut cli) = (vec![], vec![], vec![]);
    let rounds = 10usize;
    for r in 0..rounds {
        progress(&format!("round {}/{rounds}", r + 1));
        let per = iterations.div_ceil(rounds);
        for _ in 0..per {
            tb.push(toolbox_once(&http, &run_url, &token).await?);
        }
        for _ in 0..per {
            nd.push(ndjson_once(&http, &exec_url, &token).await?);
        }
        let e = exe.clone();
        let (b, t) = (base.clone(), token.clone());
        let per_cli = cli_iterations.div_ceil(rounds);
        let mut c = tokio::task::spawn_blocking(move || -> Result<Vec<f64>> {
            (0..per_cli).map(|_| cli_once(&e, &b, &t)).collect()
        })
        .await
        .context("cli runs")??;
        cli.append(&mut c);
    }
    progress("deleting the workspace");
    if let Ok(v) = api(
        &http,
        &base,
        &token,
        Method::DELETE,
        &format!("/workspaces/{WS}"),
        None,
    )
    .await
    {
        let _ = wait_job(&http, &base, &token, v["job"]["id"].as_str().unwrap_or("")).await;
    }
    let (n_tb, n_nd, n_cli) = (tb.len(), nd.len(), cli.len());
    let t = pcts(&mut tb);
    let n = pcts(&mut nd);
    let c = pcts(&mut cli);
    if json_out {
        let row = |p: (f64, f64, f64), count: usize| json!({"p50": r3(p.0), "p90": r3(p.1), "p99": r3(p.2), "count": count});
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "toolbox_run_ms": row(t, n_tb),
                "api_exec_ndjson_ms": row(n, n_nd),
                "cli_exec_ms": row(c, n_cli),
                "ratio_ndjson_to_toolbox": r3(n.0 / t.0),
                "ratio_cli_to_toolbox": r3(c.0 / t.0),
                "target_p50_ms": TARGET_P50_MS,
                "meets_target": t.0 <= TARGET_P50_MS,
            }))?
        );
    } else {
        println!("Round trip of `true` in a running workspace (ms)");
        println!(
            "{:<34} {:>8} {:>8} {:>8} {:>7} {:>10}",
            "path", "p50", "p90", "p99", "runs", "p50 ratio"
        );
        for (name, p, k) in [
            ("toolbox POST process/run (JSON)", t, n_tb),
            ("API exec NDJSON (POST /exec)", n, n_nd),
            ("CLI `warren exec WS -- true`", c, n_cli),
        ] {
            println!(
                "{name:<34} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>9.2}x",
                p.0,
                p.1,
                p.2,
                k,
                p.0 / t.0
            );
        }
        println!(
            "target: toolbox p50 <= {TARGET_P50_MS} ms: {}",
            if t.0 <= TARGET_P50_MS {
                "met"
            } else {
                "NOT met"
            }
        );
    }
    Ok(0)
}
