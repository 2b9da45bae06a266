//! `warren bench --ports`: preview URLs against a direct connection to the same server.
//!
//! Starts `warren server` on a private state directory with a busybox image, creates a workspace
//! through the API, and runs busybox `httpd` inside it on 127.0.0.1:8000 serving a large file and
//! a small one. The same `curl` then fetches them two ways, alternating, in the same run:
//! - directly: from the host inside the workspace's network namespace
//!   (`nsenter --net=/proc/PID/ns/net curl http://127.0.0.1:8000/...`), the baseline;
//! - through the preview URL (`curl -H 'Authorization: Bearer ...' http://SERVER/p/ports/8000/...`):
//!   authentication, the sharing check, a socket made in the workspace's namespace, the HTTP proxy.
//!
//! Reported: download throughput (median of the rounds; target ≥ 0.8× direct) and the latency of
//! small requests on one keep-alive client connection (curl's own timer, so process start-up is
//! not counted).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::{percentile, progress, r3};

const PORT: u16 = 8000;
const WS: &str = "ports";

/// curl's `time_total` (seconds) of each transfer, checking status and size.
fn curl(
    prefix: &[String],
    args: &[String],
    urls: &[String],
    size: Option<u64>,
) -> Result<Vec<f64>> {
    let mut cmd = if prefix.is_empty() {
        Command::new("curl")
    } else {
        let mut c = Command::new(&prefix[0]);
        c.args(&prefix[1..]).arg("curl");
        c
    };
    cmd.args([
        "-sS",
        "--max-time",
        "600",
        "-w",
        "%{http_code} %{size_download} %{time_total}\\n",
    ])
    .args(args);
    for u in urls {
        cmd.args(["-o", "/dev/null", u]);
    }
    let out = cmd.stdin(Stdio::null()).output().context("run curl")?;
    if !out.status.success() {
        bail!(
            "curl failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut times = vec![];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() != 3 || f[0] != "200" {
            bail!("curl: unexpected transfer `{line}`");
        }
        if let Some(want) = size {
            if f[1].parse::<u64>().ok() != Some(want) {
                bail!("curl: got {} bytes, expected {want}", f[1]);
            }
        }
        times.push(f[2].parse::<f64>().context("curl time")?);
    }
    Ok(times)
}

/// The host pid of the workspace's httpd (its network namespace is the workspace's).
fn httpd_pid() -> Option<i32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if comm.trim() == "httpd" && cmd.contains(&format!("127.0.0.1:{PORT}")) {
            return Some(pid);
        }
    }
    None
}

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

