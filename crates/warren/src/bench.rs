//! `warren bench`: measures what a user waits for (create → first exec → delete of a workspace) and what a
//! workspace costs Warren in memory, next to baselines (bubblewrap, runc) run in the same invocation on the
//! same root filesystem, so the numbers stay comparable on a noisy machine. A measuring tool, not a test:
//! it never judges a time, it prints them with the targets beside them.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as PStdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};
use warren_engine::{Config, Engine, Quiet, UpOptions};
use warren_runtime::{ExecProcess, LinuxRuntime, OciRuntime, Runtime, Stdio, WorkspaceSpec};

/// Image name the bench imports its busybox root filesystem under.
const IMAGE: &str = "warren-bench-busybox:latest";
/// Target: create → first exec p50, in milliseconds.
const TARGET_FIRST_EXEC_MS: f64 = 20.0;
/// Target: create → first exec p50 relative to bubblewrap's p50.
const TARGET_VS_BWRAP: f64 = 3.0;
/// Target: Warren's own memory per idle workspace, in MiB.
const TARGET_MIB_PER_WS: f64 = 2.0;

/// Options of `warren bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Workspaces created, exec'd into and deleted one after another (latency benchmark).
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Idle workspaces running at once (memory density benchmark).
    #[arg(long, default_value_t = 100)]
    density: usize,
    /// How many `up`s run concurrently while starting the density workspaces.
    #[arg(long, default_value_t = 8)]
    parallel: usize,
    /// Smoke run: --count 10 --density 10.
    #[arg(long)]
    quick: bool,
    /// Print machine-readable JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Statically linked busybox to build the benchmark root filesystem from.
    #[arg(long, default_value = "/bin/busybox")]
    busybox: PathBuf,
    /// Benchmark the REST API under load instead (a `warren server` with recorded workspaces).
    #[arg(long)]
    api: bool,
    /// --api: workspaces recorded.
    #[arg(long, default_value_t = 1000)]
    api_workspaces: usize,
    /// --api: concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    api_connections: usize,
    /// --api: seconds per scenario.
    #[arg(long, default_value_t = 5)]
    api_seconds: u64,
    /// Benchmark `devcontainer read-configuration` over the devcontainer corpus against the
    /// reference Dev Containers CLI instead (needs no state dir and no root).
    #[arg(long)]
    pub(crate) devcontainer: bool,
    /// --devcontainer: passes over the corpus (--quick: 1).
    #[arg(long, default_value_t = 3)]
    devcontainer_rounds: usize,
    /// Benchmark Warren's Dockerfile builder instead: cold build vs unchanged rebuild vs `runc run`.
    #[arg(long)]
    build: bool,
    /// --build: rounds (default 20; 5 with --quick).
    #[arg(long, default_value_t = 20)]
    build_rounds: usize,
    /// Benchmark preview URLs instead: a download through `/p/WS/PORT/` against the same download
    /// made directly in the workspace's network namespace, and small-request latency.
    #[arg(long)]
    ports: bool,
    /// --ports: size of the download in MiB (--quick: 64).
    #[arg(long, default_value_t = 512)]
    ports_mib: u64,
    /// --ports: rounds of each download (--quick: 3).
    #[arg(long, default_value_t = 7)]
    ports_rounds: usize,
    /// Benchmark the toolbox API instead: the round trip of `true` through `POST
    /// toolbox/process/run` against the API's NDJSON exec and `warren exec WS -- true`.
    #[arg(long)]
    toolbox: bool,
    /// --toolbox: runs of each API path (default 1000; 100 with --quick).
    #[arg(long, default_value_t = 1000)]
    toolbox_runs: usize,
    /// --toolbox: runs of the CLI (default 100; 10 with --quick).
    #[arg(long, default_value_t = 100)]
    toolbox_cli_runs: usize,
    /// Benchmark the SSH gateway against OpenSSH's sshd started inside the same workspace:
    /// connection setup, scp and `ssh -L` throughput (needs root, mmdebstrap the first time, the
    /// OpenSSH client and nsenter). Keep the bootstrapped image between runs with --state-dir.
    #[arg(long)]
    ssh: bool,
    /// --ssh: connection setups per server (default 20; 8 with --quick).
    #[arg(long, default_value_t = 20)]
    ssh_setups: usize,
    /// --ssh: transfers per server and kind (default 5; 3 with --quick).
    #[arg(long, default_value_t = 5)]
    ssh_transfers: usize,
    /// --ssh: MiB per transfer (default 1024; 256 with --quick).
    #[arg(long, default_value_t = 1024)]
    ssh_mib: u64,
    /// Benchmark the lifecycle-policy reconciler instead: passes over many workspace records,
    /// against reading those records alone (no root, no workspace runs).
    #[arg(long)]
    policy: bool,
    /// --policy: workspace records.
    #[arg(long, default_value_t = 10_000)]
    policy_workspaces: usize,
    /// --policy: timed passes (--quick: 10).
    #[arg(long, default_value_t = 50)]
    policy_passes: usize,
    /// Benchmark workspace networking instead: throughput and connection rate through a
    /// workspace's egress path against the host's loopback, and DNS through Warren's resolver
    /// against a direct query (needs root, nftables and iproute2).
    #[arg(long)]
    net: bool,
    /// --net: MiB per throughput round (--quick: 64).
    #[arg(long, default_value_t = 1024)]
    net_mib: u64,
    /// --net: rounds (--quick: 2).
    #[arg(long, default_value_t = 5)]
    net_rounds: usize,
    /// Benchmark tasks instead: a burst of tasks submitted at once to a real server, each
    /// cloning a small repository from a local git server, committing and pushing a branch
    /// (needs root, iproute2 and Debian's git).
    #[arg(long)]
    tasks: bool,
    /// --tasks: tasks in the burst (--quick: 4).
    #[arg(long, default_value_t = 50)]
    tasks_count: usize,
}

