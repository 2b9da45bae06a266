//! Lifecycle policies: what a template declares (defaults and ceilings), what a workspace may
//! choose within them, the policy in force ([`Effective`]), and the pure decision of what is
//! due for one workspace at one instant ([`evaluate`]). The server's governor gathers the facts
//! and carries the decisions out; everything here is time-in, decision-out, so every rule is
//! unit-tested without a clock.
//!
//! The terms:
//! - `ttl`: delete the workspace this long after it was created.
//! - `autostop`: every run gets a deadline this long after it starts; `extend` moves it.
//! - `idle_timeout`: stop after this long without activity (see [`crate::activity`]).
//! - `max_lifetime`: no run lasts longer, whatever the deadline says; `extend` cannot pass it.
//! - `autostart`: start a stopped workspace at the times of a cron schedule in a time zone.
//! - `dormancy`: delete a workspace stopped this long, with a warning `dormancy_warning` before.
//! - `delete_on_stop`: an ephemeral workspace is deleted as soon as it stops.
//! - `start_timeout`: a start (or create) taking longer fails and is cleaned up.
//! - `failure_cleanup`: delete a failed workspace this long after it failed.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::template::{format_duration, parse_duration};
use crate::WorkspaceState;

/// How long before a policy stops or deletes a workspace its owner is warned (an event).
pub const WARNING_LEAD: Duration = Duration::from_secs(5 * 60);

/// The default `start_timeout`.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The default `dormancy_warning`.
pub const DEFAULT_DORMANCY_WARNING: Duration = Duration::from_secs(86_400);

/// An autostart occurrence missed by more than this (the server was down) is skipped rather
/// than acted on late.
pub const AUTOSTART_GRACE: Duration = Duration::from_secs(15 * 60);

/// Why a workspace was started, stopped or deleted. Every stop records one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Its owner asked.
    User,
    /// Someone else with the right asked (an administrator).
    Admin,
    /// No activity for `idle_timeout`.
    Idle,
    /// Its deadline (`autostop`, or an extension) passed.
    Deadline,
    /// Its `ttl` passed.
    Ttl,
    /// Its run reached `max_lifetime`.
    MaxLifetime,
    /// Its owner's or team's budget ran out.
    Budget,
    /// It stayed stopped for `dormancy`.
    Dormancy,
    /// It is ephemeral (`delete_on_stop`) and stopped.
    DeleteOnStop,
    /// It failed `failure_cleanup` ago.
    FailureCleanup,
    /// Its start took longer than `start_timeout`.
    StartTimeout,
    /// Its init died.
    Exited,
    /// An operation failed.
    Error,
    /// Its autostart schedule.
    Autostart,
    /// An SSH connection to it while stopped.
    OnConnect,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 15] = [
        Reason::User,
        Reason::Admin,
        Reason::Idle,
        Reason::Deadline,
        Reason::Ttl,
        Reason::MaxLifetime,
        Reason::Budget,
        Reason::Dormancy,
        Reason::DeleteOnStop,
        Reason::FailureCleanup,
        Reason::StartTimeout,
        Reason::Exited,
        Reason::Error,
        Reason::Autostart,
        Reason::OnConnect,
    ];

    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::User => "user",
            Reason::Admin => "admin",
            Reason::Idle => "idle",
            Reason::Deadline => "deadline",
            Reason::Ttl => "ttl",
            Reason::MaxLifetime => "max_lifetime",
            Reason::Budget => "budget",
            Reason::Dormancy => "dormancy",
            Reason::DeleteOnStop => "delete_on_stop",
            Reason::FailureCleanup => "failure_cleanup",
            Reason::StartTimeout => "start_timeout",
            Reason::Exited => "exited",
            Reason::Error => "error",
            Reason::Autostart => "autostart",
            Reason::OnConnect => "on_connect",
        }
    }

    /// The reason named `s`.
    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// An autostart schedule: a 5-field cron expression and an IANA time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Autostart {
    /// `minute hour day-of-month month day-of-week`, e.g. `0 9 * * 1-5`.
    pub schedule: String,
    /// An IANA time zone (`Europe/Berlin`); default `UTC`.
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".to_owned()
}

impl Autostart {
    /// Checks the expression and the time zone.
    pub fn validate(&self) -> Result<(), String> {
        crate::schedule::Schedule::parse(&self.schedule, &self.timezone).map(drop)
    }
}

