//! Quotas, budgets and cost: what a user or team may run at once, what they may spend per
//! period, the admission check every start goes through, the governor's budget pass, and cost
//! arithmetic over usage segments.
//!
//! Usage is metered by the store ([`warren_store::UsageSegment`]): every state change closes the
//! workspace's open segment and opens the next one in the same transaction, so an amount is the
//! sum over segments of rate × the overlap of the segment with the interval asked about (an open
//! segment lasts until now). Nothing here counts time itself, so a restart neither adds nor
//! loses any.
//!
//! Admission holds the subjects' locks ([`crate::coord::Locks`]) across the check and the
//! creation of the start job; a workspace with an active start job counts as running, so two
//! concurrent starts see each other.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::http::StatusCode;
use time::{Date, Month, OffsetDateTime, Time};
use warren_api::policy::{Reason, Verdict};
use warren_api::v1::{BudgetStatus, QuotaLimits, QuotaOverride, QuotaStatus};
use warren_api::{ErrorCode, WorkspaceState};
use warren_store::clock::parse_time;
use warren_store::{
    format_time, NewEvent, OverrideRecord, PolicyRow, QuotaRecord, RunningRow, Spending,
    UsageSegment,
};

use crate::app::AppState;
use crate::coord::LockGuard;
use crate::error::{tracing_log, ApiError, ApiResult};

/// A budget period: calendar periods in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// From 00:00 UTC.
    Day,
    /// From Monday 00:00 UTC.
    Week,
    /// From the 1st, 00:00 UTC.
    Month,
}

impl Period {
    /// Parses `day`, `week` or `month`.
    pub fn parse(s: &str) -> Result<Period, String> {
        match s {
            "day" => Ok(Period::Day),
            "week" => Ok(Period::Week),
            "month" => Ok(Period::Month),
            _ => Err(format!("unknown period `{s}`: expected day, week or month")),
        }
    }

    /// The stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }

    /// The period holding `at`: its start and end. Saturates at the ends of the representable
    /// range rather than panicking (user times are checked by [`user_time`] anyway).
    pub fn bounds(self, at: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
        let at = at.checked_to_offset(time::UtcOffset::UTC).unwrap_or(at);
        let day = at.date();
        let midnight = |d: Date| d.with_time(Time::MIDNIGHT).assume_utc();
        match self {
            Period::Day => {
                let s = midnight(day);
                (s, s.saturating_add(time::Duration::days(1)))
            }
            Period::Week => {
                let back = day.weekday().number_days_from_monday() as i64;
                let s = midnight(day.saturating_sub(time::Duration::days(back)));
                (s, s.saturating_add(time::Duration::days(7)))
            }
            Period::Month => {
                let first = day.replace_day(1).unwrap_or(day);
                let next = if first.month() == Month::December {
                    Date::from_calendar_date(first.year() + 1, Month::January, 1)
                } else {
                    Date::from_calendar_date(first.year(), first.month().next(), 1)
                }
                .unwrap_or(first);
                (midnight(first), midnight(next))
            }
        }
    }
}

/// Years a time given by a user may fall in: far enough either way for any real use, and far
/// from the ends of what the time arithmetic can represent (which would panic).
pub const USER_YEARS: std::ops::RangeInclusive<i32> = 1970..=9000;

