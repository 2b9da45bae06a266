//! `warren bench --policy`: the lifecycle-policy reconciler (the governor) over a fleet of
//! workspace records.
//!
//! Opens a server's state (store, engine, governor) on a private directory, records N
//! workspaces through the store (a mix of running, stopped and failed ones, with their runs,
//! activity and several own policies: idle timeout, autostop, TTL, dormancy, autostart schedules,
//! failure cleanup; none of them due; all priced, under a default budget that a pass checks),
//! so a pass evaluates everything and acts on nothing), then
//! times governor passes: the first (which reads every record), steady ones, and ones after 1%
//! of the records changed. The baseline of the same run is what a pass would cost if it read
//! every record each time: `Store::policy_rows` alone. Reports the median and p99 pass, the ratio to the baseline, and
//! the CPU share a pass every second would take (process CPU time over the passes, from
//! `/proc/self/stat`).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;
use warren_api::{Event, WorkspaceName};
use warren_store::{NewWorkspace, Ownership};

use super::{ms, progress, r3, Summary};

/// Process CPU time (user + system) in seconds, from `/proc/self/stat` (USER_HZ ticks).
fn cpu_seconds() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable /proc/self/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let ticks: u64 = f.get(11).context("no utime")?.parse::<u64>()?
        + f.get(12).context("no stime")?.parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// The own policies the records cycle through.
fn policies() -> Vec<serde_json::Value> {
    vec![
        json!({"idle_timeout": "8h"}),
        json!({"idle_timeout": "2h", "autostop": "12h"}),
        json!({"ttl": "30d", "dormancy": "30d"}),
        json!({"autostart": {"schedule": "0 9 * * 1-5", "timezone": "Europe/Berlin"}, "dormancy": "14d"}),
        json!({"autostop": "10h", "ttl": "90d"}),
        json!({"autostart": {"schedule": "30 7 * * *", "timezone": "America/New_York"}}),
        json!({}),
    ]
}

async fn seed(store: &warren_store::Store, n: usize, owner: &str, org: &str) -> Result<()> {
    let policies = policies();
    let mut activity = Vec::new();
    for i in 0..n {
        let p = &policies[i % policies.len()];
        let rec = store
            .create_workspace(NewWorkspace {
                name: WorkspaceName::new(format!("ws{i:05}"))?,
                project_dir: format!("/nonexistent/bench/{i}"),
                config_path: format!("/nonexistent/bench/{i}/.devcontainer.json"),
                image: "busybox".into(),
                spec_json: "{}".into(),
                ownership: Ownership {
                    owner_id: owner.to_owned(),
                    org_id: org.to_owned(),
                    parameters_json: "{}".into(),
                    policy_json: (p != &json!({})).then(|| p.to_string()),
                    cost_json: Some(
                        r#"{"running_per_hour": 1.0, "stopped_per_hour": 0.01}"#.into(),
                    ),
                    ..Default::default()
                },
            })
            .await?;
        // Half running, four tenths stopped, a tenth failed.
        let steps: &[Event] = match i % 10 {
            0..=4 => &[Event::Start, Event::Started],
            5..=8 => &[Event::Start, Event::Started, Event::Stop, Event::Stopped],
            _ => &[Event::Start, Event::Fail],
        };
        let mut generation = rec.generation;
        for e in steps {
            generation = store
                .apply(&rec.id, generation, *e, None)
                .await?
                .0
                .generation;
        }
        if i % 10 <= 4 {
            activity.push((rec.id.clone(), "ssh".to_owned(), store.now()));
        }
        if i % 1000 == 999 {
            progress(&format!("recorded {} workspaces", i + 1));
        }
    }
    store.record_activity(&activity).await?;
    // A default budget every owner is under, so each pass also checks budgets (and never
    // stops anything).
    store
        .put_quota(&warren_store::QuotaRecord {
            subject_kind: "default".into(),
            subject_id: String::new(),
            max_workspaces: None,
            max_cpus: None,
            max_memory_mb: None,
            budget: Some(1e12),
            budget_period: "month".into(),
            on_exhausted: "stop".into(),
            updated_by: None,
            updated_at: store.now(),
        })
        .await?;
    Ok(())
}