mod api;
mod build;
pub(crate) mod devcontainer;
pub(crate) mod gitserve;
mod net;
mod policy;
mod ports;
mod server;
mod ssh;
mod tasks;
mod toolbox;

/// `warren bench --devcontainer`.
pub(crate) fn run_devcontainer(args: &BenchArgs) -> Result<u8> {
    let rounds = if args.quick {
        1
    } else {
        args.devcontainer_rounds.max(1)
    };
    devcontainer::run(rounds, args.json)
}

// ---------------------------------------------------------------------------------------------------
// Statistics

/// The `p`-th percentile (0..=100) of sorted samples, interpolating linearly between the closest ranks.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = (p / 100.0).clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = rank.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
        }
    }
}

/// Summary of one series of durations, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Summary {
    n: usize,
    p50: f64,
    p99: f64,
    mean: f64,
    min: f64,
    max: f64,
}

impl Summary {
    fn of(samples: &[f64]) -> Summary {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let mean = if n == 0 {
            f64::NAN
        } else {
            s.iter().sum::<f64>() / n as f64
        };
        Summary {
            n,
            p50: percentile(&s, 50.0),
            p99: percentile(&s, 99.0),
            mean,
            min: s.first().copied().unwrap_or(f64::NAN),
            max: s.last().copied().unwrap_or(f64::NAN),
        }
    }

    fn json(&self) -> Value {
        json!({ "n": self.n, "p50_ms": r3(self.p50), "p99_ms": r3(self.p99), "mean_ms": r3(self.mean),
                "min_ms": r3(self.min), "max_ms": r3(self.max) })
    }
}

fn r3(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Named series of samples, kept in insertion order.
#[derive(Default)]
struct Series {
    names: Vec<&'static str>,
    samples: Vec<Vec<f64>>,
}

impl Series {
    fn push(&mut self, name: &'static str, v: f64) {
        match self.names.iter().position(|n| *n == name) {
            Some(i) => self.samples[i].push(v),
            None => {
                self.names.push(name);
                self.samples.push(vec![v]);
            }
        }
    }

    fn get(&self, name: &str) -> Option<Summary> {
        let i = self.names.iter().position(|n| *n == name)?;
        Some(Summary::of(&self.samples[i]))
    }
}

// ---------------------------------------------------------------------------------------------------
// Setup

/// Where the bench keeps its files, and whether it must remove them afterwards.
struct Dirs {
    state: PathBuf,
    /// The bench made `state` itself (a temp dir): remove it all afterwards.
    owned: bool,
    rootfs: PathBuf,
    projects: PathBuf,
    runc_root: PathBuf,
    runc_bundle: PathBuf,
}

/// Whether `--state-dir` was given on the command line (the bench never uses the default state dir, nor
/// `WARREN_STATE_DIR`, so that it cannot fill someone's real state with benchmark workspaces by accident).
fn state_dir_given() -> bool {
    std::env::args_os().any(|a| {
        let a = a.to_string_lossy();
        a == "--state-dir" || a.starts_with("--state-dir=")
    })
}

fn make_dirs(global_state_dir: &Path) -> Result<Dirs> {
    let (state, owned) = if state_dir_given() {
        (global_state_dir.to_path_buf(), false)
    } else {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("warren-bench-{}-{nanos:08x}", std::process::id()));
        std::fs::create_dir(&p).with_context(|| format!("create {}", p.display()))?;
        (p, true)
    };
    // Baseline files live next to (not in) a user-given state dir's managed directories.
    let scratch = state.join("bench");
    let d = Dirs {
        rootfs: scratch.join("rootfs"),
        projects: scratch.join("projects"),
        runc_root: scratch.join("runc-state"),
        runc_bundle: scratch.join("runc-bundle"),
        state,
        owned,
    };
    for p in [&d.projects, &d.runc_root, &d.runc_bundle] {
        std::fs::create_dir_all(p).with_context(|| format!("create {}", p.display()))?;
    }
    Ok(d)
}