/// Checks a time a user gave for `field` and returns it in UTC: a 400 `invalid_request` naming
/// the field if it is outside [`USER_YEARS`].
pub fn user_time(field: &str, t: OffsetDateTime) -> ApiResult<OffsetDateTime> {
    t.checked_to_offset(time::UtcOffset::UTC)
        .filter(|u| USER_YEARS.contains(&u.year()))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{field}`: the year must be between {} and {}",
                USER_YEARS.start(),
                USER_YEARS.end()
            ))
            .hint("e.g. 2026-12-01T00:00:00Z")
        })
}

impl Period {
    /// The index of this period's column in [`period_starts`] and [`warren_store::Spending`].
    fn index(self) -> usize {
        match self {
            Period::Day => 0,
            Period::Week => 1,
            Period::Month => 2,
        }
    }
}

/// The starts of the day, week and month holding `now`, in [`Period::index`] order.
fn period_starts(now: OffsetDateTime) -> Vec<String> {
    [Period::Day, Period::Week, Period::Month]
        .iter()
        .map(|p| format_time(p.bounds(now).0))
        .collect()
}

/// What `s` spent in its `period` so far, from [`warren_store::Store::spending`] rows.
fn spent_in(rows: &[Spending], s: &Subject, period: Period) -> f64 {
    rows.iter()
        .filter(|r| match s.kind {
            "user" => r.owner_id == s.id,
            _ => r.team_id.as_deref() == Some(s.id.as_str()),
        })
        .map(|r| r.spent.get(period.index()).copied().unwrap_or(0.0))
        .sum()
}

/// Checks limits an admin sets; the error names the field.
pub fn validate_limits(l: &QuotaLimits) -> ApiResult<()> {
    let bad = |m: String| {
        ApiError::bad_request(m).hint(
            "e.g. {\"max_workspaces\": 3, \"max_cpus\": 8, \"budget\": 100, \"budget_period\": \"month\"}",
        )
    };
    if let Some(c) = l.max_cpus {
        if !(c.is_finite() && c > 0.0) {
            return Err(bad(format!("`max_cpus` must be greater than 0, got {c}")));
        }
    }
    if l.max_memory_mb == Some(0) {
        return Err(bad("`max_memory_mb` must be greater than 0, got 0".into()));
    }
    if let Some(b) = l.budget {
        if !(b.is_finite() && b >= 0.0) {
            return Err(bad(format!(
                "`budget` must be a non-negative number of cost units, got {b}"
            )));
        }
    }
    if let Some(p) = &l.budget_period {
        Period::parse(p).map_err(|e| bad(format!("`budget_period`: {e}")))?;
    }
    if let Some(o) = &l.on_exhausted {
        if o != "refuse" && o != "stop" {
            return Err(bad(format!(
                "`on_exhausted`: unknown action `{o}`: expected refuse or stop"
            )));
        }
    }
    Ok(())
}

/// The stored form of limits.
pub fn record_of(kind: &str, id: &str, l: &QuotaLimits, by: &str) -> QuotaRecord {
    QuotaRecord {
        subject_kind: kind.to_owned(),
        subject_id: id.to_owned(),
        max_workspaces: l.max_workspaces.map(i64::from),
        max_cpus: l.max_cpus,
        max_memory_mb: l.max_memory_mb.and_then(|m| i64::try_from(m).ok()),
        budget: l.budget,
        budget_period: l.budget_period.clone().unwrap_or_else(|| "month".into()),
        on_exhausted: l.on_exhausted.clone().unwrap_or_else(|| "refuse".into()),
        updated_by: Some(by.to_owned()),
        updated_at: String::new(),
    }
}

/// The API form of stored limits.
pub fn limits_of(q: &QuotaRecord) -> QuotaLimits {
    QuotaLimits {
        max_workspaces: q.max_workspaces.and_then(|m| u32::try_from(m).ok()),
        max_cpus: q.max_cpus,
        max_memory_mb: q.max_memory_mb.and_then(|m| u64::try_from(m).ok()),
        budget: q.budget,
        budget_period: Some(q.budget_period.clone()),
        on_exhausted: Some(q.on_exhausted.clone()),
    }
}

/// Whose limits: a user's or a team's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject {
    /// `user` or `team`.
    pub kind: &'static str,
    /// The user's or team's id.
    pub id: String,
}

impl Subject {
    /// A user.
    pub fn user(id: &str) -> Subject {
        Subject {
            kind: "user",
            id: id.to_owned(),
        }
    }
    /// A team.
    pub fn team(id: &str) -> Subject {
        Subject {
            kind: "team",
            id: id.to_owned(),
        }
    }
    fn lock_key(&self) -> String {
        format!("quota:{}:{}", self.kind, self.id)
    }
    /// Whether a usage segment is charged to this subject (a user pays for every workspace they
    /// own; a team for those charged to it).
    pub fn charged(&self, seg: &UsageSegment) -> bool {
        match self.kind {
            "user" => seg.owner_id == self.id,
            _ => seg.team_id.as_deref() == Some(self.id.as_str()),
        }
    }
    fn counts(&self, r: &RunningRow) -> bool {
        match self.kind {
            "user" => r.owner_id == self.id,
            _ => r.team_id.as_deref() == Some(self.id.as_str()),
        }
    }
    fn counts_row(&self, r: &PolicyRow) -> bool {
        match self.kind {
            "user" => r.owner_id == self.id,
            _ => r.team_id.as_deref() == Some(self.id.as_str()),
        }
    }
}

/// The quota in force for a subject: its own row, or (users) the default, and where it came
/// from (`user`, `team`, `default`, `none`).
pub fn effective<'a>(
    quotas: &'a [QuotaRecord],
    s: &Subject,
) -> (Option<&'a QuotaRecord>, &'static str) {
    if let Some(q) = quotas
        .iter()
        .find(|q| q.subject_kind == s.kind && q.subject_id == s.id)
    {
        return (Some(q), s.kind);
    }
    if s.kind == "user" {
        if let Some(q) = quotas.iter().find(|q| q.subject_kind == "default") {
            return (Some(q), "default");
        }
    }
    (None, "none")
}

/// Hours of `seg` within `[from, to)`, its open end being `now`.
pub fn overlap_hours(
    seg: &UsageSegment,
    from: OffsetDateTime,
    to: OffsetDateTime,
    now: OffsetDateTime,
) -> f64 {
    let Some(start) = parse_time(&seg.started_at) else {
        return 0.0;
    };
    let end = match &seg.ended_at {
        Some(e) => parse_time(e).unwrap_or(now),
        None => now,
    };
    let s = start.max(from);
    let e = end.min(to).min(now);
    if e <= s {
        0.0
    } else {
        (e - s).as_seconds_f64() / 3600.0
    }
}

/// Cost of the segments charged to `s` within `[from, now)`.
pub fn spent(segs: &[UsageSegment], s: &Subject, from: OffsetDateTime, now: OffsetDateTime) -> f64 {
    segs.iter()
        .filter(|g| s.charged(g))
        .map(|g| g.rate_per_hour * overlap_hours(g, from, now, now))
        .sum()
}

/// What a workspace asks for: its CPU and memory limits (none: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Demand {
    /// CPUs.
    pub cpus: Option<f64>,
    /// Memory in MiB.
    pub memory_mb: Option<i64>,
}

impl Demand {
    /// From stored limits (`limits_json`).
    pub fn of(limits_json: &str) -> Demand {
        let v: serde_json::Value = serde_json::from_str(limits_json).unwrap_or_default();
        Demand {
            cpus: v.get("cpus").and_then(|c| c.as_f64()),
            memory_mb: warren_store::memory_mb_of(&v),
        }
    }
}

/// Overrides in force for `s`: (unlimited, extra budget).
fn override_of(overrides: &[OverrideRecord], s: &Subject) -> (bool, f64) {
    let mine = overrides
        .iter()
        .filter(|o| o.subject_kind == s.kind && o.subject_id == s.id);
    let mut unlimited = false;
    let mut extra = 0.0;
    for o in mine {
        unlimited |= o.unlimited;
        extra += o.extra_budget.unwrap_or(0.0);
    }
    (unlimited, extra)
}

/// How to name a subject in messages (`user `alice``, `team `infra``).
async fn describe(state: &AppState, s: &Subject) -> String {
    format!("{} `{}`", s.kind, name_of(state, s).await)
}

/// The user's or team's name (its id if it is gone).
async fn name_of(state: &AppState, s: &Subject) -> String {
    let name = match s.kind {
        "user" => state
            .store
            .user(&s.id)
            .await
            .ok()
            .flatten()
            .map(|u| u.username),
        _ => state
            .store
            .teams(&state.org.id)
            .await
            .ok()
            .and_then(|ts| ts.into_iter().find(|t| t.id == s.id).map(|t| t.name)),
    };
    name.unwrap_or_else(|| s.id.clone())
}

async fn override_hint(state: &AppState, s: &Subject, budget: bool) -> String {
    let what = if budget {
        "--extra-budget N"
    } else {
        "--unlimited"
    };
    format!(
        "ask an admin for an override: warren quota override --{} {} {what} --for 1d",
        s.kind,
        name_of(state, s).await
    )
}

fn fmt_units(x: f64) -> String {
    let r = (x * 100.0).round() / 100.0;
    if r == r.trunc() {
        format!("{}", r as i64)
    } else {
        format!("{r}")
    }
}

/// Admits a start of workspace `ws_id` (none for one being created) of `owner_id` charged to
/// `team_id`, asking for `demand`: checks the user's and the team's quotas and budgets, and on
/// success returns the held locks, to be dropped once the start's job exists. A refusal is 403
/// `quota_exceeded` or `budget_exhausted` naming the limit and the usage.
pub async fn admit(
    state: &AppState,
    ws_id: Option<&str>,
    owner_id: &str,
    team_id: Option<&str>,
    demand: Demand,
) -> ApiResult<Vec<LockGuard>> {
    if owner_id.is_empty() {
        return Ok(Vec::new());
    }
    let mut subjects = vec![Subject::user(owner_id)];
    if let Some(t) = team_id {
        subjects.push(Subject::team(t));
    }
    let keys: Vec<String> = subjects.iter().map(Subject::lock_key).collect();
    let guards = crate::coord::lock_all(&*state.locks, &keys).await;
    let quotas = state.store.quotas().await?;
    let limited: Vec<(&Subject, &QuotaRecord)> = subjects
        .iter()
        .filter_map(|s| effective(&quotas, s).0.map(|q| (s, q)))
        .collect();
    if limited.is_empty() {
        return Ok(guards);
    }
    let now = state.store.now_time();
    let overrides = state.store.active_overrides(&format_time(now)).await?;
    let running = state.store.running_for(owner_id, team_id).await?;
    let mut spending: Option<Vec<Spending>> = None;
    for (s, q) in limited {
        let (unlimited, extra) = override_of(&overrides, s);
        if unlimited {
            continue;
        }
        let mine: Vec<&RunningRow> = running
            .iter()
            .filter(|r| s.counts(r) && Some(r.id.as_str()) != ws_id)
            .collect();
        if let Some(max) = q.max_workspaces {
            if mine.len() as i64 + 1 > max {
                return Err(refuse(
                    ErrorCode::QuotaExceeded,
                    format!(
                        "{} has {} of at most {max} workspaces running",
                        describe(state, s).await,
                        mine.len()
                    ),
                    format!(
                        "stop one (`warren stop NAME`), or {}",
                        override_hint(state, s, false).await
                    ),
                ));
            }
        }
        if q.max_cpus.is_some() || q.max_memory_mb.is_some() {
            let demands: Vec<Demand> = mine
                .iter()
                .map(|r| Demand::of(&r.limits_json))
                .chain(std::iter::once(demand))
                .collect();
            if let Some(max) = q.max_cpus {
                let unlimited = demands.iter().filter(|d| d.cpus.is_none()).count();
                let used: f64 = demands.iter().filter_map(|d| d.cpus).sum();
                if unlimited > 0 || used > max + 1e-9 {
                    let what = if unlimited > 0 {
                        format!(
                            "{unlimited} workspace(s) without a CPU limit would run (a CPU quota of {} needs limits)",
                            fmt_units(max)
                        )
                    } else {
                        format!(
                            "{} CPUs would run, above the quota of {}",
                            fmt_units(used),
                            fmt_units(max)
                        )
                    };
                    return Err(refuse(
                        ErrorCode::QuotaExceeded,
                        format!("{}: {what}", describe(state, s).await),
                        if unlimited > 0 {
                            "create workspaces with limits (`\"limits\": {\"cpus\": N}`), or ask a \
                             template admin to set the template's ceilings"
                                .to_owned()
                        } else {
                            format!(
                                "stop a workspace, or {}",
                                override_hint(state, s, false).await
                            )
                        },
                    ));
                }
            }
            if let Some(max) = q.max_memory_mb {
                let unlimited = demands.iter().filter(|d| d.memory_mb.is_none()).count();
                let used: i64 = demands.iter().filter_map(|d| d.memory_mb).sum();
                if unlimited > 0 || used > max {
                    let what = if unlimited > 0 {
                        format!(
                            "{unlimited} workspace(s) without a memory limit would run (a memory quota of {max} MiB needs limits)"
                        )
                    } else {
                        format!("{used} MiB of memory would run, above the quota of {max} MiB")
                    };
                    return Err(refuse(
                        ErrorCode::QuotaExceeded,
                        format!("{}: {what}", describe(state, s).await),
                        if unlimited > 0 {
                            "create workspaces with limits (`\"limits\": {\"memory_mb\": N}`), or \
                             ask a template admin to set the template's ceilings"
                                .to_owned()
                        } else {
                            format!(
                                "stop a workspace, or {}",
                                override_hint(state, s, false).await
                            )
                        },
                    ));
                }
            }
        }
        if let Some(budget) = q.budget {
            let period = Period::parse(&q.budget_period).unwrap_or(Period::Month);
            let (start, _) = period.bounds(now);
            if spending.is_none() {
                // One query for both subjects and every period.
                spending = Some(
                    state
                        .store
                        .spending(
                            &period_starts(now),
                            &format_time(now),
                            Some(owner_id),
                            team_id,
                        )
                        .await?,
                );
            }
            let used = spent_in(spending.as_deref().unwrap_or(&[]), s, period);
            let limit = budget + extra;
            if used >= limit {
                return Err(refuse(
                    ErrorCode::BudgetExhausted,
                    format!(
                        "{} has spent its budget: {} of {} cost units this {} (since {})",
                        describe(state, s).await,
                        fmt_units(used),
                        fmt_units(limit),
                        period.as_str(),
                        format_time(start)
                    ),
                    override_hint(state, s, true).await,
                ));
            }
        }
    }
    Ok(guards)
}

