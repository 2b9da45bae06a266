//! Quotas, budgets, overrides and cost reports: admins set limits per user, per team and a
//! default per user, and grant overrides; everyone reads their own (and their teams') status
//! and usage, admins and auditors everyone's.

use std::collections::{BTreeMap, HashSet};

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use time::OffsetDateTime;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::{Decision, Op, Owner};
use warren_api::v1::{
    CreateOverride, MyQuota, Quota, QuotaLimits, QuotaOverride, QuotaStatus, UsageReport, UsageRow,
};
use warren_store::clock::parse_time;
use warren_store::{format_time, OverrideRecord, TeamRecord, UsageSegment};

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::{forbidden, Caller};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::quota::{self, Subject};

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_default, put_default, delete_default))
        .routes(routes!(get_quota, put_quota, delete_quota))
        .routes(routes!(list_overrides, create_override))
        .routes(routes!(revoke_override))
        .routes(routes!(my_quota))
        .routes(routes!(usage))
}

fn allow(caller: &Caller, op: Op) -> ApiResult<()> {
    match caller.check(op, None) {
        Decision::Allow => Ok(()),
        Decision::Hidden => Err(ApiError::forbidden("this token may not do that")),
        Decision::Forbidden(f) => Err(forbidden(f)),
    }
}

/// A subject named in a path (`users/alice`, `teams/infra`), with whether the caller reads it
/// as their own (themselves, or a team they are in).
async fn subject(
    state: &AppState,
    caller: &Caller,
    kind: &str,
    name: &str,
) -> ApiResult<(Subject, Owner)> {
    match kind {
        "users" => {
            if name != caller.user.username {
                // Only those who may read others learn whether a user exists.
                allow(caller, Op::UsageRead(Owner::Other))?;
            }
            let (u, own) = crate::routes::user_named(state, caller, name).await?;
            Ok((Subject::user(&u.id), own))
        }
        "teams" => {
            let t = state.store.team(&state.org.id, name).await?;
            if !t
                .as_ref()
                .is_some_and(|t| t.members.contains(&caller.user.id))
            {
                // Only those who may read others learn whether a team exists: a member gets the
                // same refusal for a team they are not in and for no team at all.
                allow(caller, Op::UsageRead(Owner::Other))?;
            }
            let t = t.ok_or_else(|| ApiError::not_found("team", name))?;
            let own = if t.members.contains(&caller.user.id) {
                Owner::Own
            } else {
                Owner::Other
            };
            Ok((Subject::team(&t.id), own))
        }
        _ => Err(ApiError::not_found("quota subject kind", kind)
            .hint("quotas are per user (`/quotas/users/NAME`) or team (`/quotas/teams/NAME`)")),
    }
}

fn quota_view(q: &warren_store::QuotaRecord, subject: &str, name: &str) -> Quota {
    Quota {
        subject: subject.to_owned(),
        name: name.to_owned(),
        limits: quota::limits_of(q),
        updated_at: q.updated_at.clone(),
    }
}