/// Runs the benchmark over `n` records with `passes` timed passes.
pub async fn run(state: &Path, exe: &Path, n: usize, passes: usize, json_out: bool) -> Result<u8> {
    let cfg = warren_server::config::ServerConfig::resolve(warren_server::config::ConfigLayer {
        listen: Some("127.0.0.1:0".into()),
        state_dir: Some(state.join("policy-bench")),
        ssh_listen: Some("off".into()),
        ..Default::default()
    })
    .map_err(anyhow::Error::msg)?;
    let app = warren_server::serve::open(cfg, exe.to_path_buf())
        .await
        .map_err(anyhow::Error::msg)?;
    warren_server::serve::init_admin(&app, "admin")
        .await
        .map_err(anyhow::Error::msg)?;
    let admin = app
        .store
        .user_by_name("admin")
        .await?
        .context("no admin user")?;
    progress(&format!("recording {n} workspaces"));
    seed(&app.store, n, &admin.id, &app.org.id).await?;
    // The first pass after a start reads every record.
    let t = Instant::now();
    let first = warren_server::governor::pass(&app).await;
    let cold = ms(t.elapsed());
    if first.evaluated != n {
        bail!(
            "the first pass evaluated {} of {n} workspaces",
            first.evaluated
        );
    }
    // Warm up (the policy and schedule caches fill, SQLite's pages are read).
    for _ in 0..3 {
        let r = warren_server::governor::pass(&app).await;
        if r.evaluated != n || !r.acted.is_empty() || !r.errors.is_empty() {
            bail!(
                "a warm-up pass evaluated {} of {n} workspaces, acted on {} and failed on {}: {:?}",
                r.evaluated,
                r.acted.len(),
                r.errors.len(),
                r.errors.first()
            );
        }
    }
    progress(&format!(
        "timing {passes} passes and {passes} baseline reads"
    ));
    let mut base = Vec::with_capacity(passes);
    for _ in 0..passes {
        let t = Instant::now();
        let rows = app.store.policy_rows().await?;
        base.push(ms(t.elapsed()));
        assert_eq!(rows.len(), n);
    }
    let cpu0 = cpu_seconds()?;
    let mut times = Vec::with_capacity(passes);
    for _ in 0..passes {
        let t = Instant::now();
        let r = warren_server::governor::pass(&app).await;
        times.push(ms(t.elapsed()));
        if r.evaluated != n {
            bail!("a pass evaluated {} of {n} workspaces", r.evaluated);
        }
    }
    let cpu = cpu_seconds()? - cpu0;
    // With churn: 1% of the workspaces changed (their deadline moved) before each pass.
    let ids: Vec<String> = app
        .store
        .policy_rows()
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    let deadline = warren_store::format_time(
        app.store.now_time() + std::time::Duration::from_secs(365 * 86_400),
    );
    let mut churned = Vec::with_capacity(passes);
    for p in 0..passes {
        for id in ids.iter().skip(p * 7).step_by(100).take(n / 100) {
            app.store.set_deadline(id, Some(&deadline)).await?;
        }
        let t = Instant::now();
        let r = warren_server::governor::pass(&app).await;
        churned.push(ms(t.elapsed()));
        if r.evaluated != n || !r.acted.is_empty() {
            bail!(
                "a churned pass evaluated {} and acted on {}",
                r.evaluated,
                r.acted.len()
            );
        }
    }
    let churn = Summary::of(&churned);
    // The budget check a pass makes every 30 s (of the store's clock): timed on its own.
    let mut budget = Vec::with_capacity(passes);
    for _ in 0..passes.min(20) {
        let t = Instant::now();
        let r = warren_server::quota::budget_pass(&app, &[]).await;
        budget.push(ms(t.elapsed()));
        if !r.is_empty() {
            bail!("the budget check acted: {r:?}");
        }
    }
    let budget = Summary::of(&budget);
    let every = warren_server::governor::BUDGET_EVERY.as_secs_f64();
    let pass = Summary::of(&times);
    let read = Summary::of(&base);
    // A pass every second takes this share of one CPU, plus a budget check every 30 s.
    let share = cpu / passes as f64 * 100.0;
    app.store.close().await;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "workspaces": n,
                "first_pass_ms": r3(cold),
                "pass": pass.json(),
                "pass_with_1pct_churn": churn.json(),
                "budget_check": budget.json(),
                "budget_check_every_s": every,
                "baseline_policy_rows": read.json(),
                "ratio_p50": r3(pass.p50 / read.p50),
                "cpu_percent_at_1s": r3(share),
                "target_pass_ms": 20,
            }))?
        );
    } else {
        println!("Governor pass over {n} workspace records ({passes} passes, after 3 warm-up):");
        println!(
            "  pass                 p50 {:8.2} ms   p99 {:8.2} ms",
            pass.p50, pass.p99
        );
        println!(
            "  pass, 1% changed     p50 {:8.2} ms   p99 {:8.2} ms",
            churn.p50, churn.p99
        );
        println!(
            "  budget check         p50 {:8.2} ms   p99 {:8.2} ms   (every {every} s)",
            budget.p50, budget.p99
        );
        println!("  first pass (reads all records) {cold:8.2} ms");
        println!(
            "  baseline (read rows) p50 {:8.2} ms   p99 {:8.2} ms",
            read.p50, read.p99
        );
        println!("  ratio pass/baseline  {:.2}x (p50)", pass.p50 / read.p50);
        println!(
            "  CPU at a 1 s interval: {share:.1}% of one CPU, +{:.1}% for budget checks (target: a pass <= 20 ms)",
            budget.mean / every / 10.0
        );
    }
    Ok(0)
}