fn refuse(code: ErrorCode, message: String, hint: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, code, message).hint(hint)
}

/// Records a refused autostart once per occurrence of the schedule.
pub async fn record_refused_start(
    state: &AppState,
    rec: &warren_store::WorkspaceRecord,
    reason: Reason,
    err: &ApiError,
) {
    let occurrence = match crate::governor::policy_for(state, rec).await {
        Ok(eff) => eff.autostart.and_then(|a| {
            state
                .governor
                .last_occurrence(&a.schedule, &a.timezone, state.store.now_time())
        }),
        Err(_) => None,
    };
    let at = occurrence
        .map(format_time)
        .unwrap_or_else(|| state.store.now());
    let why = match err.body.code {
        ErrorCode::BudgetExhausted => "budget",
        _ => "quota",
    };
    let mut e = NewEvent::about(
        "workspace.start_refused",
        rec,
        format!(
            "workspace `{}` was not started ({}): {}",
            rec.name,
            reason.as_str().replace('_', " "),
            err.body.message
        ),
    );
    e.reason = Some(why.to_owned());
    e.data =
        serde_json::json!({ "code": err.body.code, "trigger": reason.as_str(), "occurrence": at });
    e.dedupe_key = Some(format!("workspace.start_refused:{}:{at}", rec.id));
    if let Err(err) = state.store.insert_event(&e).await {
        tracing_log(&format!("quota: cannot record a refused start: {err}"));
    }
}

