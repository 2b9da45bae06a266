//! The governor: the one reconciler that applies lifecycle policies. It keeps an index of every
//! server workspace (a narrow row, its times parsed, its policy in force resolved) that each pass
//! brings up to date with what changed since the last one (`Store::policy_changes`, by change
//! sequence number, so a pass over a large fleet reads only what moved). Each pass then takes
//! the latest activity (kept in memory by `Activity`), the open sessions and the active jobs,
//! asks the pure [`warren_api::policy::evaluate`] what is due for every workspace, and carries
//! it out through the same jobs a user's request makes, with the reason recorded
//! (`Store::set_op`), so every stop says why.
//!
//! Idempotent and restart-safe by construction: a decision depends only on recorded facts and
//! the clock, an action re-reads the workspace and acts only if nothing changed since the pass
//! read it (its generation), the database allows one active job per workspace, and warnings
//! carry a dedupe key. A pass that runs twice, concurrently, or after a crash in the middle of a
//! stop, acts once. Time comes from the store's clock, so tests drive it forward.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use warren_api::policy::{self, Effective, Evaluation, Facts, Reason, Verdict, WorkspacePolicy};
use warren_api::schedule::Schedule;
use warren_api::template::{format_duration, PolicyDefaults};
use warren_api::WorkspaceState;
use warren_store::clock::parse_time;
use warren_store::{NewEvent, PolicyRow};

use crate::app::AppState;
use crate::error::tracing_log;

/// How often (in the store clock's time) a pass also checks budgets: spending moves by the hour,
/// and every start is checked exactly at admission anyway.
pub const BUDGET_EVERY: Duration = Duration::from_secs(30);

/// Job kinds whose running time `start_timeout` limits.
const STARTING_JOBS: [&str; 4] = ["create", "start", "restart", "update"];

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PassReport {
    /// Workspaces evaluated.
    pub evaluated: usize,
    /// Actions started (workspace name, what).
    pub acted: Vec<(String, Verdict)>,
    /// Warnings recorded (workspace name, what is coming).
    pub warned: Vec<(String, Verdict)>,
    /// Workspaces whose policy could not be applied, with why.
    pub errors: Vec<(String, String)>,
    /// What the budget pass did (subject, `warning` | `exhausted` | `stopped NAME` | `error: ...`).
    pub budget: Vec<(String, String)>,
}

/// A CPU sample of a workspace: its cgroup's CPU time and when it was read.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    cpu_ns: u64,
    at: Instant,
    busy: Option<bool>,
}

/// What a pass knows of one workspace between passes.
struct Entry {
    row: PolicyRow,
    policy: Resolved,
    created_at: OffsetDateTime,
    started_at: Option<OffsetDateTime>,
    stopped_at: Option<OffsetDateTime>,
    deadline_at: Option<OffsetDateTime>,
}

/// Every server workspace, as of change sequence number `seq`.
#[derive(Default)]
struct Index {
    seq: Option<i64>,
    entries: HashMap<String, Entry>,
}

impl Entry {
    fn new(row: PolicyRow, policy: Resolved, now: OffsetDateTime) -> Entry {
        Entry {
            created_at: parse_time(&row.created_at).unwrap_or(now),
            started_at: time_of(&row.started_at),
            stopped_at: time_of(&row.stopped_at),
            deadline_at: time_of(&row.deadline_at),
            row,
            policy,
        }
    }
}

/// A workspace's policy in force, and why its own values were set aside, if they were.
pub type Resolved = Arc<(Effective, Option<String>)>;

/// (template version id, the workspace's own policy JSON).
type PolicyKey = (Option<String>, Option<String>);

