//! `warren bench --build`: Warren's Dockerfile builder on a small Dockerfile (COPY + RUN + ENV on
//! the bench's busybox image). Each round runs, in rotating order: a cold build (`no_cache`, one
//! build sandbox), an unchanged rebuild (all from the cache, no sandbox), and a baseline `runc
//! run` of the RUN step's command on the same root filesystem. Medians and ratios of the same run.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use warren_build::{BuildRequest, Network};
use warren_image::ImageStore;
use warren_runtime::{LinuxRuntime, OciRuntime};

use super::{build_rootfs, ms, progress, run_quiet, Dirs, Summary, IMAGE};

/// Target: an unchanged rebuild's median, in milliseconds.
const TARGET_REBUILD_MS: f64 = 100.0;

const RUN_CMD: &str = "cat /app/app.txt /etc/passwd > /app/out && echo built";

fn dockerfile() -> String {
    format!("FROM {IMAGE}\nCOPY app.txt /app/app.txt\nRUN {RUN_CMD}\nENV BUILT=1\n")
}

/// A runc bundle running the RUN step's command (writing to the rootfs's /tmp instead of /app).
fn runc_bundle(d: &Dirs, bundle: &Path) -> Result<()> {
    std::fs::create_dir_all(bundle)?;
    let st = Command::new("runc")
        .arg("spec")
        .arg("--bundle")
        .arg(bundle)
        .status()
        .context("run `runc spec`")?;
    if !st.success() {
        bail!("runc spec: {st}");
    }
    let path = bundle.join("config.json");
    let mut cfg: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    cfg["root"]["path"] = json!(d.rootfs);
    cfg["root"]["readonly"] = json!(false);
    cfg["process"]["terminal"] = json!(false);
    cfg["process"]["args"] = json!([
        "/bin/sh",
        "-c",
        "cat /etc/passwd /etc/group > /tmp/bench-out && echo built"
    ]);
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg)?)?;
    Ok(())
}

/// Runs the build benchmark; prints text or JSON.
pub(super) async fn run(
    d: &Dirs,
    busybox: &Path,
    rounds: usize,
    oci: &str,
    as_json: bool,
) -> Result<u8> {
    build_rootfs(busybox, &d.rootfs)?;
    let images = ImageStore::open(&d.state.join("images"))?;
    progress("importing the busybox root filesystem");
    images.import_rootfs(&d.rootfs, IMAGE, None)?;
    let exe = std::env::current_exe()?;
    let work = d.state.join("bench/builds");
    let rt =
        LinuxRuntime::new(&work.join("sandboxes"), OciRuntime::parse(oci), &exe).without_tools();
    let ctx = d.state.join("bench/build-context");
    std::fs::create_dir_all(&ctx)?;
    std::fs::write(ctx.join("app.txt"), "the bench's build context\n")?;
    let bundle = d.state.join("bench/runc-build-bundle");
    let runc_ok = match runc_bundle(d, &bundle) {
        Ok(()) => true,
        Err(e) => {
            progress(&format!("runc baseline skipped: {e:#}"));
            false
        }
    };
    let req = |no_cache: bool| BuildRequest {
        dockerfile: dockerfile(),
        dockerfile_path: ctx.join("Dockerfile"),
        context_dir: ctx.clone(),
        build_args: Default::default(),
        target: None,
        tag: "warren-bench-build:latest".into(),
        network: Network::Isolated,
        no_cache,
        labels: Default::default(),
        public_fetches_only: false,
    };
    let build = |no_cache: bool| -> Result<(f64, warren_build::BuiltImage)> {
        let t = Instant::now();
        let b = warren_build::build(&images, &rt, &work, &req(no_cache), &mut std::io::sink())
            .map_err(|e| anyhow::anyhow!("build: {e}"))?;
        Ok((ms(t.elapsed()), b))
    };
    let pid = std::process::id();
    let (mut cold, mut warm, mut runc) = (Vec::new(), Vec::new(), Vec::new());
    progress(&format!("build: {rounds} rounds (+1 warm-up)"));
    for round in 0..rounds + 1 {
        let mut r = (None, None, None);
        for k in 0..3 {
            match (round + k) % 3 {
                0 => {
                    let (t, b) = build(true)?;
                    if b.sandboxes_started != 1 {
                        bail!("a cold build started {} sandboxes", b.sandboxes_started);
                    }
                    r.0 = Some(t);
                }
                1 => {
                    // Make sure the cache holds this round's layers, then time the rebuild.
                    build(false)?;
                    let (t, b) = build(false)?;
                    if b.sandboxes_started != 0 || b.cached_steps != b.layer_steps {
                        bail!("an unchanged rebuild was not fully cached: {b:?}");
                    }
                    r.1 = Some(t);
                }
                _ if runc_ok => {
                    let t = run_quiet(
                        Command::new("runc")
                            .arg("--root")
                            .arg(&d.runc_root)
                            .arg("run")
                            .arg("-b")
                            .arg(&bundle)
                            .arg(format!("wbb{pid}-{round}")),
                    )?;
                    r.2 = Some(ms(t));
                }
                _ => {}
            }
        }
        if round >= 1 {
            cold.extend(r.0);
            warm.extend(r.1);
            runc.extend(r.2);
        }
    }
    let (c, w) = (Summary::of(&cold), Summary::of(&warm));
    let rc = (!runc.is_empty()).then(|| Summary::of(&runc));
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "dockerfile": dockerfile(),
                "rounds": rounds,
                "cold_build": c.json(),
                "unchanged_rebuild": w.json(),
                "runc_run": rc.map(|s| s.json()),
                "ratios": {
                    "cold_build_vs_runc": rc.map(|r| c.p50 / r.p50),
                    "rebuild_vs_runc": rc.map(|r| w.p50 / r.p50),
                    "cold_vs_rebuild": c.p50 / w.p50,
                },
                "target_rebuild_ms": TARGET_REBUILD_MS,
            }))?
        );
        return Ok(0);
    }
    println!("Build: {rounds} rounds, oci runtime {oci} (times in ms)\n");
    println!("Dockerfile:\n{}", dockerfile());
    println!(
        "{:<44}{:>10}{:>10}{:>10}{:>10}",
        "path", "median", "p99", "min", "max"
    );
    let row = |name: &str, s: &Summary| {
        println!(
            "{name:<44}{:>10.2}{:>10.2}{:>10.2}{:>10.2}",
            s.p50, s.p99, s.min, s.max
        )
    };
    row("cold build (--no-cache, 1 RUN sandbox)", &c);
    row("unchanged rebuild (cache, no sandbox)", &w);
    if let Some(r) = &rc {
        row("runc run of the RUN command", r);
    }
    println!("\nRatios of medians (same run)\n");
    if let Some(r) = &rc {
        println!("{:<44}{:>9.2}×", "cold build / runc run", c.p50 / r.p50);
        println!(
            "{:<44}{:>9.2}×",
            "unchanged rebuild / runc run",
            w.p50 / r.p50
        );
    }
    println!(
        "{:<44}{:>9.2}×",
        "cold build / unchanged rebuild",
        c.p50 / w.p50
    );
    println!(
        "\nTarget: unchanged rebuild ≤ {TARGET_REBUILD_MS} ms: {} ({:.2} ms)",
        if w.p50 <= TARGET_REBUILD_MS {
            "met"
        } else {
            "NOT met"
        },
        w.p50
    );
    Ok(0)
}