/// A minimal root filesystem: static busybox, its applets as symlinks, and the mount points and /etc
/// files the three runtimes want (bubblewrap cannot create mount points in a read-only root).
fn build_rootfs(busybox: &Path, root: &Path) -> Result<()> {
    if !busybox.is_file() {
        bail!(
            "{} not found; install busybox-static or pass --busybox PATH",
            busybox.display()
        );
    }
    for d in [
        "bin",
        "proc",
        "dev",
        "sys",
        "tmp",
        "etc",
        "root",
        "workspaces",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox")).context("copy busybox")?;
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .context("busybox --list")?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link)?;
        }
    }
    if !root.join("bin/true").exists() || !root.join("bin/sh").exists() {
        bail!("{} has no `true` or `sh` applet", busybox.display());
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n")?;
    Ok(())
}

/// A project folder whose devcontainer.json uses the bench image.
fn make_project(projects: &Path, name: &str) -> Result<PathBuf> {
    let dir = projects.join(name);
    std::fs::create_dir_all(dir.join(".devcontainer"))?;
    std::fs::write(
        dir.join(".devcontainer/devcontainer.json"),
        format!("{{\"image\":\"{IMAGE}\"}}\n"),
    )?;
    Ok(dir)
}

/// A runc bundle from `runc spec`, changed to run /bin/true in the bench rootfs without a terminal.
fn make_runc_bundle(d: &Dirs) -> Result<()> {
    let st = Command::new("runc")
        .arg("spec")
        .arg("--bundle")
        .arg(&d.runc_bundle)
        .status()
        .context("run `runc spec`")?;
    if !st.success() {
        bail!("runc spec: {st}");
    }
    let path = d.runc_bundle.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    cfg["root"]["path"] = json!(d.rootfs);
    cfg["process"]["terminal"] = json!(false);
    cfg["process"]["args"] = json!(["/bin/true"]);
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg)?)?;
    Ok(())
}

fn devnull() -> Result<OwnedFd> {
    Ok(OwnedFd::from(
        File::options().read(true).write(true).open("/dev/null")?,
    ))
}

fn null_stdio() -> Result<Stdio> {
    Ok(Stdio {
        stdin: devnull()?,
        stdout: devnull()?,
        stderr: devnull()?,
    })
}

fn true_process() -> ExecProcess {
    ExecProcess {
        argv: vec!["true".into()],
        ..Default::default()
    }
}