/// The default quota of every user without their own.
#[utoipa::path(get, path = "/api/v1/quotas/default", tag = "quotas", security(("token" = [])),
    responses((status = 200, body = Quota), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_default(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Quota>> {
    allow(&caller, Op::UsageRead(Owner::Own))?;
    let q = state.store.quota("default", "").await?.ok_or_else(|| {
        ApiError::not_found("quota", "default")
            .hint("none is set: users without their own quota are unlimited")
    })?;
    Ok(Json(quota_view(&q, "default", "")))
}

/// Sets the default quota of users (admins).
#[utoipa::path(put, path = "/api/v1/quotas/default", tag = "quotas", security(("token" = [])),
    request_body = QuotaLimits,
    responses((status = 200, body = Quota), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn put_default(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<QuotaLimits>,
) -> ApiResult<Response> {
    caller.require(Op::QuotaAdmin)?;
    quota::validate_limits(&body)?;
    let old = state.store.quota("default", "").await?;
    let q = state
        .store
        .put_quota(&quota::record_of("default", "", &body, &caller.user.id))
        .await?;
    let mut note = AuditNote::target("quota", "default", "default");
    note.diff_json = warren_store::field_diff(
        &serde_json::to_value(old.as_ref().map(quota::limits_of)).unwrap_or_default(),
        &serde_json::to_value(quota::limits_of(&q)).unwrap_or_default(),
    );
    Ok((axum::Extension(note), Json(quota_view(&q, "default", ""))).into_response())
}

/// Removes the default quota (admins).
#[utoipa::path(delete, path = "/api/v1/quotas/default", tag = "quotas", security(("token" = [])),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_default(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require(Op::QuotaAdmin)?;
    if !state.store.delete_quota("default", "").await? {
        return Err(ApiError::not_found("quota", "default"));
    }
    Ok((
        StatusCode::NO_CONTENT,
        axum::Extension(AuditNote::target("quota", "default", "default")),
    )
        .into_response())
}

/// A user's or team's quota status: the limits in force, what runs now, the budget spent this
/// period, overrides in force. Your own and your teams'; admins and auditors anyone's.
#[utoipa::path(get, path = "/api/v1/quotas/{kind}/{name}", tag = "quotas", security(("token" = [])),
    params(("kind" = String, Path, description = "`users` or `teams`"), ("name" = String, Path, description = "username or team name")),
    responses((status = 200, body = QuotaStatus), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_quota(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, name)): Path<(String, String)>,
) -> ApiResult<Json<QuotaStatus>> {
    let (s, own) = subject(&state, &caller, &kind, &name).await?;
    allow(&caller, Op::UsageRead(own))?;
    Ok(Json(quota::status(&state, &s, &name).await?))
}

/// Sets a user's or team's quota, replacing the previous one (admins).
#[utoipa::path(put, path = "/api/v1/quotas/{kind}/{name}", tag = "quotas", security(("token" = [])),
    params(("kind" = String, Path, description = "`users` or `teams`"), ("name" = String, Path, description = "username or team name")),
    request_body = QuotaLimits,
    responses((status = 200, body = QuotaStatus), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn put_quota(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, name)): Path<(String, String)>,
    Json(body): Json<QuotaLimits>,
) -> ApiResult<Response> {
    caller.require(Op::QuotaAdmin)?;
    quota::validate_limits(&body)?;
    let (s, _) = subject(&state, &caller, &kind, &name).await?;
    let old = state.store.quota(s.kind, &s.id).await?;
    let q = state
        .store
        .put_quota(&quota::record_of(s.kind, &s.id, &body, &caller.user.id))
        .await?;
    let mut note = AuditNote::target("quota", &format!("{}:{}", s.kind, s.id), &name);
    note.diff_json = warren_store::field_diff(
        &serde_json::to_value(old.as_ref().map(quota::limits_of)).unwrap_or_default(),
        &serde_json::to_value(quota::limits_of(&q)).unwrap_or_default(),
    );
    let status = quota::status(&state, &s, &name).await?;
    Ok((axum::Extension(note), Json(status)).into_response())
}