/// Runs the ports benchmark in `state` (a fresh directory).
pub async fn run(
    state: &Path,
    rootfs: &Path,
    busybox: &Path,
    mib: u64,
    rounds: usize,
    json_out: bool,
) -> Result<u8> {
    let (_server, token, addr) = super::server::start(state, rootfs, busybox).await?;
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    use reqwest::Method;
    progress("creating a workspace through the API");
    api(
        &http,
        &base,
        &token,
        Method::POST,
        "/templates/bench-ports/versions",
        Some(json!({"devcontainer": "{\"image\":\"busybox\",\"overrideCommand\":true}"})),
    )
    .await?;
    let created = api(
        &http,
        &base,
        &token,
        Method::POST,
        "/workspaces",
        Some(json!({"name": WS, "template": "bench-ports"})),
    )
    .await?;
    wait_job(
        &http,
        &base,
        &token,
        created["job"]["id"].as_str().unwrap_or(""),
    )
    .await?;
    let size = mib << 20;
    progress(&format!(
        "writing a {mib} MiB file in the workspace and starting httpd on 127.0.0.1:{PORT}"
    ));
    let resp = http
        .post(format!("{base}/api/v1/workspaces/{WS}/exec"))
        .bearer_auth(&token)
        .json(&json!({"command": ["sh", "-c", format!(
            "mkdir -p /srv && dd if=/dev/zero of=/srv/big bs=1048576 count={mib} 2>/dev/null \
             && echo small > /srv/small && httpd -p 127.0.0.1:{PORT} -h /srv")]}))
        .send()
        .await?;
    let _ = resp.text().await?;
    let mut pid = None;
    for _ in 0..200 {
        pid = httpd_pid();
        if pid.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = pid.context("httpd did not start in the workspace")?;
    let direct = vec!["nsenter".to_string(), format!("--net=/proc/{pid}/ns/net")];
    let auth = vec!["-H".to_string(), format!("Authorization: Bearer {token}")];
    let direct_url = |f: &str| format!("http://127.0.0.1:{PORT}/{f}");
    let preview_url = |f: &str| format!("{base}/p/{WS}/{PORT}/{f}");
    // Warm up both paths (and the page cache).
    curl(&direct, &[], &[direct_url("big")], Some(size))?;
    curl(&[], &auth, &[preview_url("big")], Some(size))?;
    let (mut d_mbs, mut p_mbs) = (vec![], vec![]);
    for i in 0..rounds {
        progress(&format!("download round {}/{rounds}", i + 1));
        let d = curl(&direct, &[], &[direct_url("big")], Some(size))?[0];
        let p = curl(&[], &auth, &[preview_url("big")], Some(size))?[0];
        d_mbs.push(mib as f64 / d);
        p_mbs.push(mib as f64 / p);
    }
    progress("small requests on one keep-alive connection");
    let n = 200;
    let mut d_lat: Vec<f64> = curl(&direct, &[], &vec![direct_url("small"); n], None)?
        .into_iter()
        .map(|s| s * 1000.0)
        .collect();
    let mut p_lat: Vec<f64> = curl(&[], &auth, &vec![preview_url("small"); n], None)?
        .into_iter()
        .map(|s| s * 1000.0)
        .collect();
    for v in [&mut d_mbs, &mut p_mbs, &mut d_lat, &mut p_lat] {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    let d_med = percentile(&d_mbs, 50.0);
    let p_med = percentile(&p_mbs, 50.0);
    let ratio = p_med / d_med;
    let (dl50, dl99) = (percentile(&d_lat, 50.0), percentile(&d_lat, 99.0));
    let (pl50, pl99) = (percentile(&p_lat, 50.0), percentile(&p_lat, 99.0));
    // Leave nothing running.
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
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "file_mib": mib, "rounds": rounds,
                "direct_mib_s": r3(d_med), "preview_mib_s": r3(p_med), "throughput_ratio": r3(ratio),
                "direct_ms": {"p50": r3(dl50), "p99": r3(dl99)},
                "preview_ms": {"p50": r3(pl50), "p99": r3(pl99)},
                "small_requests": n,
            }))?
        );
    } else {
        println!("Preview URLs: a {mib} MiB download from busybox httpd inside a workspace, {rounds} rounds each, alternating; curl on this machine\n");
        println!("{:<58} {:>12} {:>9}", "download", "MiB/s (p50)", "×direct");
        println!(
            "{:<58} {:>12.0} {:>9}",
            "direct (curl in the workspace's network namespace)", d_med, "1.00"
        );
        println!(
            "{:<58} {:>12.0} {:>9.2}",
            "preview URL /p/WS/PORT/ (bearer token)", p_med, ratio
        );
        println!(
            "\n{:<58} {:>9} {:>9}",
            format!("{n} small requests, one keep-alive connection"),
            "p50 ms",
            "p99 ms"
        );
        println!("{:<58} {:>9.3} {:>9.3}", "direct", dl50, dl99);
        println!("{:<58} {:>9.3} {:>9.3}", "preview URL", pl50, pl99);
        println!(
            "\ntarget: preview throughput ≥ 0.8× direct: {}",
            if ratio >= 0.8 { "met" } else { "MISSED" }
        );
    }
    Ok(0)
}