/// Runs `cmd` to completion with null stdio; fails unless it exits 0.
fn run_quiet(cmd: &mut Command) -> Result<Duration> {
    let t = Instant::now();
    let out = cmd
        .stdin(PStdio::null())
        .stdout(PStdio::null())
        .stderr(PStdio::piped())
        .output()
        .with_context(|| format!("run {:?}", cmd.get_program()))?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!(
            "{:?} exited with {}: {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(d)
}

fn progress(msg: &str) {
    eprintln!("bench: {msg}");
}

// ---------------------------------------------------------------------------------------------------
// The measured paths

struct Ctx {
    engine: Engine,
    runtime: Arc<LinuxRuntime>,
    layers: Vec<PathBuf>,
    dirs: Dirs,
    exe: PathBuf,
    /// Runtime-only workspace ids that may still exist (for cleanup).
    rt_ids: std::sync::Mutex<Vec<String>>,
}

fn bwrap_once(rootfs: &Path) -> Result<Duration> {
    run_quiet(
        Command::new("bwrap")
            .arg("--unshare-all")
            .arg("--ro-bind")
            .arg(rootfs)
            .arg("/")
            .args(["--proc", "/proc", "--dev", "/dev", "/bin/true"]),
    )
}

fn runc_once(d: &Dirs, id: &str) -> Result<Duration> {
    run_quiet(
        Command::new("runc")
            .arg("--root")
            .arg(&d.runc_root)
            .arg("run")
            .arg("-b")
            .arg(&d.runc_bundle)
            .arg(id),
    )
}

/// LinuxRuntime create + start → exec `true` (until it exits) → destroy; records each phase.
fn runtime_once(ctx: &Ctx, id: &str, out: &mut Series) -> Result<()> {
    let spec = WorkspaceSpec {
        id: id.to_string(),
        hostname: id.to_string(),
        layers: ctx.layers.clone(),
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        mounts: vec![],
        home_user: None,
        container_user: None,
        limits: Default::default(),
        user_namespace: None,
        security: Default::default(),
        network: warren_runtime::Network::Isolated,
        tmp_tmpfs: true,
        secrets_user: None,
        agent_dir: false,
    };
    ctx.rt_ids.lock().expect("lock").push(id.to_string());
    let rt = &ctx.runtime;
    let t0 = Instant::now();
    rt.create(&spec)?;
    let t1 = Instant::now();
    rt.start(id)?;
    let t2 = Instant::now();
    let session = rt.exec(id, &true_process(), Some(null_stdio()?))?;
    let t3 = Instant::now();
    let code = session.wait()?;
    let t4 = Instant::now();
    drop(session);
    rt.destroy(id)?;
    let t5 = Instant::now();
    ctx.rt_ids.lock().expect("lock").retain(|x| x != id);
    if code != 0 {
        bail!("`true` exited with {code} in runtime workspace {id}");
    }
    out.push("rt.create", ms(t1 - t0));
    out.push("rt.start", ms(t2 - t1));
    out.push("rt.exec", ms(t3 - t2));
    out.push("rt.wait", ms(t4 - t3));
    out.push("rt.destroy", ms(t5 - t4));
    out.push("rt.first_exec", ms(t4 - t0));
    out.push("rt.total", ms(t5 - t0));
    Ok(())
}

/// Engine::up → Engine::exec `true` (until it exits) → Engine::delete(force); records each phase.
async fn engine_once(ctx: &Ctx, project: &Path, name: &str, out: &mut Series) -> Result<()> {
    let opts = UpOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let t0 = Instant::now();
    ctx.engine.up(project, &opts, &Quiet).await?;
    let t1 = Instant::now();
    let session = ctx
        .engine
        .exec(name, true_process(), Some(null_stdio()?))
        .await?;
    let t2 = Instant::now();
    let (session, code) = tokio::task::spawn_blocking(move || {
        let c = session.wait();
        (session, c)
    })
    .await?;
    let code = code?;
    let t3 = Instant::now();
    drop(session);
    ctx.engine.delete(name, true).await?;
    let t4 = Instant::now();
    if code != 0 {
        bail!("`true` exited with {code} in workspace {name}");
    }
    out.push("eng.up", ms(t1 - t0));
    out.push("eng.exec", ms(t2 - t1));
    out.push("eng.wait", ms(t3 - t2));
    out.push("eng.delete", ms(t4 - t3));
    out.push("eng.first_exec", ms(t3 - t0));
    out.push("eng.total", ms(t4 - t0));
    Ok(())
}

/// Control-plane pieces timed on their own: reading devcontainer.json, resolving the image, a store read,
/// and starting the `warren` binary (every supervisor is a fresh exec of it).
async fn pieces_once(ctx: &Ctx, project: &Path, out: &mut Series) -> Result<()> {
    let t = Instant::now();
    warren_devcontainer::load(project)?;
    out.push("cp.devcontainer_load", ms(t.elapsed()));
    let images = ctx.engine.images().clone();
    let t = Instant::now();
    tokio::task::spawn_blocking(move || images.resolve(IMAGE)).await??;
    out.push("cp.image_resolve", ms(t.elapsed()));
    let t = Instant::now();
    ctx.engine.list().await?;
    out.push("cp.store_list", ms(t.elapsed()));
    let d = run_quiet(Command::new(&ctx.exe).arg("--version"))?;
    out.push("cp.exe_version", ms(d));
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Density

/// Proportional set size of `pid` in KiB (from smaps_rollup), with its RSS.
fn pss_kib(pid: i32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    parse_rollup(&s)
}

fn parse_rollup(s: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    Some((field("Pss:")?, field("Rss:")?))
}

/// Supervisor pids of the engine's running workspaces, from each workspace's `run/sup.pid`.
fn supervisor_pids(state: &Path) -> Vec<i32> {
    let mut pids = Vec::new();
    if let Ok(rd) = std::fs::read_dir(state.join("workspaces")) {
        for e in rd.flatten() {
            if let Some(pid) = std::fs::read_to_string(e.path().join("run/sup.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                let alive = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| c.split(|b| *b == 0).any(|a| a == b"__supervise"))
                    .unwrap_or(false);
                if alive {
                    pids.push(pid);
                }
            }
        }
    }
    pids
}

struct Density {
    m: usize,
    started: usize,
    start_wall_ms: f64,
    supervisors: usize,
    sup_pss_kib: u64,
    sup_rss_kib: u64,
    cp_pss_kib: u64,
    cp_rss_kib: u64,
    delete_wall_ms: f64,
}

impl Density {
    fn total_kib(&self) -> f64 {
        self.sup_pss_kib as f64 + self.cp_pss_kib as f64
    }
    fn per_ws_mib(&self) -> f64 {
        if self.supervisors == 0 {
            f64::NAN
        } else {
            self.total_kib() / self.supervisors as f64 / 1024.0
        }
    }
}

async fn density(ctx: &Ctx, m: usize, parallel: usize) -> Result<Density> {
    let mut projects = Vec::new();
    for i in 0..m {
        let name = format!("bd{i:04}");
        projects.push((make_project(&ctx.dirs.projects, &name)?, name));
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut set = tokio::task::JoinSet::new();
    let t = Instant::now();
    for (dir, name) in projects.clone() {
        let engine = ctx.engine.clone();
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let opts = UpOptions {
                name: Some(name),
                ..Default::default()
            };
            engine.up(&dir, &opts, &Quiet).await
        });
    }
    let mut started = 0;
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(_)) => started += 1,
            Ok(Err(e)) => {
                first_err.get_or_insert_with(|| e.to_string());
            }
            Err(e) => {
                first_err.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let start_wall_ms = ms(t.elapsed());
    if let Some(e) = &first_err {
        progress(&format!(
            "{} of {m} workspaces failed to start: {e}",
            m - started
        ));
    }
    progress(&format!(
        "{started} idle workspaces up in {start_wall_ms:.0} ms; measuring memory"
    ));
    // Let the init shells settle into their sleep loop before reading memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pids = supervisor_pids(&ctx.dirs.state);
    let (mut sup_pss, mut sup_rss) = (0, 0);
    for pid in &pids {
        if let Some((p, r)) = pss_kib(*pid) {
            sup_pss += p;
            sup_rss += r;
        }
    }
    let (cp_pss, cp_rss) = pss_kib(std::process::id() as i32).unwrap_or((0, 0));
    progress("deleting the density workspaces");
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (_, name) in projects {
        let engine = ctx.engine.clone();
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            engine.delete(&name, true).await
        });
    }
    while let Some(r) = set.join_next().await {
        if let Ok(Err(e)) = r {
            if !matches!(e, warren_engine::EngineError::NotFound(_)) {
                progress(&format!("delete: {e}"));
            }
        }
    }
    Ok(Density {
        m,
        started,
        start_wall_ms,
        supervisors: pids.len(),
        sup_pss_kib: sup_pss,
        sup_rss_kib: sup_rss,
        cp_pss_kib: cp_pss,
        cp_rss_kib: cp_rss,
        delete_wall_ms: ms(t.elapsed()),
    })
}