/// What the budget pass did: (subject, `warning` | `exhausted` | `stopped NAME`).
pub type BudgetReport = Vec<(String, String)>;

/// The governor's budget pass: for each subject with a budget, its spending this period from
/// one usage query; at 80% a `budget.warning` event, at 100% `budget.exhausted` (each once per
/// subject, period and budget amount in force, so an override that raises the budget re-arms
/// both), and with `on_exhausted: stop`, its running workspaces stopped with
/// reason `budget`.
pub async fn budget_pass(state: &AppState, rows: &[&PolicyRow]) -> BudgetReport {
    let mut report = BudgetReport::new();
    let quotas = match state.store.quotas().await {
        Ok(q) => q,
        Err(e) => {
            report.push((String::new(), format!("error: {e}")));
            return report;
        }
    };
    if !quotas.iter().any(|q| q.budget.is_some()) {
        return report;
    }
    let now = state.store.now_time();
    let (froms, to) = (period_starts(now), format_time(now));
    let (spending, overrides) = match tokio::try_join!(
        state.store.spending(&froms, &to, None, None),
        state.store.active_overrides(&to)
    ) {
        Ok(x) => x,
        Err(e) => {
            report.push((String::new(), format!("error: {e}")));
            return report;
        }
    };
    // The subjects: users and teams with their own budget, and every user who spent anything
    // or runs something, under a default budget.
    let mut subjects: HashSet<Subject> = quotas
        .iter()
        .filter(|q| q.budget.is_some() && q.subject_kind != "default")
        .map(|q| {
            if q.subject_kind == "user" {
                Subject::user(&q.subject_id)
            } else {
                Subject::team(&q.subject_id)
            }
        })
        .collect();
    if quotas
        .iter()
        .any(|q| q.subject_kind == "default" && q.budget.is_some())
    {
        for r in &spending {
            subjects.insert(Subject::user(&r.owner_id));
        }
    }
    // Each subject's budget in force and its period.
    let mut starts: HashMap<&Subject, (Period, OffsetDateTime, OffsetDateTime, f64, &str)> =
        HashMap::new();
    for s in &subjects {
        let (Some(q), _) = effective(&quotas, s) else {
            continue;
        };
        let Some(budget) = q.budget else { continue };
        let (unlimited, extra) = override_of(&overrides, s);
        if unlimited {
            continue;
        }
        let period = Period::parse(&q.budget_period).unwrap_or(Period::Month);
        let (start, end) = period.bounds(now);
        starts.insert(s, (period, start, end, budget + extra, &q.on_exhausted));
    }
    // Spending per subject, one walk over the (owner, team) rows.
    let mut used: HashMap<&Subject, f64> = HashMap::new();
    let by_user: HashMap<&str, &Subject> = starts
        .keys()
        .filter(|s| s.kind == "user")
        .map(|s| (s.id.as_str(), *s))
        .collect();
    let by_team: HashMap<&str, &Subject> = starts
        .keys()
        .filter(|s| s.kind == "team")
        .map(|s| (s.id.as_str(), *s))
        .collect();
    for r in &spending {
        let owner = by_user.get(r.owner_id.as_str());
        let team = r.team_id.as_deref().and_then(|t| by_team.get(t));
        for s in owner.into_iter().chain(team) {
            let (period, ..) = starts[*s];
            *used.entry(*s).or_default() += r.spent.get(period.index()).copied().unwrap_or(0.0);
        }
    }
    let mut ordered: Vec<&Subject> = starts.keys().copied().collect();
    ordered.sort();
    for s in ordered {
        let (period, start, end, limit, on_exhausted) = starts[s];
        let spent = used.get(s).copied().unwrap_or(0.0);
        let warn = spent >= 0.8 * limit;
        let exhausted = spent >= limit;
        if !warn {
            continue;
        }
        let who = describe(state, s).await;
        let pct = if limit > 0.0 {
            (spent / limit * 100.0).floor()
        } else {
            100.0
        };
        let kinds: &[&str] = if exhausted {
            &["budget.warning", "budget.exhausted"]
        } else {
            &["budget.warning"]
        };
        for kind in kinds {
            let message = if *kind == "budget.exhausted" {
                format!(
                    "{who} has spent its budget: {} of {} cost units this {}{}",
                    fmt_units(spent),
                    fmt_units(limit),
                    period.as_str(),
                    if on_exhausted == "stop" {
                        "; its running workspaces are stopped"
                    } else {
                        "; new starts are refused"
                    }
                )
            } else {
                format!(
                    "{who} has used {pct}% of its budget: {} of {} cost units this {}",
                    fmt_units(spent),
                    fmt_units(limit),
                    period.as_str()
                )
            };
            let e = NewEvent {
                kind: (*kind).to_owned(),
                owner_id: (s.kind == "user").then(|| s.id.clone()),
                team_id: (s.kind == "team").then(|| s.id.clone()),
                reason: Some("budget".into()),
                message: message.clone(),
                data: serde_json::json!({
                    "subject": s.kind, "id": s.id, "period": period.as_str(),
                    "period_start": format_time(start), "period_end": format_time(end),
                    "used": spent, "budget": limit,
                }),
                // The limit in force is part of the key: after an override raises it, reaching
                // the new limit alerts again.
                dedupe_key: Some(format!(
                    "{kind}:{}:{}:{}:{}",
                    s.kind,
                    s.id,
                    format_time(start),
                    fmt_units(limit)
                )),
                ..Default::default()
            };
            match state.store.insert_event(&e).await {
                Ok(Some(_)) => {
                    tracing_log(&format!("budget: {message}"));
                    report.push((who.clone(), kind.trim_start_matches("budget.").to_owned()));
                }
                Ok(None) => {}
                Err(err) => tracing_log(&format!("budget: cannot record an event: {err}")),
            }
        }
        if exhausted && on_exhausted == "stop" {
            for row in rows
                .iter()
                .filter(|r| r.state == WorkspaceState::Running && s.counts_row(r))
            {
                match crate::governor::act(state, row, Verdict::Stop(Reason::Budget), None).await {
                    Ok(true) => report.push((who.clone(), format!("stopped {}", row.name))),
                    Ok(false) => {}
                    Err(e) => report.push((who.clone(), format!("error: {}: {e}", row.name))),
                }
            }
        }
    }
    report
}