/// What counts as activity for `idle_timeout`, beyond the recorded kinds
/// ([`crate::activity::ActivityKind`]), which always count.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityRules {
    /// Whether an open session (SSH connection, terminal, exec, port connection) keeps the
    /// workspace from being idle even when no data flows (default: yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_sessions: Option<bool>,
    /// If set, a workspace whose processes use more than this percentage of one CPU is active
    /// (so a long build or a thinking agent is not stopped mid-task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_threshold: Option<f64>,
}

/// The most a workspace may set its own policy values to. A value the template sets by default
/// and gives no ceiling for is its own ceiling: workspaces may shorten it, not lengthen it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyCeilings {
    /// Longest `ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Longest `autostop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostop: Option<String>,
    /// Longest `idle_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Longest `dormancy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dormancy: Option<String>,
    /// Whether workspaces may set their own `autostart` schedule (default: yes). Turning the
    /// template's off is always allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<bool>,
}

/// A template's lifecycle policy (the manifest's `policy`): defaults for its workspaces, and
/// ceilings on what they may choose. Durations are strings [`parse_duration`] reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDefaults {
    /// Delete workspaces this long after they are created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Each run's deadline: stop this long after starting, unless extended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostop: Option<String>,
    /// Stop after this long without activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// The longest any run may last, however its deadline is extended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime: Option<String>,
    /// Start stopped workspaces on a schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<Autostart>,
    /// Delete workspaces stopped for this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dormancy: Option<String>,
    /// How long before a dormancy deletion the owner is warned (default 1d, at most half of
    /// `dormancy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dormancy_warning: Option<String>,
    /// Delete workspaces as soon as they stop (ephemeral agent workspaces). Workspaces cannot
    /// turn it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_stop: Option<bool>,
    /// A start or create that takes longer fails and is cleaned up (default 30m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout: Option<String>,
    /// Delete failed workspaces this long after they failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_cleanup: Option<String>,
    /// What counts as activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<ActivityRules>,
    /// Whether an SSH connection to a stopped workspace starts it (default: yes, for users
    /// allowed to start it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_on_connect: Option<bool>,
    /// The most workspaces may set their own values to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceilings: Option<PolicyCeilings>,
    /// What the template's workspaces may reach (default: the server's `default_network`). A
    /// workspace's own network policy applies on top of it: a connection must pass both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::net::NetworkPolicy>,
}

/// A workspace's own policy values (`PUT /workspaces/{ws}/policy`), within its template's
/// ceilings. Absent fields take the template's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePolicy {
    /// See [`PolicyDefaults::ttl`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// See [`PolicyDefaults::autostop`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostop: Option<String>,
    /// See [`PolicyDefaults::idle_timeout`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// See [`PolicyDefaults::dormancy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dormancy: Option<String>,
    /// The workspace's own schedule; `"off"` turns the template's off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autostart: Option<AutostartChoice>,
    /// Make the workspace ephemeral (it cannot undo a template's `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_stop: Option<bool>,
}

/// A workspace's autostart: a schedule, or `"off"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(untagged)]
pub enum AutostartChoice {
    /// Its own schedule.
    Schedule(Autostart),
    /// `"off"`: no autostart.
    Off(Off),
}

impl<'de> Deserialize<'de> for AutostartChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) if s == "off" => Ok(AutostartChoice::Off(Off::Off)),
            v @ serde_json::Value::Object(_) => serde_json::from_value(v)
                .map(AutostartChoice::Schedule)
                .map_err(D::Error::custom),
            _ => Err(D::Error::custom(
                "expected \"off\" or {\"schedule\": \"0 9 * * 1-5\", \"timezone\": \"UTC\"}",
            )),
        }
    }
}

/// The word `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Off {
    /// Off.
    Off,
}

fn dur(field: &str, text: &Option<String>) -> Result<Option<Duration>, String> {
    text.as_deref()
        .map(parse_duration)
        .transpose()
        .map_err(|e| format!("`{field}`: {e}"))
}