// ---------------------------------------------------------------------------------------------------
// Driver

struct Results {
    count: usize,
    oci: String,
    series: Series,
    baseline_errors: Vec<String>,
    density: Option<Density>,
    state_dir: PathBuf,
}

/// Runs the benchmark. `global_state_dir` is used only when `--state-dir` was given explicitly.
pub async fn run(mut args: BenchArgs, global_state_dir: &Path, oci: &str) -> Result<u8> {
    if args.quick {
        args.count = 10;
        args.density = 10;
    }
    let dirs = make_dirs(global_state_dir)?;
    let owned_state = dirs.owned.then(|| dirs.state.clone());
    if args.policy {
        let passes = if args.quick {
            10
        } else {
            args.policy_passes.max(1)
        };
        let exe = std::env::current_exe()?;
        let res = policy::run(
            &dirs.state,
            &exe,
            args.policy_workspaces.max(1),
            passes,
            args.json,
        )
        .await;
        if let Some(dir) = owned_state {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            let _ = std::fs::remove_dir_all(dirs.state.join("policy-bench"));
        }
        return res;
    }
    if args.api {
        let res = api::run(
            &dirs.state,
            args.api_workspaces,
            args.api_connections,
            args.api_seconds,
            args.json,
        )
        .await;
        if let Some(dir) = owned_state {
            let _ = std::fs::remove_dir_all(&dir);
        }
        return res;
    }
    if args.ports {
        if args.quick {
            args.ports_mib = 64;
            args.ports_rounds = 3;
        }
        let res = ports::run(
            &dirs.state,
            &dirs.rootfs,
            &args.busybox,
            args.ports_mib,
            args.ports_rounds,
            args.json,
        )
        .await;
        if let Some(dir) = owned_state {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            let _ = std::fs::remove_dir_all(dirs.state.join("bench"));
        }
        return res;
    }
    if args.toolbox {
        if args.quick {
            args.toolbox_runs = 100;
            args.toolbox_cli_runs = 10;
        }
        let res = toolbox::run(
            &dirs.state,
            &dirs.rootfs,
            &args.busybox,
            args.toolbox_runs.max(1),
            args.toolbox_cli_runs.max(1),
            args.json,
        )
        .await;
        if let Some(dir) = owned_state {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            let _ = std::fs::remove_dir_all(dirs.state.join("bench"));
        }
        return res;
    }
    if args.net {
        if args.quick {
            args.net_mib = 64;
            args.net_rounds = 2;
        }
        let res = net::run(
            &dirs,
            &args.busybox,
            args.net_mib.max(1),
            args.net_rounds.max(1),
            args.json,
        )
        .await;
        if let Some(dir) = owned_state {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            let _ = std::fs::remove_dir_all(dirs.state.join("bench"));
        }
        return res;
    }
    if args.build {
        if args.quick {
            args.build_rounds = 5;
        }
        let res = build::run(&dirs, &args.busybox, args.build_rounds, oci, args.json).await;
        if let Some(dir) = owned_state {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            let _ = std::fs::remove_dir_all(dirs.state.join("bench"));
        }
        return res;
    }
    if args.tasks {
        let count = if args.quick {
            4
        } else {
            args.tasks_count.max(1)
        };
        progress(&format!("state dir {}", dirs.state.display()));
        let res = tasks::run(&dirs, &args.busybox, count, oci, args.json).await;
        if let Some(dir) = owned_state {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            let _ = std::fs::remove_dir_all(dirs.state.join("bench"));
        }
        return res;
    }
    if args.ssh {
        let plan = ssh::Plan {
            setups: if args.quick {
                8
            } else {
                args.ssh_setups.max(1)
            },
            transfers: if args.quick {
                3
            } else {
                args.ssh_transfers.max(1)
            },
            mib: if args.quick { 256 } else { args.ssh_mib.max(1) },
            json: args.json,
            oci: oci.to_string(),
        };
        progress(&format!("state dir {}", dirs.state.display()));
        let res = ssh::run(&dirs, &plan).await;
        if let Some(dir) = owned_state {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            let _ = std::fs::remove_dir_all(dirs.state.join("bench"));
        }
        return res;
    }
    progress(&format!(
        "state dir {} (oci runtime {oci})",
        dirs.state.display()
    ));
    let res = bench(&args, dirs, oci).await;
    if let Some(dir) = owned_state {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            progress(&format!("could not remove {}: {e}", dir.display()));
        }
    }
    let r = res?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&r))?);
    } else {
        print!("{}", to_text(&r));
    }
    Ok(0)
}