/// Removes a user's or team's quota (a user then falls back to the default) (admins).
#[utoipa::path(delete, path = "/api/v1/quotas/{kind}/{name}", tag = "quotas", security(("token" = [])),
    params(("kind" = String, Path, description = "`users` or `teams`"), ("name" = String, Path, description = "username or team name")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_quota(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require(Op::QuotaAdmin)?;
    let (s, _) = subject(&state, &caller, &kind, &name).await?;
    if !state.store.delete_quota(s.kind, &s.id).await? {
        return Err(ApiError::not_found("quota", &name));
    }
    Ok((
        StatusCode::NO_CONTENT,
        axum::Extension(AuditNote::target(
            "quota",
            &format!("{}:{}", s.kind, s.id),
            &name,
        )),
    )
        .into_response())
}

/// A user's or team's overrides, newest first (expired and revoked ones too).
#[utoipa::path(get, path = "/api/v1/quotas/{kind}/{name}/overrides", tag = "quotas", security(("token" = [])),
    params(("kind" = String, Path, description = "`users` or `teams`"), ("name" = String, Path, description = "username or team name")),
    responses((status = 200, body = [QuotaOverride]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_overrides(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, name)): Path<(String, String)>,
) -> ApiResult<Json<Vec<QuotaOverride>>> {
    let (s, own) = subject(&state, &caller, &kind, &name).await?;
    allow(&caller, Op::UsageRead(own))?;
    let users = quota::user_names(&state).await?;
    let now = state.store.now_time();
    Ok(Json(
        state
            .store
            .overrides_of(s.kind, &s.id)
            .await?
            .iter()
            .map(|o| quota::override_view(o, &name, &users, now))
            .collect(),
    ))
}

/// Grants a user or team an override until it expires: `extra_budget` cost units for the
/// period, or `unlimited` (no quota or budget limit) (admins).
#[utoipa::path(post, path = "/api/v1/quotas/{kind}/{name}/overrides", tag = "quotas", security(("token" = [])),
    params(("kind" = String, Path, description = "`users` or `teams`"), ("name" = String, Path, description = "username or team name")),
    request_body = CreateOverride,
    responses((status = 201, body = QuotaOverride), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_override(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, name)): Path<(String, String)>,
    Json(body): Json<CreateOverride>,
) -> ApiResult<Response> {
    caller.require(Op::QuotaAdmin)?;
    let hint = "e.g. {\"extra_budget\": 50, \"duration\": \"7d\", \"note\": \"release week\"}";
    match (body.extra_budget, body.unlimited) {
        (None, false) => {
            return Err(
                ApiError::bad_request("give `extra_budget` or `unlimited: true`").hint(hint),
            )
        }
        (Some(x), _) if !(x.is_finite() && x > 0.0) => {
            return Err(ApiError::bad_request(format!(
                "`extra_budget` must be a positive number of cost units, got {x}"
            ))
            .hint(hint))
        }
        _ => {}
    }
    let now = state.store.now_time();
    let expires = match (&body.expires_at, &body.duration) {
        (Some(at), None) => quota::user_time(
            "expires_at",
            parse_time(at).ok_or_else(|| {
                ApiError::bad_request(format!("`expires_at`: `{at}` is not an RFC 3339 time"))
                    .hint("e.g. 2026-12-01T00:00:00Z, or `duration`: \"7d\"")
            })?,
        )?,
        (None, Some(d)) => {
            now + warren_api::template::parse_duration(d)
                .map_err(|e| ApiError::bad_request(format!("`duration`: {e}")))?
        }
        _ => {
            return Err(
                ApiError::bad_request("give exactly one of `expires_at` and `duration`").hint(hint),
            )
        }
    };
    if expires <= now {
        return Err(ApiError::bad_request(format!(
            "`expires_at`: {} is not in the future",
            format_time(expires)
        )));
    }
    if body.note.as_deref().is_some_and(|n| n.len() > 1000) {
        return Err(ApiError::bad_request("`note` is longer than 1000 bytes"));
    }
    let (s, _) = subject(&state, &caller, &kind, &name).await?;
    let o = state
        .store
        .add_override(&OverrideRecord {
            subject_kind: s.kind.to_owned(),
            subject_id: s.id.clone(),
            extra_budget: body.extra_budget,
            unlimited: body.unlimited,
            expires_at: format_time(expires),
            note: body.note.clone(),
            created_by: caller.user.id.clone(),
            ..Default::default()
        })
        .await?;
    let mut note = AuditNote::target("quota_override", &o.id, &name);
    note.details_json = Some(
        serde_json::json!({"subject": s.kind, "extra_budget": o.extra_budget,
            "unlimited": o.unlimited, "expires_at": o.expires_at, "note": o.note})
        .to_string(),
    );
    let users = quota::user_names(&state).await?;
    Ok((
        StatusCode::CREATED,
        axum::Extension(note),
        Json(quota::override_view(&o, &name, &users, now)),
    )
        .into_response())
}