/// The policy in force for one workspace: its template's defaults, its own values, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// See [`PolicyDefaults::ttl`].
    pub ttl: Option<Duration>,
    /// See [`PolicyDefaults::autostop`].
    pub autostop: Option<Duration>,
    /// See [`PolicyDefaults::idle_timeout`].
    pub idle_timeout: Option<Duration>,
    /// See [`PolicyDefaults::max_lifetime`].
    pub max_lifetime: Option<Duration>,
    /// See [`PolicyDefaults::autostart`].
    pub autostart: Option<Autostart>,
    /// See [`PolicyDefaults::dormancy`].
    pub dormancy: Option<Duration>,
    /// See [`PolicyDefaults::dormancy_warning`] (defaulted).
    pub dormancy_warning: Duration,
    /// See [`PolicyDefaults::delete_on_stop`].
    pub delete_on_stop: bool,
    /// See [`PolicyDefaults::start_timeout`] (defaulted).
    pub start_timeout: Duration,
    /// See [`PolicyDefaults::failure_cleanup`].
    pub failure_cleanup: Option<Duration>,
    /// See [`ActivityRules::open_sessions`] (defaulted).
    pub open_sessions_count: bool,
    /// See [`ActivityRules::cpu_threshold`].
    pub cpu_threshold: Option<f64>,
    /// See [`PolicyDefaults::start_on_connect`] (defaulted).
    pub start_on_connect: bool,
}

impl Default for Effective {
    fn default() -> Self {
        Effective {
            ttl: None,
            autostop: None,
            idle_timeout: None,
            max_lifetime: None,
            autostart: None,
            dormancy: None,
            dormancy_warning: DEFAULT_DORMANCY_WARNING,
            delete_on_stop: false,
            start_timeout: DEFAULT_START_TIMEOUT,
            failure_cleanup: None,
            open_sessions_count: true,
            cpu_threshold: None,
            start_on_connect: true,
        }
    }
}

impl PolicyDefaults {
    /// Checks durations, the schedule, the activity rules, and that `autostop` and
    /// `idle_timeout` do not exceed `max_lifetime` and defaults do not exceed their ceilings.
    pub fn validate(&self) -> Result<(), String> {
        self.effective().map(drop)?;
        if let Some(n) = &self.network {
            n.check().map_err(|e| format!("`network`: {e}"))?;
        }
        let ceilings = self.ceilings.clone().unwrap_or_default();
        for (field, default, ceiling) in [
            ("ttl", &self.ttl, &ceilings.ttl),
            ("autostop", &self.autostop, &ceilings.autostop),
            ("idle_timeout", &self.idle_timeout, &ceilings.idle_timeout),
            ("dormancy", &self.dormancy, &ceilings.dormancy),
        ] {
            let c = dur(&format!("ceilings.{field}"), ceiling)?;
            if let (Some(d), Some(c)) = (dur(field, default)?, c) {
                if d > c {
                    return Err(format!(
                        "`{field}` ({}) is longer than its ceiling `ceilings.{field}` ({})",
                        format_duration(d),
                        format_duration(c)
                    ));
                }
            }
        }
        Ok(())
    }

    /// The template's own policy in force (no workspace values).
    pub fn effective(&self) -> Result<Effective, String> {
        let max_lifetime = dur("max_lifetime", &self.max_lifetime)?;
        let autostop = dur("autostop", &self.autostop)?;
        let idle_timeout = dur("idle_timeout", &self.idle_timeout)?;
        if let Some(max) = max_lifetime {
            for (field, value) in [("autostop", autostop), ("idle_timeout", idle_timeout)] {
                if let Some(value) = value.filter(|v| *v > max) {
                    return Err(format!(
                        "`{field}` ({}) is longer than `max_lifetime` ({})",
                        format_duration(value),
                        format_duration(max)
                    ));
                }
            }
        }
        if let Some(a) = &self.autostart {
            a.validate()?;
        }
        let dormancy = dur("dormancy", &self.dormancy)?;
        let mut dormancy_warning =
            dur("dormancy_warning", &self.dormancy_warning)?.unwrap_or(DEFAULT_DORMANCY_WARNING);
        if let Some(d) = dormancy {
            dormancy_warning = dormancy_warning.min(d / 2);
        }
        let activity = self.activity.clone().unwrap_or_default();
        if let Some(t) = activity.cpu_threshold {
            if !(t > 0.0 && t <= 10_000.0) {
                return Err(format!(
                    "`activity.cpu_threshold` must be a percentage of one CPU above 0 (100 is one \
                     whole CPU), got {t}"
                ));
            }
        }
        Ok(Effective {
            ttl: dur("ttl", &self.ttl)?,
            autostop,
            idle_timeout,
            max_lifetime,
            autostart: self.autostart.clone(),
            dormancy,
            dormancy_warning,
            delete_on_stop: self.delete_on_stop.unwrap_or(false),
            start_timeout: dur("start_timeout", &self.start_timeout)?
                .unwrap_or(DEFAULT_START_TIMEOUT),
            failure_cleanup: dur("failure_cleanup", &self.failure_cleanup)?,
            open_sessions_count: activity.open_sessions.unwrap_or(true),
            cpu_threshold: activity.cpu_threshold,
            start_on_connect: self.start_on_connect.unwrap_or(true),
        })
    }
}

