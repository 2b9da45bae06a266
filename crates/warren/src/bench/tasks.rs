//! `warren bench --tasks`: a burst of tasks submitted at once to a real `warren server` (started
//! by the bench), each cloning a small repository from a local git smart-HTTP server
//! ([`super::gitserve`], in a network namespace of its own), running a command that commits and
//! pushes a branch. Printed: the time until all are done, p50/p99 of each task's own duration
//! (created → finished, from the server's records), and peak memory (the server's and the
//! workspaces' supervisors' RSS, sampled while it runs; the workspaces' cgroups' own memory is
//! the workloads', not Warren's).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::gitserve::GitServer;
use super::{percentile, progress, r3, Dirs};

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Resident memory (KiB) of a process.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The supervisors of workspaces under `state`.
fn supervisors(state: &Path) -> Vec<u32> {
    let needle = state.display().to_string();
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
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

/// A busybox root with the host's git and what it needs (as the tests' image).
fn gitbox_rootfs(busybox: &Path, root: &Path) -> Result<()> {
    super::build_rootfs(busybox, root)?;
    std::fs::create_dir_all(root.join("home/dev"))?;
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndev:x:1000:1000:dev:/home/dev:/bin/sh\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\ndev:x:1000:\n")?;
    std::os::unix::fs::chown(root.join("home/dev"), Some(1000), Some(1000))?;
    let bins = [
        PathBuf::from("/usr/bin/git"),
        PathBuf::from("/usr/lib/git-core/git-remote-http"),
    ];
    let mut files = bins.to_vec();
    for b in &bins {
        if !b.exists() {
            bail!("{} not found: install Debian's git", b.display());
        }
        let ldd = Command::new("ldd").arg(b).output().context("ldd")?;
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
        let dest = root.join(f.strip_prefix("/")?);
        std::fs::create_dir_all(dest.parent().context("parent")?)?;
        std::fs::copy(&f, &dest).with_context(|| format!("copy {}", f.display()))?;
    }
    Ok(())
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut rb = http
        .request(method.clone(), format!("{base}{path}"))
        .bearer_auth(token);
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

fn ms_between(a: &str, b: &str) -> Option<f64> {
    let a = warren_store::clock::parse_time(a)?;
    let b = warren_store::clock::parse_time(b)?;
    Some((b - a).as_seconds_f64() * 1000.0)
}

/// Runs the burst in `d.state/bench/tasks`.
pub(super) async fn run(
    d: &Dirs,
    busybox: &Path,
    count: usize,
    oci: &str,
    json_out: bool,
) -> Result<u8> {
    // Short names: workspaces' control sockets live under the server's state directory, and a
    // socket path has at most 107 bytes.
    let root = d.state.join("bench/t");
    let _ = std::fs::remove_dir_all(&root);
    let srv_state = root.join("s");
    std::fs::create_dir_all(&srv_state)?;
    let exe = std::env::current_exe()?;
    let rootfs = root.join("rootfs");
    gitbox_rootfs(busybox, &rootfs)?;
    let o = Command::new(&exe)
        .args(["image", "import"])
        .arg(&rootfs)
        .arg("gitbox")
        .env("WARREN_STATE_DIR", &srv_state)
        .output()?;
    if !o.status.success() {
        bail!("image import: {}", String::from_utf8_lossy(&o.stderr));
    }
    let init = Command::new(&exe)
        .args(["server", "init"])
        .env("WARREN_STATE_DIR", &srv_state)
        .stderr(Stdio::inherit())
        .output()?;
    if !init.status.success() {
        bail!("warren server init failed");
    }
    let token = String::from_utf8(init.stdout)?.trim().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::fs::File::create(root.join("server.log"))?;
    let limit = count.to_string();
    let server = Reaped(
        Command::new(&exe)
            .args(["server", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--ssh-listen", "off", "--runtime", oci])
            .args(["--max-tasks", &limit, "--max-tasks-per-user", &limit])
            .env("WARREN_STATE_DIR", &srv_state)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?,
    );
    let server_pid = server.0.id();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..200 {
        if call(
            &http,
            &base,
            &token,
            reqwest::Method::GET,
            "/api/v1/me",
            None,
        )
        .await
        .is_ok()
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        bail!(
            "the server did not answer (log: {})",
            root.join("server.log").display()
        );
    }
    call(
        &http,
        &base,
        &token,
        reqwest::Method::POST,
        "/api/v1/templates/agent/versions",
        Some(json!({"devcontainer": json!({"image": "gitbox", "overrideCommand": true, "remoteUser": "dev"}).to_string()})),
    )
    .await?;
    let gitdir = root.join("git");
    std::fs::create_dir_all(&gitdir)?;
    let git = GitServer::start(&gitdir, "bot", "bench-pass").map_err(anyhow::Error::msg)?;
    git.create_repo(
        "proj",
        &[
            ("README", "bench\n", false),
            ("test.sh", "#!/bin/sh\ngrep -q done README\n", true),
        ],
    )
    .map_err(anyhow::Error::msg)?;
    // The git password is a secret of the bench user's: tasks authenticate through Warren's
    // credential helper.
    call(
        &http,
        &base,
        &token,
        reqwest::Method::PUT,
        "/api/v1/secrets/user/benchgit",
        Some(json!({"value": "bench-pass", "git_host": git.host(), "username": "bot"})),
    )
    .await?;
    let script = "set -e; echo done >> README; ./test.sh; git add -A; git commit -q -m work; \
                  git push -q origin \"HEAD:refs/heads/$WARREN_TASK_BRANCH\"";
    progress(&format!("submitting {count} tasks at once"));
    let t0 = Instant::now();
    let mut ids = vec![];
    let subs: Vec<_> = (0..count)
        .map(|_| {
            call(
                &http,
                &base,
                &token,
                reqwest::Method::POST,
                "/api/v1/tasks",
                Some(json!({"template": "agent", "repo": git.url("proj"), "secrets": ["benchgit"], "shell": script, "time_limit": "10m"})),
            )
        })
        .collect();
    for r in futures_util::future::join_all(subs).await {
        ids.push(r?["task"]["id"].as_str().context("no id")?.to_string());
    }
    let mut peak_server = 0u64;
    let mut peak_sups = 0u64;
    let mut peak_count = 0usize;
    let mut done: Vec<Value> = vec![];
    let mut pending = ids.clone();
    while !pending.is_empty() {
        peak_server = peak_server.max(rss_kib(server_pid));
        let sups = supervisors(&srv_state);
        peak_count = peak_count.max(sups.len());
        peak_sups = peak_sups.max(sups.iter().map(|p| rss_kib(*p)).sum());
        let list = call(
            &http,
            &base,
            &token,
            reqwest::Method::GET,
            "/api/v1/tasks?limit=1000",
            None,
        )
        .await?;
        for t in list["tasks"].as_array().into_iter().flatten() {
            let id = t["id"].as_str().unwrap_or("");
            if pending.iter().any(|p| p == id)
                && matches!(
                    t["state"].as_str(),
                    Some("succeeded" | "failed" | "timed-out" | "canceled")
                )
            {
                pending.retain(|p| p != id);
                done.push(t.clone());
            }
        }
        if t0.elapsed() > Duration::from_secs(1800) {
            bail!("{} tasks still not done after 30 minutes", pending.len());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_done = t0.elapsed().as_secs_f64();
    let ok = done.iter().filter(|t| t["state"] == "succeeded").count();
    let pushed = git
        .git(
            "proj",
            &["for-each-ref", "--format=%(refname)", "refs/heads/warren/"],
        )
        .unwrap_or_default()
        .lines()
        .count();
    let mut per: Vec<f64> = done
        .iter()
        .filter_map(|t| ms_between(t["created_at"].as_str()?, t["finished_at"].as_str()?))
        .collect();
    per.sort_by(|a, b| a.total_cmp(b));
    let (p50, p99) = (
        percentile(&per, 50.0) / 1000.0,
        percentile(&per, 99.0) / 1000.0,
    );
    if ok != count {
        for t in done.iter().filter(|t| t["state"] != "succeeded").take(3) {
            progress(&format!(
                "task {}: {} ({})",
                t["id"], t["state"], t["reason"]
            ));
        }
    }
    drop(server);
    super::gitserve::teardown();
    let leftovers = supervisors(&srv_state).len();
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "tasks": count, "succeeded": ok, "branches_pushed": pushed,
                "all_done_s": r3(all_done), "task_p50_s": r3(p50), "task_p99_s": r3(p99),
                "peak_server_rss_mib": r3(peak_server as f64 / 1024.0),
                "peak_supervisors_rss_mib": r3(peak_sups as f64 / 1024.0),
                "peak_workspaces": peak_count, "leftover_supervisors": leftovers,
            }))?
        );
    } else {
        println!("Task burst: {count} tasks submitted at once (clone, edit, test, commit, push)");
        println!("  succeeded              {ok}/{count} ({pushed} branches on the remote)");
        println!("  time to all done       {all_done:.2} s");
        println!("  per task (created → finished)  p50 {p50:.2} s   p99 {p99:.2} s");
        println!(
            "  peak memory            server {:.1} MiB, supervisors {:.1} MiB ({} at once)",
            peak_server as f64 / 1024.0,
            peak_sups as f64 / 1024.0,
            peak_count
        );
        println!("  supervisors left       {leftovers}");
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(if ok == count { 0 } else { 1 })
}