/// A subject's quota status now (limits, what runs, budget spent this period, overrides).
pub async fn status(state: &AppState, s: &Subject, name: &str) -> ApiResult<QuotaStatus> {
    let quotas = state.store.quotas().await?;
    let (q, source) = effective(&quotas, s);
    let now = state.store.now_time();
    let overrides = state.store.active_overrides(&format_time(now)).await?;
    let (unlimited, extra) = override_of(&overrides, s);
    let running = match s.kind {
        "user" => state.store.running_for(&s.id, None).await?,
        _ => state.store.running_for("", Some(&s.id)).await?,
    };
    let demands: Vec<Demand> = running.iter().map(|r| Demand::of(&r.limits_json)).collect();
    let budget = match q.and_then(|q| q.budget.map(|b| (q, b))) {
        Some((q, b)) => {
            let period = Period::parse(&q.budget_period).unwrap_or(Period::Month);
            let (start, end) = period.bounds(now);
            let (owner, team) = match s.kind {
                "user" => (Some(s.id.as_str()), None),
                _ => (None, Some(s.id.as_str())),
            };
            let rows = state
                .store
                .spending(&period_starts(now), &format_time(now), owner, team)
                .await?;
            let used = spent_in(&rows, s, period);
            let limit = b + extra;
            Some(BudgetStatus {
                period: period.as_str().into(),
                period_start: format_time(start),
                period_end: format_time(end),
                budget: b,
                extra,
                used,
                left: (limit - used).max(0.0),
                percent: if limit > 0.0 {
                    used / limit * 100.0
                } else {
                    100.0
                },
                on_exhausted: q.on_exhausted.clone(),
            })
        }
        None => None,
    };
    let names = user_names(state).await?;
    Ok(QuotaStatus {
        subject: s.kind.into(),
        name: name.to_owned(),
        source: source.into(),
        limits: q.map(limits_of).unwrap_or_default(),
        workspaces: running.len() as u32,
        cpus: demands.iter().filter_map(|d| d.cpus).sum(),
        memory_mb: demands
            .iter()
            .filter_map(|d| d.memory_mb)
            .map(|m| m.max(0) as u64)
            .sum(),
        unlimited_workspaces: demands
            .iter()
            .filter(|d| d.cpus.is_none() || d.memory_mb.is_none())
            .count() as u32,
        budget,
        overrides: overrides
            .iter()
            .filter(|o| o.subject_kind == s.kind && o.subject_id == s.id)
            .map(|o| override_view(o, name, &names, now))
            .collect(),
        unlimited,
    })
}