/// Revokes an override (admins).
#[utoipa::path(delete, path = "/api/v1/quotas/{kind}/{name}/overrides/{id}", tag = "quotas", security(("token" = [])),
    params(("kind" = String, Path, description = "`users` or `teams`"), ("name" = String, Path, description = "username or team name"),
        ("id" = String, Path, description = "override id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_override(
    State(state): State<AppState>,
    caller: Caller,
    Path((kind, name, id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    caller.require(Op::QuotaAdmin)?;
    let (s, _) = subject(&state, &caller, &kind, &name).await?;
    if !state.store.revoke_override(s.kind, &s.id, &id).await? {
        return Err(ApiError::not_found("override", &id).hint(format!(
            "`warren quota overrides --{} {name}` lists them",
            &s.kind
        )));
    }
    Ok((
        StatusCode::NO_CONTENT,
        axum::Extension(AuditNote::target("quota_override", &id, &name)),
    )
        .into_response())
}

/// Your quota status and your teams'.
#[utoipa::path(get, path = "/api/v1/me/quota", tag = "quotas", security(("token" = [])),
    responses((status = 200, body = MyQuota), (status = 403, body = ErrorBody)))]
async fn my_quota(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<MyQuota>> {
    allow(&caller, Op::UsageRead(Owner::Own))?;
    let user = quota::status(
        &state,
        &Subject::user(&caller.user.id),
        &caller.user.username,
    )
    .await?;
    let mut teams = Vec::new();
    for t in my_teams(&state, &caller).await? {
        teams.push(quota::status(&state, &Subject::team(&t.id), &t.name).await?);
    }
    Ok(Json(MyQuota { user, teams }))
}

async fn my_teams(state: &AppState, caller: &Caller) -> ApiResult<Vec<TeamRecord>> {
    Ok(state
        .store
        .teams(&state.org.id)
        .await?
        .into_iter()
        .filter(|t| t.members.contains(&caller.user.id))
        .collect())
}

/// Query of `GET /usage`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// `workspace` (default), `user`, `team`, `template` or `day` (days split at UTC midnight).
    group_by: Option<String>,
    /// Start: RFC 3339, or `YYYY-MM-DD` (its midnight, UTC). Default: the current month's start.
    from: Option<String>,
    /// End (exclusive): RFC 3339, or `YYYY-MM-DD` (that whole day included). Default: the current
    /// month's end. At most 400 days after `from`; years 1970 to 9000.
    to: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

/// Parses `from`/`to`: RFC 3339, or a date (its midnight; for `to`, the next midnight).
fn parse_bound(field: &str, s: &str, end: bool) -> ApiResult<OffsetDateTime> {
    if let Some(t) = parse_time(s) {
        return quota::user_time(field, t);
    }
    let date = || -> Option<time::Date> {
        let mut parts = s.splitn(3, '-');
        let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
        if y.len() != 4 || m.len() != 2 || d.len() != 2 {
            return None;
        }
        let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
        time::Date::from_calendar_date(y.parse().ok()?, month, d.parse().ok()?).ok()
    };
    let d = date().ok_or_else(|| {
        ApiError::bad_request(format!(
            "`{field}`: `{s}` is neither a date (YYYY-MM-DD) nor an RFC 3339 time"
        ))
        .hint("e.g. 2026-11-01 or 2026-11-01T00:00:00Z")
    })?;
    let t = quota::user_time(field, d.with_time(time::Time::MIDNIGHT).assume_utc())?;
    // Within the years allowed, the next day always exists.
    Ok(if end {
        t.saturating_add(time::Duration::days(1))
    } else {
        t
    })
}

/// The longest range one `GET /usage` covers.
const MAX_RANGE_DAYS: i64 = 400;

/// Rounds to a millionth, so that sums of exact hours read exactly.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Usage and cost: hours running and stopped and cost units, grouped by workspace, user, team,
/// template or day, between `from` and `to` (default: this month), as JSON or CSV. Members see
/// their own usage (and their teams' when grouping by team); admins and auditors everyone's.
#[utoipa::path(get, path = "/api/v1/usage", tag = "quotas", security(("token" = [])),
    params(UsageQuery),
    responses((status = 200, body = UsageReport, description = "JSON, or text/csv with format=csv"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) =
        q.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    allow(&caller, Op::UsageRead(Owner::Own))?;
    let group_by = q.group_by.as_deref().unwrap_or("workspace");
    if !["workspace", "user", "team", "template", "day"].contains(&group_by) {
        return Err(ApiError::bad_request(format!(
            "`group_by`: unknown grouping `{group_by}`: expected workspace, user, team, template or day"
        )));
    }
    let csv = match q.format.as_deref().unwrap_or("json") {
        "json" => false,
        "csv" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "`format`: unknown format `{other}`: expected json or csv"
            )))
        }
    };
    let now = state.store.now_time();
    let (month_start, month_end) = quota::Period::Month.bounds(now);
    let from = match &q.from {
        Some(s) => parse_bound("from", s, false)?,
        None => month_start,
    };
    let to = match &q.to {
        Some(s) => parse_bound("to", s, true)?,
        None => month_end,
    };
    if from >= to {
        return Err(ApiError::bad_request(format!(
            "`from` ({}) must be before `to` ({})",
            format_time(from),
            format_time(to)
        )));
    }
    if to - from > time::Duration::days(MAX_RANGE_DAYS) {
        return Err(ApiError::bad_request(format!(
            "`to`: `from` and `to` are more than {MAX_RANGE_DAYS} days apart"
        ))
        .hint("ask for a year at a time, e.g. from=2026-01-01&to=2026-12-31"));
    }
    let everyone = caller.check(Op::UsageRead(Owner::Other), None) == Decision::Allow;
    let teams = state.store.teams(&state.org.id).await?;
    let my_teams: HashSet<&str> = teams
        .iter()
        .filter(|t| t.members.contains(&caller.user.id))
        .map(|t| t.id.as_str())
        .collect();
    // Those who may not read everyone's usage load only their own segments (and, grouping by
    // team, their teams').
    let team_filter: Vec<String> = if group_by == "team" {
        my_teams.iter().map(|t| (*t).to_owned()).collect()
    } else {
        Vec::new()
    };
    let segs = state
        .store
        .usage_segments_of(
            &format_time(from),
            &format_time(to.min(now.max(from))),
            (!everyone).then_some((caller.user.id.as_str(), team_filter.as_slice())),
        )
        .await?;
    let visible = |g: &UsageSegment| {
        everyone
            || g.owner_id == caller.user.id
            || (group_by == "team" && g.team_id.as_deref().is_some_and(|t| my_teams.contains(t)))
    };
    let users = quota::user_names(&state).await?;
    let team_names: BTreeMap<&str, &str> = teams
        .iter()
        .map(|t| (t.id.as_str(), t.name.as_str()))
        .collect();
    let mut template_names: BTreeMap<String, String> = BTreeMap::new();
    // key -> (name, running hours, stopped hours, cost)
    let mut rows: BTreeMap<String, (String, f64, f64, f64)> = BTreeMap::new();
    let mut add = |key: String, name: String, class: &str, hours: f64, rate: f64| {
        if hours <= 0.0 {
            return;
        }
        let r = rows.entry(key).or_insert((name, 0.0, 0.0, 0.0));
        if class == "running" {
            r.1 += hours;
        } else {
            r.2 += hours;
        }
        r.3 += hours * rate;
    };
    for g in segs.iter().filter(|g| visible(g)) {
        if group_by == "day" {
            // Split at each UTC midnight.
            let mut day_start = quota::Period::Day
                .bounds(from.max(parse_time(&g.started_at).unwrap_or(from)))
                .0;
            while day_start < to {
                let day_end = day_start.saturating_add(time::Duration::days(1));
                let h = quota::overlap_hours(g, day_start.max(from), day_end.min(to), now);
                let label = format!(
                    "{:04}-{:02}-{:02}",
                    day_start.year(),
                    day_start.month() as u8,
                    day_start.day()
                );
                add(label.clone(), label, &g.class, h, g.rate_per_hour);
                let seg_end = g.ended_at.as_deref().and_then(parse_time).unwrap_or(now);
                if day_end >= seg_end {
                    break;
                }
                day_start = day_end;
            }
            continue;
        }
        let h = quota::overlap_hours(g, from, to, now);
        let (key, name) = match group_by {
            "workspace" => (
                g.workspace_id.clone(),
                format!(
                    "{}.{}",
                    g.workspace_name,
                    users.get(&g.owner_id).cloned().unwrap_or_default()
                ),
            ),
            "user" => (
                g.owner_id.clone(),
                users
                    .get(&g.owner_id)
                    .cloned()
                    .unwrap_or_else(|| g.owner_id.clone()),
            ),
            "team" => match g.team_id.as_deref() {
                Some(t) => (
                    t.to_owned(),
                    team_names
                        .get(t)
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| t.to_owned()),
                ),
                None => (String::new(), "(no team)".to_owned()),
            },
            _ => match g.template_id.as_deref() {
                Some(t) => {
                    if !template_names.contains_key(t) {
                        let n = state
                            .store
                            .template_by_id(t)
                            .await?
                            .map(|r| r.name)
                            .unwrap_or_else(|| t.to_owned());
                        template_names.insert(t.to_owned(), n);
                    }
                    (t.to_owned(), template_names[t].clone())
                }
                None => (String::new(), "(no template)".to_owned()),
            },
        };
        add(key, name, &g.class, h, g.rate_per_hour);
    }
    let mut out: Vec<UsageRow> = rows
        .into_iter()
        .map(|(key, (name, r, s, c))| UsageRow {
            key,
            name,
            hours_running: round6(r),
            hours_stopped: round6(s),
            cost: round6(c),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.key.cmp(&b.key)));
    let total = UsageRow {
        key: String::new(),
        name: "total".into(),
        hours_running: round6(out.iter().map(|r| r.hours_running).sum()),
        hours_stopped: round6(out.iter().map(|r| r.hours_stopped).sum()),
        cost: round6(out.iter().map(|r| r.cost).sum()),
    };
    let report = UsageReport {
        from: format_time(from),
        to: format_time(to),
        group_by: group_by.to_owned(),
        rows: out,
        total,
    };
    if csv {
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"warren-usage.csv\"",
                ),
            ],
            to_csv(&report),
        )
            .into_response());
    }
    Ok(Json(report).into_response())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The CSV form of a report: a header, one line per row (no total).
pub fn to_csv(r: &UsageReport) -> String {
    let mut out = format!(
        "{},id,hours_running,hours_stopped,cost\n",
        csv_field(&r.group_by)
    );
    for row in &r.rows {
        out.push_str(&format!(
            "{},{},{},{},{}\n",
            csv_field(&row.name),
            csv_field(&row.key),
            row.hours_running,
            row.hours_stopped,
            row.cost
        ));
    }
    out
}