/// The policy in force for a workspace of a template with policy `template` (none: a workspace
/// made from an uploaded folder) and its own values `own`. Fails, naming the field and the
/// ceiling, when `own` goes beyond what the template allows.
pub fn resolve(
    template: Option<&PolicyDefaults>,
    own: Option<&WorkspacePolicy>,
) -> Result<Effective, String> {
    let template = template.cloned().unwrap_or_default();
    let mut eff = template.effective()?;
    let Some(own) = own else {
        return Ok(eff);
    };
    let ceilings = template.ceilings.clone().unwrap_or_default();
    let pick = |field: &str,
                wanted: &Option<String>,
                ceiling: &Option<String>,
                slot: &mut Option<Duration>|
     -> Result<(), String> {
        let Some(wanted) = dur(field, wanted)? else {
            return Ok(());
        };
        // A template value without a ceiling is its own ceiling.
        let limit = dur(&format!("ceilings.{field}"), ceiling)?.or(*slot);
        if let Some(limit) = limit.filter(|l| wanted > *l) {
            return Err(format!(
                "`{field}` ({}) is longer than the template allows ({})",
                format_duration(wanted),
                format_duration(limit)
            ));
        }
        *slot = Some(wanted);
        Ok(())
    };
    pick("ttl", &own.ttl, &ceilings.ttl, &mut eff.ttl)?;
    pick(
        "autostop",
        &own.autostop,
        &ceilings.autostop,
        &mut eff.autostop,
    )?;
    pick(
        "idle_timeout",
        &own.idle_timeout,
        &ceilings.idle_timeout,
        &mut eff.idle_timeout,
    )?;
    pick(
        "dormancy",
        &own.dormancy,
        &ceilings.dormancy,
        &mut eff.dormancy,
    )?;
    if let Some(d) = eff.dormancy {
        eff.dormancy_warning = eff.dormancy_warning.min(d / 2);
    }
    if let Some(max) = eff.max_lifetime {
        for (field, value) in [
            ("autostop", eff.autostop),
            ("idle_timeout", eff.idle_timeout),
        ] {
            if let Some(value) = value.filter(|v| *v > max) {
                return Err(format!(
                    "`{field}` ({}) is longer than the template's `max_lifetime` ({})",
                    format_duration(value),
                    format_duration(max)
                ));
            }
        }
    }
    match &own.autostart {
        None => {}
        Some(AutostartChoice::Off(_)) => eff.autostart = None,
        Some(AutostartChoice::Schedule(_)) if ceilings.autostart == Some(false) => {
            return Err(
                "`autostart`: the template does not let workspaces set their own \
                 schedule"
                    .to_owned(),
            )
        }
        Some(AutostartChoice::Schedule(a)) => {
            a.validate()?;
            eff.autostart = Some(a.clone());
        }
    }
    match own.delete_on_stop {
        Some(false) if eff.delete_on_stop => {
            return Err(
                "`delete_on_stop`: the template makes its workspaces ephemeral; it cannot be \
                 turned off"
                    .to_owned(),
            )
        }
        Some(v) => eff.delete_on_stop = v,
        None => {}
    }
    Ok(eff)
}

/// [`Effective`] as the API shows it: durations as strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EffectiveView {
    /// See [`PolicyDefaults::ttl`].
    pub ttl: Option<String>,
    /// See [`PolicyDefaults::autostop`].
    pub autostop: Option<String>,
    /// See [`PolicyDefaults::idle_timeout`].
    pub idle_timeout: Option<String>,
    /// See [`PolicyDefaults::max_lifetime`].
    pub max_lifetime: Option<String>,
    /// See [`PolicyDefaults::autostart`].
    pub autostart: Option<Autostart>,
    /// See [`PolicyDefaults::dormancy`].
    pub dormancy: Option<String>,
    /// See [`PolicyDefaults::dormancy_warning`].
    pub dormancy_warning: String,
    /// See [`PolicyDefaults::delete_on_stop`].
    pub delete_on_stop: bool,
    /// See [`PolicyDefaults::start_timeout`].
    pub start_timeout: String,
    /// See [`PolicyDefaults::failure_cleanup`].
    pub failure_cleanup: Option<String>,
    /// Whether open sessions count as activity.
    pub open_sessions_count: bool,
    /// See [`ActivityRules::cpu_threshold`].
    pub cpu_threshold: Option<f64>,
    /// See [`PolicyDefaults::start_on_connect`].
    pub start_on_connect: bool,
}