/// User id -> username.
pub async fn user_names(state: &AppState) -> ApiResult<BTreeMap<String, String>> {
    Ok(state
        .store
        .users()
        .await?
        .into_iter()
        .map(|u| (u.id, u.username))
        .collect())
}

/// The API view of an override.
pub fn override_view(
    o: &OverrideRecord,
    name: &str,
    users: &BTreeMap<String, String>,
    now: OffsetDateTime,
) -> QuotaOverride {
    let active = o.revoked_at.is_none() && parse_time(&o.expires_at).is_some_and(|e| e > now);
    QuotaOverride {
        id: o.id.clone(),
        subject: o.subject_kind.clone(),
        name: name.to_owned(),
        extra_budget: o.extra_budget,
        unlimited: o.unlimited,
        expires_at: o.expires_at.clone(),
        note: o.note.clone(),
        created_by: users
            .get(&o.created_by)
            .cloned()
            .unwrap_or_else(|| o.created_by.clone()),
        created_at: o.created_at.clone(),
        revoked_at: o.revoked_at.clone(),
        active,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> OffsetDateTime {
        parse_time(s).unwrap()
    }

    #[test]
    fn periods_are_calendar_periods_in_utc() {
        let at = t("2026-11-25T13:14:15Z"); // a Wednesday
        assert_eq!(
            Period::Day.bounds(at),
            (t("2026-11-25T00:00:00Z"), t("2026-11-26T00:00:00Z"))
        );
        assert_eq!(
            Period::Week.bounds(at),
            (t("2026-11-23T00:00:00Z"), t("2026-11-30T00:00:00Z"))
        );
        assert_eq!(
            Period::Month.bounds(at),
            (t("2026-11-01T00:00:00Z"), t("2026-12-01T00:00:00Z"))
        );
        assert_eq!(
            Period::Month.bounds(t("2026-12-31T23:59:59Z")),
            (t("2026-12-01T00:00:00Z"), t("2027-01-01T00:00:00Z"))
        );
        assert!(Period::parse("year")
            .unwrap_err()
            .contains("day, week or month"));
    }

    #[test]
    fn spending_is_rate_times_overlap_with_open_segments_until_now() {
        let seg = |start: &str, end: Option<&str>, rate: f64| UsageSegment {
            id: 1,
            workspace_id: "w".into(),
            workspace_name: "w".into(),
            owner_id: "u".into(),
            team_id: Some("t".into()),
            template_id: None,
            class: "running".into(),
            rate_per_hour: rate,
            cpus: None,
            memory_mb: None,
            started_at: start.into(),
            ended_at: end.map(str::to_owned),
        };
        let segs = [
            // Half before the period.
            seg("2026-11-24T23:00:00Z", Some("2026-11-25T01:00:00Z"), 2.0),
            // Open: until now.
            seg("2026-11-25T10:00:00Z", None, 1.0),
        ];
        let now = t("2026-11-25T12:30:00Z");
        let (start, _) = Period::Day.bounds(now);
        assert_eq!(spent(&segs, &Subject::user("u"), start, now), 2.0 + 2.5);
        assert_eq!(spent(&segs, &Subject::team("t"), start, now), 4.5);
        assert_eq!(spent(&segs, &Subject::user("x"), start, now), 0.0);
    }

    #[test]
    fn limits_are_validated_naming_the_field() {
        let bad = [
            (r#"{"budget": -1}"#, "`budget`"),
            (r#"{"budget_period": "year"}"#, "`budget_period`"),
            (r#"{"on_exhausted": "explode"}"#, "`on_exhausted`"),
            (r#"{"max_cpus": 0}"#, "`max_cpus`"),
            (r#"{"max_memory_mb": 0}"#, "`max_memory_mb`"),
        ];
        for (text, field) in bad {
            let l: QuotaLimits = serde_json::from_str(text).unwrap();
            let e = validate_limits(&l).unwrap_err();
            assert!(
                e.body.message.starts_with(field),
                "{text}: {}",
                e.body.message
            );
        }
        validate_limits(
            &serde_json::from_str(r#"{"budget": 10, "budget_period": "week"}"#).unwrap(),
        )
        .unwrap();
    }
}