async fn bench(args: &BenchArgs, dirs: Dirs, oci: &str) -> Result<Results> {
    let exe = std::env::current_exe()?;
    build_rootfs(&args.busybox, &dirs.rootfs)?;
    let engine = Engine::open(Config {
        state_dir: dirs.state.clone(),
        oci: OciRuntime::parse(oci),
        exe: exe.clone(),
        owned_may_have_privileges: false,
        network: Default::default(),
        default_egress: warren_engine::network::allow_all(),
    })
    .await?;
    progress("importing the busybox root filesystem");
    let images = engine.images().clone();
    let rootfs = dirs.rootfs.clone();
    let image = tokio::task::spawn_blocking(move || {
        images.import_rootfs(&rootfs, IMAGE, None)?;
        images.resolve(IMAGE)
    })
    .await??;
    let runtime = Arc::new(LinuxRuntime::new(
        &dirs.state.join("bench/rt-workspaces"),
        OciRuntime::parse(oci),
        &exe,
    ));
    let ctx = Ctx {
        engine,
        runtime,
        layers: image.layer_dirs.clone(),
        dirs,
        exe,
        rt_ids: Default::default(),
    };
    let res = measure(args, &ctx, oci).await;
    cleanup(&ctx).await;
    res
}

/// Deletes whatever the bench may have left running (after an error).
async fn cleanup(ctx: &Ctx) {
    if let Ok(list) = ctx.engine.list().await {
        for w in list {
            let _ = ctx.engine.delete(w.name.as_str(), true).await;
        }
    }
    let ids: Vec<String> = ctx.rt_ids.lock().expect("lock").drain(..).collect();
    for id in ids {
        let _ = ctx.runtime.destroy(&id);
    }
    if !ctx.dirs.owned {
        let _ = ctx.engine.remove_image(IMAGE).await;
        let _ = std::fs::remove_dir_all(ctx.dirs.state.join("bench"));
    }
}

async fn measure(args: &BenchArgs, ctx: &Ctx, oci: &str) -> Result<Results> {
    let n = args.count;
    let mut baseline_errors = Vec::new();
    let mut bwrap_ok = true;
    let mut runc_ok = true;
    if let Err(e) = bwrap_once(&ctx.dirs.rootfs) {
        baseline_errors.push(format!("bwrap baseline skipped: {e:#}"));
        bwrap_ok = false;
    }
    if let Err(e) = make_runc_bundle(&ctx.dirs).and_then(|_| runc_once(&ctx.dirs, "wbwarm")) {
        baseline_errors.push(format!("runc baseline skipped: {e:#}"));
        runc_ok = false;
    }
    for e in &baseline_errors {
        progress(e);
    }
    let pid = std::process::id();
    let mut projects = Vec::new();
    for i in 0..n + 2 {
        let name = format!("bl{i:04}");
        projects.push((make_project(&ctx.dirs.projects, &name)?, name));
    }

    // Two warm-up rounds (not recorded), then `n` rounds. Each round runs every path once, rotating
    // which goes first, so that load drifting on a shared machine hits every path alike.
    let mut series = Series::default();
    progress(&format!("latency: {n} rounds (+2 warm-up)"));
    for (round, (project, name)) in projects.iter().enumerate() {
        let mut s = Series::default();
        for k in 0..5 {
            match (round + k) % 5 {
                0 if bwrap_ok => s.push("bwrap", ms(bwrap_once(&ctx.dirs.rootfs)?)),
                1 if runc_ok => s.push(
                    "runc",
                    ms(runc_once(&ctx.dirs, &format!("wb{pid}c{round}"))?),
                ),
                2 => runtime_once(ctx, &format!("wb{pid}r{round}"), &mut s)?,
                3 => engine_once(ctx, project, name, &mut s).await?,
                4 => pieces_once(ctx, project, &mut s).await?,
                _ => {}
            }
        }
        if round >= 2 {
            for (i, name) in s.names.iter().enumerate() {
                for v in &s.samples[i] {
                    series.push(name, *v);
                }
            }
        }
        if (round + 1) % 10 == 0 || round + 1 == n + 2 {
            progress(&format!("  round {}/{}", round + 1, n + 2));
        }
    }

    let density = if args.density > 0 {
        progress(&format!(
            "density: starting {} idle workspaces ({} at a time)",
            args.density, args.parallel
        ));
        Some(density(ctx, args.density, args.parallel).await?)
    } else {
        None
    };
    Ok(Results {
        count: n,
        oci: oci.to_string(),
        series,
        baseline_errors,
        density,
        state_dir: ctx.dirs.state.clone(),
    })
}