/// The governor's caches and the lock that keeps its passes one at a time in this process.
#[derive(Default)]
pub struct Governor {
    /// The index of workspaces; its lock keeps passes one at a time.
    index: tokio::sync::Mutex<Index>,
    /// Template version id -> its policy (versions are immutable).
    templates: Mutex<HashMap<String, Arc<PolicyDefaults>>>,
    /// (template version, the workspace's own JSON) -> the policy in force.
    effective: Mutex<HashMap<PolicyKey, Resolved>>,
    /// (cron, time zone) -> parsed schedule.
    schedules: Mutex<HashMap<(String, String), Option<Schedule>>>,
    /// Workspace id -> its last CPU sample.
    cpu: Mutex<HashMap<String, CpuSample>>,
    /// When budgets were last checked.
    last_budget: Mutex<Option<OffsetDateTime>>,
    /// Problems already reported (workspace id, what), so the log says each once.
    reported: Mutex<HashSet<(String, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Governor {
    async fn template(
        &self,
        state: &AppState,
        version_id: &str,
    ) -> Result<Arc<PolicyDefaults>, warren_store::StoreError> {
        if let Some(p) = lock(&self.templates).get(version_id) {
            return Ok(p.clone());
        }
        let policy: PolicyDefaults = state
            .store
            .version(version_id)
            .await?
            .and_then(|v| serde_json::from_str(&v.policy_json).ok())
            .unwrap_or_default();
        let policy = Arc::new(policy);
        lock(&self.templates).insert(version_id.to_owned(), policy.clone());
        Ok(policy)
    }

    /// The policy in force for a workspace made from `version_id` with its own values `own`,
    /// and why its own values were set aside, if they were. Own values the template no longer
    /// allows (its ceilings were lowered in a later version) or that cannot be read give way to
    /// the template's: a workspace never escapes its template's policy.
    pub async fn effective(
        &self,
        state: &AppState,
        version_id: Option<&str>,
        own: Option<&str>,
    ) -> Result<Resolved, warren_store::StoreError> {
        let key = (version_id.map(str::to_owned), own.map(str::to_owned));
        if let Some(e) = lock(&self.effective).get(&key) {
            return Ok(e.clone());
        }
        let template = match version_id {
            Some(v) => Some(self.template(state, v).await?),
            None => None,
        };
        let own_parsed = own
            .map(serde_json::from_str::<WorkspacePolicy>)
            .transpose()
            .map_err(|e| format!("the workspace's policy cannot be read: {e}"));
        let resolved = own_parsed.and_then(|o| policy::resolve(template.as_deref(), o.as_ref()));
        let e = Arc::new(match resolved {
            Ok(e) => (e, None),
            Err(why) => {
                // The template's own policy was checked when it was published.
                let fallback = policy::resolve(template.as_deref(), None).unwrap_or_default();
                (
                    fallback,
                    Some(format!("its own policy values are ignored: {why}")),
                )
            }
        });
        let mut cache = lock(&self.effective);
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(key, e.clone());
        Ok(e)
    }

    /// The latest occurrence of a schedule at or before `at` (schedules parsed once).
    pub(crate) fn last_occurrence(
        &self,
        cron: &str,
        tz: &str,
        at: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let key = (cron.to_owned(), tz.to_owned());
        lock(&self.schedules)
            .entry(key)
            .or_insert_with(|| Schedule::parse(cron, tz).ok())
            .as_ref()?
            .last_at_or_before(at)
    }

    /// Whether a running workspace's CPU use since the last sample is above `threshold` percent
    /// of one CPU; `None` when it cannot tell yet (the first sample), which the caller treats
    /// as busy, so a workspace is never stopped for idleness before its CPU use was measured.
    fn busy(&self, state: &AppState, id: &str, threshold: f64) -> Option<bool> {
        let Some(cpu_ns) = state.engine.cpu_ns(id) else {
            return Some(false);
        };
        let now = Instant::now();
        let mut samples = lock(&self.cpu);
        let busy = match samples.get(id) {
            Some(prev) => {
                let wall = now.duration_since(prev.at).as_nanos() as f64;
                if wall < 200_000_000.0 {
                    // Too close to the last sample to measure: keep its verdict.
                    return prev.busy;
                }
                let used = cpu_ns.saturating_sub(prev.cpu_ns) as f64;
                Some(used / wall * 100.0 > threshold)
            }
            None => None,
        };
        samples.insert(
            id.to_owned(),
            CpuSample {
                cpu_ns,
                at: now,
                busy,
            },
        );
        busy
    }
}

impl Governor {
    /// The facts [`policy::evaluate`] decides on, from what a pass (or a status request)
    /// gathered about one workspace.
    fn facts(
        &self,
        now: OffsetDateTime,
        e: &Entry,
        last_activity: Option<&str>,
        open_sessions: bool,
        busy_cpu: bool,
        job: Option<&warren_store::JobRecord>,
    ) -> Facts {
        let autostart_occurrence = match (&e.policy.0.autostart, e.row.state) {
            (Some(a), WorkspaceState::Stopped) => {
                self.last_occurrence(&a.schedule, &a.timezone, now)
            }
            _ => None,
        };
        Facts {
            now,
            state: e.row.state,
            created_at: e.created_at,
            started_at: e.started_at,
            stopped_at: e.stopped_at,
            deadline_at: e.deadline_at,
            last_activity: last_activity.and_then(parse_time),
            open_sessions,
            busy_cpu,
            starting_since: job
                .filter(|j| STARTING_JOBS.contains(&j.kind.as_str()))
                .map(|j| j.started_at.as_ref().unwrap_or(&j.created_at))
                .and_then(|t| parse_time(t)),
            autostart_occurrence,
        }
    }
}

/// A workspace's policy as it stands: the policy in force (and why its own values were set
/// aside, if they were), the facts, and what is due or coming. Reads the last CPU verdict
/// rather than sampling.
pub(crate) async fn assess(
    state: &AppState,
    rec: &warren_store::WorkspaceRecord,
) -> Result<(Resolved, Facts, Evaluation), warren_store::StoreError> {
    let gov = &state.governor;
    let resolved = gov
        .effective(
            state,
            rec.ownership.template_version_id.as_deref(),
            rec.ownership.policy_json.as_deref(),
        )
        .await?;
    let now = state.store.now_time();
    let entry = Entry::new(PolicyRow::from(rec), resolved.clone(), now);
    let last = state.activity.last(&state.store, &rec.id).await?;
    let latest = last.values().max().cloned();
    let open = !state.activity.open_sessions(&rec.id).is_empty();
    let busy = lock(&gov.cpu)
        .get(&rec.id)
        .is_some_and(|s| s.busy == Some(true));
    let job = state.store.active_job(&rec.id).await?;
    let facts = gov.facts(now, &entry, latest.as_deref(), open, busy, job.as_ref());
    let ev = policy::evaluate(&resolved.0, &facts);
    Ok((resolved, facts, ev))
}

fn time_of(at: &Option<String>) -> Option<OffsetDateTime> {
    at.as_deref().and_then(parse_time)
}

/// The policy of the template version a workspace was made from (none without a template),
/// read once per version.
pub(crate) async fn template_policy(
    state: &AppState,
    rec: &warren_store::WorkspaceRecord,
) -> Result<Option<Arc<PolicyDefaults>>, warren_store::StoreError> {
    match &rec.ownership.template_version_id {
        Some(v) => Ok(Some(state.governor.template(state, v).await?)),
        None => Ok(None),
    }
}

/// The policy in force for a workspace (see [`Governor::effective`]).
pub(crate) async fn policy_for(
    state: &AppState,
    rec: &warren_store::WorkspaceRecord,
) -> Result<Effective, warren_store::StoreError> {
    let e = state
        .governor
        .effective(
            state,
            rec.ownership.template_version_id.as_deref(),
            rec.ownership.policy_json.as_deref(),
        )
        .await?;
    Ok(e.0.clone())
}

/// Brings the index up to date with what changed since the last pass.
async fn refresh(
    state: &AppState,
    index: &mut Index,
    report: &mut PassReport,
) -> Result<(), warren_store::StoreError> {
    let gov = &state.governor;
    let first = index.seq.is_none();
    let changes = state.store.policy_changes(index.seq.unwrap_or(-1)).await?;
    let now = state.store.now_time();
    for row in changes.rows {
        if row.state == WorkspaceState::Deleted {
            index.entries.remove(&row.id);
            continue;
        }
        let policy = gov
            .effective(
                state,
                row.template_version_id.as_deref(),
                row.policy_json.as_deref(),
            )
            .await?;
        if let Some(why) = &policy.1 {
            if lock(&gov.reported).insert((row.id.clone(), why.clone())) {
                report.errors.push((row.name.clone(), why.clone()));
            }
        }
        index
            .entries
            .insert(row.id.clone(), Entry::new(row, policy, now));
    }
    for id in &changes.removed {
        index.entries.remove(id);
        state.activity.forget(id);
    }
    if !changes.removed.is_empty() {
        state.store.prune_removals(changes.seq).await?;
    }
    if first {
        // Activity recorded before this process started.
        state
            .activity
            .seed_latest(state.store.last_activity_all().await?);
    }
    index.seq = Some(changes.seq);
    Ok(())
}

/// One pass over every server workspace.
pub async fn pass(state: &AppState) -> PassReport {
    let gov = state.governor.clone();
    let mut index = gov.index.lock().await;
    let mut report = PassReport::default();
    if let Err(e) = refresh(state, &mut index, &mut report).await {
        report.errors.push((String::new(), e.to_string()));
        return report;
    }
    let jobs = match state.store.active_jobs().await {
        Ok(j) => j,
        Err(e) => {
            report.errors.push((String::new(), e.to_string()));
            return report;
        }
    };
    let open = state.activity.with_open_sessions();
    let jobs: HashMap<&str, &warren_store::JobRecord> =
        jobs.iter().map(|j| (j.workspace_id.as_str(), j)).collect();
    let now = state.store.now_time();
    let mut seen_cpu = HashSet::new();
    // Decide for every workspace first (no awaiting while the activity map is read), then act.
    let mut due = Vec::new();
    let mut warnings = Vec::new();
    let mut busy_now = Vec::new();
    state.activity.with_latest(|latest| {
        for entry in index.entries.values() {
            report.evaluated += 1;
            let eff = &entry.policy.0;
            let id = entry.row.id.as_str();
            let job = jobs.get(id).copied();
            let busy_cpu = match (eff.cpu_threshold, entry.row.state) {
                (Some(t), WorkspaceState::Running) if eff.idle_timeout.is_some() => {
                    seen_cpu.insert(id.to_owned());
                    let busy = gov.busy(state, id, t);
                    if busy == Some(true) {
                        busy_now.push(id.to_owned());
                    }
                    busy.unwrap_or(true)
                }
                _ => false,
            };
            let last = latest.get(id).map(String::as_str);
            let facts = gov.facts(now, entry, last, open.contains(id), busy_cpu, job);
            let ev = policy::evaluate(eff, &facts);
            if let Some(verdict) = ev.due {
                // Another operation in progress goes first (a start timeout acts on it).
                if job.is_none() || matches!(verdict, Verdict::FailStart(_)) {
                    due.push((entry.row.clone(), verdict, job.cloned()));
                }
            } else if ev.warn {
                warnings.push((entry.row.clone(), ev));
            }
        }
    });
    for id in busy_now {
        state
            .activity
            .touch(&id, warren_api::activity::ActivityKind::Cpu);
    }
    for (row, verdict, job) in due {
        match act(state, &row, verdict, job.as_ref()).await {
            Ok(true) => report.acted.push((row.name.clone(), verdict)),
            Ok(false) => {}
            Err(e) => report.errors.push((row.name.clone(), e)),
        }
    }
    for (row, ev) in warnings {
        if let Some(w) = warn(state, &row, &ev, now).await {
            report.warned.push((row.name.clone(), w));
        }
    }
    // Forget CPU samples of workspaces no longer watched.
    lock(&gov.cpu).retain(|id, _| seen_cpu.contains(id));
    let budget_due = {
        let mut last = lock(&gov.last_budget);
        let due = last.is_none_or(|t| now < t || now - t >= BUDGET_EVERY);
        if due {
            *last = Some(now);
        }
        due
    };
    if budget_due {
        let running: Vec<&PolicyRow> = index
            .entries
            .values()
            .filter(|e| e.row.state == WorkspaceState::Running)
            .map(|e| &e.row)
            .collect();
        report.budget = crate::quota::budget_pass(state, &running).await;
    }
    report
}

/// Carries out a verdict, if the workspace is still as the pass saw it. `Ok(false)`: it changed
/// or another operation got there first; the next pass decides again.
pub(crate) async fn act(
    state: &AppState,
    row: &PolicyRow,
    verdict: Verdict,
    job: Option<&warren_store::JobRecord>,
) -> Result<bool, String> {
    use crate::routes::workspaces::{spawn_delete, spawn_start, spawn_stop};
    let Some(rec) = state.store.get(&row.id).await.map_err(|e| e.to_string())? else {
        return Ok(false);
    };
    // Anything changed since the pass read it (a state change, an extension, a policy edit):
    // the next pass decides again on what is true now.
    let seq = state
        .store
        .change_seq_of(&row.id)
        .await
        .map_err(|e| e.to_string())?;
    if rec.generation != row.generation || seq != Some(row.change_seq) {
        return Ok(false);
    }
    let spawned = match verdict {
        Verdict::Stop(r) => spawn_stop(state, &rec, None, r).await,
        Verdict::Delete(r) => spawn_delete(state, &rec, None, r).await,
        Verdict::Start(r) => {
            // A suspended (or removed) owner's workspaces are not started by schedule.
            let owner = state
                .store
                .user(&rec.ownership.owner_id)
                .await
                .map_err(|e| e.to_string())?;
            if owner.is_none_or(|u| u.suspended) {
                return Ok(false);
            }
            spawn_start(state, &rec, None, r).await
        }
        Verdict::FailStart(r) => {
            let Some(job) = job else { return Ok(false) };
            let by = format!("the start timeout ({})", r.as_str());
            return match crate::jobs::cancel(state, job, &by, Some(r)).await {
                Ok(_) => Ok(true),
                Err(_) => Ok(false),
            };
        }
    };
    match spawned {
        Ok(_) => Ok(true),
        // Someone else's job is active now (409), or the start is refused (quota): not ours to
        // force; a refusal is recorded as an event by whoever refused.
        Err(e) if e.status.is_client_error() => Ok(false),
        Err(e) => Err(e.body.message),
    }
}

/// Records the warning for what comes next, once per (workspace, what, when).
async fn warn(
    state: &AppState,
    row: &PolicyRow,
    ev: &Evaluation,
    now: OffsetDateTime,
) -> Option<Verdict> {
    let next = ev.next?;
    let (kind, verb, reason) = match next.verdict {
        Verdict::Stop(r) => ("workspace.stop_warning", "stop", r),
        Verdict::Delete(r) => ("workspace.delete_warning", "be deleted", r),
        _ => return None,
    };
    let left = (next.at - now).unsigned_abs();
    let left = Duration::from_secs(left.as_secs().max(1));
    let at = warren_store::format_time(next.at);
    let e = NewEvent {
        kind: kind.to_owned(),
        workspace_id: Some(row.id.clone()),
        workspace_name: Some(row.name.clone()),
        owner_id: Some(row.owner_id.clone()),
        team_id: row.team_id.clone(),
        reason: Some(reason.as_str().to_owned()),
        message: format!(
            "workspace `{}` will {verb} in {} ({}){}",
            row.name,
            format_duration(left),
            reason.as_str().replace('_', " "),
            hint(reason)
        ),
        data: serde_json::json!({ "at": at }),
        dedupe_key: Some(format!("{kind}:{}:{}:{at}", row.id, reason.as_str())),
        ..Default::default()
    };
    match state.store.insert_event(&e).await {
        Ok(Some(_)) => Some(next.verdict),
        Ok(None) => None,
        Err(err) => {
            tracing_log(&format!("governor: cannot record a warning: {err}"));
            None
        }
    }
}

/// What the owner can do about a coming stop or deletion.
fn hint(reason: Reason) -> &'static str {
    match reason {
        Reason::Idle => ": use it, or `warren keepalive`",
        Reason::Deadline => ": `warren extend` gives it more time",
        Reason::Dormancy => ": start it to keep it",
        _ => "",
    }
}

/// Runs passes every `interval` until the process ends.
pub async fn run(state: AppState, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if state.shutting_down() {
            return;
        }
        let t0 = Instant::now();
        let r = pass(&state).await;
        state.metrics.policy_pass(t0.elapsed(), &r);
        for (name, e) in &r.errors {
            tracing_log(&format!("policy: {name}: {e}"));
        }
    }
}