impl Effective {
    /// The API view.
    pub fn view(&self) -> EffectiveView {
        let d = |d: Option<Duration>| d.map(format_duration);
        EffectiveView {
            ttl: d(self.ttl),
            autostop: d(self.autostop),
            idle_timeout: d(self.idle_timeout),
            max_lifetime: d(self.max_lifetime),
            autostart: self.autostart.clone(),
            dormancy: d(self.dormancy),
            dormancy_warning: format_duration(self.dormancy_warning),
            delete_on_stop: self.delete_on_stop,
            start_timeout: format_duration(self.start_timeout),
            failure_cleanup: d(self.failure_cleanup),
            open_sessions_count: self.open_sessions_count,
            cpu_threshold: self.cpu_threshold,
            start_on_connect: self.start_on_connect,
        }
    }
}

impl Verdict {
    /// `stop`, `delete`, `start` or `fail_start`, and why.
    pub fn parts(self) -> (&'static str, Reason) {
        match self {
            Verdict::Stop(r) => ("stop", r),
            Verdict::Delete(r) => ("delete", r),
            Verdict::Start(r) => ("start", r),
            Verdict::FailStart(r) => ("fail_start", r),
        }
    }
}

/// What the governor knows about a workspace at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// Now.
    pub now: OffsetDateTime,
    /// Its state.
    pub state: WorkspaceState,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When its current (or last) run started.
    pub started_at: Option<OffsetDateTime>,
    /// When it last stopped or failed.
    pub stopped_at: Option<OffsetDateTime>,
    /// An explicit deadline (`extend`), if one was set.
    pub deadline_at: Option<OffsetDateTime>,
    /// The latest recorded activity of any kind.
    pub last_activity: Option<OffsetDateTime>,
    /// Whether any session is open on it now.
    pub open_sessions: bool,
    /// Whether its CPU use is above the policy's threshold now.
    pub busy_cpu: bool,
    /// When the start or create job in progress began, if one is (its lifecycle commands may
    /// still be running in a `running` workspace).
    pub starting_since: Option<OffsetDateTime>,
    /// The latest autostart occurrence at or before `now`, if it has a schedule.
    pub autostart_occurrence: Option<OffsetDateTime>,
}

/// What a policy makes happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Stop it.
    Stop(Reason),
    /// Delete it.
    Delete(Reason),
    /// Start it.
    Start(Reason),
    /// Give up its start in progress (cancel the job; it fails and is cleaned up).
    FailStart(Reason),
}

/// A stop or deletion coming up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upcoming {
    /// Stop or delete, and why.
    pub verdict: Verdict,
    /// When.
    pub at: OffsetDateTime,
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Evaluation {
    /// What is due now, if anything.
    pub due: Option<Verdict>,
    /// The next stop or deletion not due yet (for status and warnings).
    pub next: Option<Upcoming>,
    /// Whether the owner should be warned about `next` now (it is within its warning lead).
    pub warn: bool,
}

/// The run's deadline: an extension made during this run, else `autostop` after its start; never
/// past `max_lifetime` after its start. With the reason it would stop for.
pub fn deadline(
    p: &Effective,
    run_start: OffsetDateTime,
    extended: Option<OffsetDateTime>,
) -> Option<(OffsetDateTime, Reason)> {
    let planned = match extended.filter(|d| *d > run_start) {
        Some(d) => Some(d),
        None => p.autostop.map(|a| run_start + a),
    };
    let cap = p.max_lifetime.map(|m| run_start + m);
    match (planned, cap) {
        (Some(d), Some(c)) if c <= d => Some((c, Reason::MaxLifetime)),
        (Some(d), _) => Some((d, Reason::Deadline)),
        (None, Some(c)) => Some((c, Reason::MaxLifetime)),
        (None, None) => None,
    }
}

/// When the workspace counts as idle from, given the facts (none: never, as things stand).
pub fn idle_at(p: &Effective, f: &Facts, run_start: OffsetDateTime) -> Option<OffsetDateTime> {
    let timeout = p.idle_timeout?;
    if (p.open_sessions_count && f.open_sessions) || f.busy_cpu {
        // In use now: at the earliest a full timeout from now.
        return Some(f.now + timeout);
    }
    let since = f.last_activity.map_or(run_start, |a| a.max(run_start));
    Some(since + timeout)
}