// ---------------------------------------------------------------------------------------------------
// Output

/// Rows of the main latency table: (key, label).
const MAIN_ROWS: &[(&str, &str)] = &[
    ("eng.first_exec", "warren: create→first exec"),
    ("eng.total", "warren: create→first exec→delete"),
    ("rt.first_exec", "runtime only: create→first exec"),
    ("rt.total", "runtime only: create→first exec→destroy"),
    ("bwrap", "bwrap --unshare-all /bin/true"),
    ("runc", "runc run /bin/true"),
];

/// Rows of the phase breakdown.
const PHASE_ROWS: &[(&str, &str)] = &[
    ("eng.up", "Engine::up (DB + runtime.create + start)"),
    ("eng.exec", "Engine::exec until started"),
    ("eng.wait", "exec'd `true` until its exit"),
    ("eng.delete", "Engine::delete(force)"),
    ("rt.create", "runtime.create (dirs, config.json)"),
    ("rt.start", "runtime.start (supervisor spawn→ready)"),
    ("rt.exec", "runtime.exec until started"),
    ("rt.wait", "runtime: `true` until its exit"),
    ("rt.destroy", "runtime.destroy"),
    ("cp.devcontainer_load", "devcontainer.json load"),
    ("cp.image_resolve", "image resolve"),
    ("cp.store_list", "store read (Engine::list)"),
    ("cp.exe_version", "exec of `warren --version`"),
];

fn ratio(a: Option<Summary>, b: Option<Summary>) -> Option<f64> {
    Some(a?.p50 / b?.p50)
}

fn targets(r: &Results) -> Vec<(String, String, Option<bool>)> {
    let first = r.series.get("eng.first_exec");
    let vs_bwrap = ratio(first, r.series.get("bwrap"));
    let mut t = vec![
        (
            format!("create→first exec p50 ≤ {TARGET_FIRST_EXEC_MS} ms"),
            first.map_or("n/a".into(), |s| format!("{:.1} ms", s.p50)),
            first.map(|s| s.p50 <= TARGET_FIRST_EXEC_MS),
        ),
        (
            format!("create→first exec p50 ≤ {TARGET_VS_BWRAP}× bwrap"),
            vs_bwrap.map_or("n/a".into(), |x| format!("{x:.2}×")),
            vs_bwrap.map(|x| x <= TARGET_VS_BWRAP),
        ),
    ];
    if let Some(d) = &r.density {
        t.push((
            format!("memory per idle workspace ≤ {TARGET_MIB_PER_WS} MiB"),
            format!("{:.2} MiB", d.per_ws_mib()),
            Some(d.per_ws_mib() <= TARGET_MIB_PER_WS),
        ));
    }
    t
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "n/a",
    }
}