/// What is due for one workspace under policy `p`, and what comes next. Pure: the same facts
/// always give the same answer, so a pass that runs twice, or after a restart, decides the same.
pub fn evaluate(p: &Effective, f: &Facts) -> Evaluation {
    let mut candidates: Vec<(OffsetDateTime, Verdict)> = Vec::new();
    if let Some(ttl) = p.ttl {
        if !matches!(f.state, WorkspaceState::Deleting | WorkspaceState::Deleted) {
            candidates.push((f.created_at + ttl, Verdict::Delete(Reason::Ttl)));
        }
    }
    match f.state {
        WorkspaceState::Running => {
            let run_start = f.started_at.unwrap_or(f.created_at);
            if let Some((at, why)) = deadline(p, run_start, f.deadline_at) {
                candidates.push((at, Verdict::Stop(why)));
            }
            if let Some(at) = idle_at(p, f, run_start) {
                candidates.push((at, Verdict::Stop(Reason::Idle)));
            }
        }
        WorkspaceState::Stopped => {
            let stopped = f.stopped_at.unwrap_or(f.created_at);
            if p.delete_on_stop {
                candidates.push((stopped, Verdict::Delete(Reason::DeleteOnStop)));
            }
            if let Some(d) = p.dormancy {
                candidates.push((stopped + d, Verdict::Delete(Reason::Dormancy)));
            }
        }
        WorkspaceState::Failed => {
            if let Some(fc) = p.failure_cleanup {
                let failed = f.stopped_at.unwrap_or(f.created_at);
                candidates.push((failed + fc, Verdict::Delete(Reason::FailureCleanup)));
            }
        }
        WorkspaceState::Starting
        | WorkspaceState::Pending
        | WorkspaceState::Stopping
        | WorkspaceState::Deleting
        | WorkspaceState::Deleted => {}
    }
    // A start (or create) in progress, whatever state it has reached: the job lasts until its
    // lifecycle commands are done.
    if let Some(since) = f.starting_since {
        candidates.push((
            since + p.start_timeout,
            Verdict::FailStart(Reason::StartTimeout),
        ));
    }
    // Deletions win over stops at the same instant; otherwise the earliest wins.
    let rank = |v: &Verdict| match v {
        Verdict::Delete(_) => 0,
        Verdict::FailStart(_) => 1,
        Verdict::Stop(_) => 2,
        Verdict::Start(_) => 3,
    };
    let mut due = candidates
        .iter()
        .filter(|(at, _)| *at <= f.now)
        .min_by_key(|(at, v)| (rank(v), *at))
        .map(|(_, v)| *v);
    // An autostart occurrence since the workspace stopped, unless it is being deleted or the
    // occurrence was missed by too long.
    if f.state == WorkspaceState::Stopped && !matches!(due, Some(Verdict::Delete(_))) {
        let stopped = f.stopped_at.unwrap_or(f.created_at);
        if let Some(occ) = f.autostart_occurrence {
            if p.autostart.is_some()
                && occ > stopped
                && occ <= f.now
                && f.now - occ <= AUTOSTART_GRACE
            {
                due = Some(Verdict::Start(Reason::Autostart));
            }
        }
    }
    let next = candidates
        .iter()
        .filter(|(at, _)| *at > f.now)
        .min_by_key(|(at, v)| (*at, rank(v)))
        .map(|(at, v)| Upcoming {
            verdict: *v,
            at: *at,
        });
    // A dormancy deletion is announced its own lead ahead; everything else five minutes. An idle
    // stop that current use keeps pushing back (an open session, a busy CPU) is not coming: no
    // warning, or a short timeout would warn again at every pass.
    let in_use = (p.open_sessions_count && f.open_sessions) || f.busy_cpu;
    let warn = due.is_none()
        && next.is_some_and(|n| {
            let lead = match n.verdict {
                Verdict::Delete(Reason::Dormancy) => p.dormancy_warning,
                Verdict::FailStart(_) => Duration::ZERO,
                Verdict::Stop(Reason::Idle) if in_use => Duration::ZERO,
                _ => WARNING_LEAD,
            };
            n.at - f.now <= lead && !lead.is_zero()
        });
    Evaluation { due, next, warn }
}

#[cfg(test)]
mod tests;