fn to_text(r: &Results) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nLatency: {} sequential workspaces, oci runtime {} (times in ms)\n",
        r.count, r.oci
    );
    let _ = writeln!(
        o,
        "{:<42} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "path", "p50", "p99", "mean", "min", "max"
    );
    let row = |o: &mut String, key: &str, label: &str| {
        if let Some(s) = r.series.get(key) {
            let _ = writeln!(
                o,
                "{:<42} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                label, s.p50, s.p99, s.mean, s.min, s.max
            );
        }
    };
    for (k, l) in MAIN_ROWS {
        row(&mut o, k, l);
    }
    let _ = writeln!(o, "\nRatios of p50 (same run)\n");
    let g = |k: &str| r.series.get(k);
    for (label, a, b) in [
        (
            "warren create→first exec / bwrap",
            "eng.first_exec",
            "bwrap",
        ),
        ("warren create→first exec / runc", "eng.first_exec", "runc"),
        ("warren create→exec→delete / bwrap", "eng.total", "bwrap"),
        ("warren create→exec→delete / runc", "eng.total", "runc"),
        (
            "runtime-only create→first exec / runc",
            "rt.first_exec",
            "runc",
        ),
        (
            "warren / runtime-only (create→first exec)",
            "eng.first_exec",
            "rt.first_exec",
        ),
    ] {
        if let Some(x) = ratio(g(a), g(b)) {
            let _ = writeln!(o, "{label:<42} {x:>9.2}×");
        }
    }
    let _ = writeln!(o, "\nPhases (ms)\n");
    let _ = writeln!(o, "{:<42} {:>9} {:>9} {:>9}", "phase", "p50", "p99", "mean");
    for (k, l) in PHASE_ROWS {
        if let Some(s) = r.series.get(k) {
            let _ = writeln!(o, "{:<42} {:>9.2} {:>9.2} {:>9.2}", l, s.p50, s.p99, s.mean);
        }
    }
    if let (Some(e), Some(rt)) = (g("eng.first_exec"), g("rt.first_exec")) {
        let _ = writeln!(
            o,
            "{:<42} {:>9.2}",
            "control-plane overhead (p50 difference)",
            e.p50 - rt.p50
        );
    }
    if let Some(d) = &r.density {
        let _ = writeln!(
            o,
            "\nDensity: {} idle workspaces requested, {} started in {:.0} ms, {} supervisors found",
            d.m, d.started, d.start_wall_ms, d.supervisors
        );
        let mib = |k: u64| k as f64 / 1024.0;
        let per = |k: u64| {
            if d.supervisors == 0 {
                f64::NAN
            } else {
                k as f64 / 1024.0 / d.supervisors as f64
            }
        };
        let _ = writeln!(o, "{:<42} {:>11} {:>15}", "", "total MiB", "per workspace");
        let _ = writeln!(
            o,
            "{:<42} {:>11.2} {:>11.3} MiB",
            "supervisors PSS",
            mib(d.sup_pss_kib),
            per(d.sup_pss_kib)
        );
        let _ = writeln!(
            o,
            "{:<42} {:>11.2} {:>11.3} MiB",
            "control plane (bench process) PSS",
            mib(d.cp_pss_kib),
            per(d.cp_pss_kib)
        );
        let _ = writeln!(
            o,
            "{:<42} {:>11.2} {:>11.3} MiB",
            "Warren total (PSS)",
            d.total_kib() / 1024.0,
            d.per_ws_mib()
        );
        let _ = writeln!(
            o,
            "{:<42} {:>11.2} {:>11.3} MiB",
            "(for reference) supervisors RSS",
            mib(d.sup_rss_kib),
            per(d.sup_rss_kib)
        );
        let _ = writeln!(
            o,
            "{:<42} {:>11.0} ms",
            "deleting them all", d.delete_wall_ms
        );
    }
    let _ = writeln!(o, "\nTargets\n");
    for (what, got, ok) in targets(r) {
        let _ = writeln!(o, "{what:<42} {got:>11}   {}", verdict(ok));
    }
    for e in &r.baseline_errors {
        let _ = writeln!(o, "note: {e}");
    }
    o
}

fn to_json(r: &Results) -> Value {
    let mut series = serde_json::Map::new();
    for name in &r.series.names {
        if let Some(s) = r.series.get(name) {
            series.insert((*name).to_string(), s.json());
        }
    }
    let g = |k: &str| r.series.get(k);
    let ratios = json!({
        "first_exec_vs_bwrap": ratio(g("eng.first_exec"), g("bwrap")),
        "first_exec_vs_runc": ratio(g("eng.first_exec"), g("runc")),
        "total_vs_bwrap": ratio(g("eng.total"), g("bwrap")),
        "total_vs_runc": ratio(g("eng.total"), g("runc")),
        "engine_vs_runtime_first_exec": ratio(g("eng.first_exec"), g("rt.first_exec")),
    });
    let density = r.density.as_ref().map(|d| {
        json!({
            "requested": d.m, "started": d.started, "supervisors": d.supervisors,
            "start_wall_ms": r3(d.start_wall_ms), "delete_wall_ms": r3(d.delete_wall_ms),
            "supervisors_pss_kib": d.sup_pss_kib, "supervisors_rss_kib": d.sup_rss_kib,
            "control_plane_pss_kib": d.cp_pss_kib, "control_plane_rss_kib": d.cp_rss_kib,
            "total_pss_kib": d.total_kib(), "per_workspace_mib": r3(d.per_ws_mib()),
        })
    });
    let targets: Vec<Value> = targets(r)
        .into_iter()
        .map(|(what, got, ok)| json!({ "target": what, "result": got, "met": ok }))
        .collect();
    json!({
        "count": r.count, "oci_runtime": r.oci, "state_dir": r.state_dir,
        "latency_ms": series, "ratios_p50": ratios, "density": density, "targets": targets,
        "notes": r.baseline_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert!((percentile(&v, 50.0) - 50.5).abs() < 1e-9);
        assert!((percentile(&v, 99.0) - 99.01).abs() < 1e-9);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), 2.5);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
        let s = Summary::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.p50, s.mean, s.min, s.max), (2.0, 2.0, 1.0, 3.0));
    }

    #[test]
    fn smaps_rollup_pss_and_rss_are_read() {
        let s = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:    2048 kB\nPss:    1024 kB\nPss_Anon:  512 kB\n";
        assert_eq!(parse_rollup(s), Some((1024, 2048)));
        assert_eq!(parse_rollup("nothing"), None);
    }
}
