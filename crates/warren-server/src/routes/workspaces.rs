//! Workspaces: create (from a template or an uploaded folder), list, get, transitions as jobs,
//! cancel, extend, lifecycle and job logs (Server-Sent Events), and exec (NDJSON stream or
//! WebSocket), and the SSH tunnel (WebSocket to the SSH gateway).

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::{Decision, Op, Owner};
use warren_api::policy::Reason;
use warren_api::policy::WorkspacePolicy;
use warren_api::template::{Ceilings, ParamSpec, PolicyDefaults};
use warren_api::v1::{
    self, Accepted, CreateWorkspace, Extend, Job, UpdateWorkspace, WorkspaceList,
};
use warren_api::{ErrorCode, Workspace, WorkspaceName, WorkspaceState};
use warren_engine::{Limits, Ownership, UpOptions, WsRef};
use warren_store::{JobRecord, WorkspaceFilter, WorkspaceRecord};

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::{forbidden, Caller};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::jobs;
use crate::routes::find_workspace;

pub mod credential;
pub mod exec;
pub mod network;
pub mod policy;
pub mod ports;
pub mod ssh_access;
pub mod ssh_tunnel;
pub mod terminal;
pub mod toolbox;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workspaces, create_workspace))
        .routes(routes!(get_workspace, delete_workspace, update_workspace))
        .routes(routes!(start_workspace))
        .routes(routes!(stop_workspace))
        .routes(routes!(restart_workspace))
        .routes(routes!(extend_workspace))
        .routes(routes!(workspace_jobs))
        .routes(routes!(workspace_logs))
        .routes(routes!(workspace_activity))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(job_logs))
        .merge(exec::router())
        .merge(ssh_tunnel::router())
        .merge(ports::router())
        .merge(ssh_access::router())
        .merge(terminal::router())
        .merge(policy::router())
        .merge(network::router())
        .merge(toolbox::router())
        .merge(credential::router())
}

/// The API view of a workspace: the host path of its project folder is the server's business.
pub fn ws_view(rec: WorkspaceRecord) -> Workspace {
    Workspace {
        project_dir: String::new(),
        ..Workspace::from(rec)
    }
}

/// The API view of a job.
pub fn job_view(j: &JobRecord) -> Job {
    Job {
        id: j.id.clone(),
        workspace_id: j.workspace_id.clone(),
        kind: j.kind.clone(),
        status: j.status.clone(),
        initiator_id: j.initiator_id.clone(),
        error: j.error.clone(),
        created_at: j.created_at.clone(),
        started_at: j.started_at.clone(),
        finished_at: j.finished_at.clone(),
    }
}

/// Query of `GET /workspaces`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `me` (default), `all` (admins and auditors), or a username.
    owner: Option<String>,
    /// Only workspaces in this state.
    status: Option<String>,
    /// Only workspaces built from this template.
    template: Option<String>,
    /// Only names starting with this.
    name_prefix: Option<String>,
    /// Page size (default 50, at most 500).
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn bad_query(e: axum::extract::rejection::QueryRejection) -> ApiError {
    ApiError::bad_request(format!("invalid query: {}", e.body_text()))
}

/// Lists workspaces the caller may see, with filters and pagination.
#[utoipa::path(get, path = "/api/v1/workspaces", tag = "workspaces", security(("token" = [])),
    params(ListQuery),
    responses((status = 200, body = WorkspaceList), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_workspaces(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<WorkspaceList>> {
    let Query(q) = q.map_err(bad_query)?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is out of range: 1 to 500"
        )));
    }
    let mut filter = WorkspaceFilter {
        limit: limit + 1,
        exclude_local: true,
        ..Default::default()
    };
    match q.owner.as_deref().unwrap_or("me") {
        "me" => {
            check(&caller, Op::WorkspaceRead(Owner::Own))?;
            filter.owner_id = Some(caller.user.id.clone());
        }
        "all" => check(&caller, Op::WorkspaceRead(Owner::Other))?,
        name => {
            let (u, own) = crate::routes::user_named(&state, &caller, name).await?;
            check(&caller, Op::WorkspaceRead(own))?;
            filter.owner_id = Some(u.id);
        }
    }
    if let Some(s) = &q.status {
        filter.state = Some(
            s.parse::<WorkspaceState>()
                .map_err(|e| ApiError::bad_request(format!("status: {e}")))?,
        );
    }
    if let Some(t) = &q.template {
        let tpl = state
            .store
            .template(&state.org.id, t)
            .await?
            .ok_or_else(|| ApiError::not_found("template", t))?;
        filter.template_id = Some(tpl.id);
    }
    filter.name_prefix = q.name_prefix.clone();
    if let Some(c) = &q.cursor {
        filter.after = Some(decode_cursor(c)?);
    }
    if let Some(ids) = &caller.principal.workspaces {
        filter.ids = Some(ids.iter().cloned().collect());
    }
    let mut recs = state.store.list_filtered(&filter).await?;
    let next_cursor = if recs.len() > limit as usize {
        recs.truncate(limit as usize);
        recs.last().map(|r| encode_cursor(r.name.as_str(), &r.id))
    } else {
        None
    };
    Ok(Json(WorkspaceList {
        workspaces: recs.into_iter().map(ws_view).collect(),
        next_cursor,
    }))
}

fn check(caller: &Caller, op: Op) -> ApiResult<()> {
    match caller.check(op, None) {
        Decision::Allow => Ok(()),
        Decision::Hidden => Err(ApiError::forbidden(
            "this token may not list those workspaces",
        )),
        Decision::Forbidden(f) => Err(forbidden(f)),
    }
}

fn encode_cursor(name: &str, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{name}\n{id}"))
}

fn decode_cursor(c: &str) -> ApiResult<(String, String)> {
    let bad = || ApiError::bad_request("cursor: not a cursor returned by this API");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| bad())?;
    let s = String::from_utf8(bytes).map_err(|_| bad())?;
    let (n, i) = s.split_once('\n').ok_or_else(bad)?;
    Ok((n.to_string(), i.to_string()))
}

fn limits_of(c: &Ceilings) -> Limits {
    Limits {
        memory_bytes: c.memory_mb.map(|m| m.saturating_mul(1 << 20)),
        cpus: c.cpus,
        pids: c.pids.and_then(|p| i64::try_from(p).ok()),
    }
}

/// Where the project folders of server-made workspaces live.
fn projects_dir(state: &AppState) -> PathBuf {
    state.cfg.state_dir.join("projects")
}

/// Creates a workspace from a template version or an uploaded folder; the work happens in a
/// `create` job.
#[utoipa::path(post, path = "/api/v1/workspaces", tag = "workspaces", security(("token" = [])),
    request_body = CreateWorkspace,
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_workspace(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateWorkspace>,
) -> ApiResult<Response> {
    let (rec, job, note) = create(&state, &caller, body).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Extension(note),
        Json(Accepted {
            workspace: ws_view(rec),
            job: job_view(&job),
        }),
    )
        .into_response())
}

/// What `POST /workspaces` does (quotas, template, parameters, network, policy), for its handler
/// and for tasks: the new record, its `create` job, and the audit note naming it.
pub(crate) async fn create(
    state: &AppState,
    caller: &Caller,
    body: CreateWorkspace,
) -> ApiResult<(WorkspaceRecord, JobRecord, AuditNote)> {
    let (state, caller) = (state.clone(), caller.clone());
    check(&caller, Op::WorkspaceWrite(Owner::Own))?;
    if caller.principal.workspaces.is_some() {
        return Err(ApiError::forbidden(
            "a token restricted to named workspaces cannot create workspaces",
        ));
    }
    let name = WorkspaceName::new(body.name.clone()).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidName,
            e.to_string(),
        )
    })?;
    if let Some(t) = &body.ttl {
        warren_api::template::parse_duration(t)
            .map_err(|e| ApiError::bad_request(format!("ttl `{t}`: {e}")))?;
    }
    if state
        .store
        .get_by_name(&caller.user.id, name.as_str())
        .await?
        .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::NameTaken,
            format!("you already have a workspace named `{name}`"),
        )
        .hint("pick another name, or delete the existing one"));
    }
    let team_id = charged_team(&state, &caller, body.team.as_deref()).await?;
    // Requested secrets must exist for the owner before anything is made (the template's are
    // checked once the template is known, below).
    if body.template.is_none() {
        crate::secrets::check_requested(&state, &caller.user.id, None, &body.secrets).await?;
    }
    let dir = projects_dir(&state).join(uuid::Uuid::new_v4().simple().to_string());
    let (version, template_id, params, ceilings) = match (&body.template, &body.file_id) {
        (Some(t), None) => {
            let (tpl, v) =
                crate::routes::templates::resolve_version(&state, t, body.template_version).await?;
            crate::secrets::check_requested(&state, &caller.user.id, Some(&tpl.id), &body.secrets)
                .await?;
            let specs: Vec<ParamSpec> = serde_json::from_str(&v.parameters_json)
                .map_err(|e| ApiError::internal(format!("version {}: {e}", v.id)))?;
            let params = warren_api::template::resolve(&specs, &body.parameters, None)?;
            let ceilings: Ceilings = serde_json::from_str(&v.ceilings_json).unwrap_or_default();
            {
                let (st, v, p, d) = (state.clone(), v.clone(), params.clone(), dir.clone());
                tokio::task::spawn_blocking(move || {
                    crate::routes::templates::materialize(&st, &v, &p, &d)
                })
                .await
                .map_err(ApiError::internal)??;
            }
            (v, Some(tpl.id), params, ceilings)
        }
        (None, Some(file_id)) => {
            if body.template_version.is_some() || !body.parameters.is_empty() {
                return Err(ApiError::bad_request(
                    "template_version and parameters need a template, not a file_id",
                ));
            }
            let v = adhoc_version(&state, &caller, file_id, &dir).await?;
            (v, None, BTreeMap::new(), Ceilings::default())
        }
        _ => {
            return Err(
                ApiError::bad_request("give exactly one of `template` and `file_id`")
                    .hint("`warren create NAME --template T` or `warren up DIR`"),
            )
        }
    };
    let cleanup = |e: ApiError| {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(warren_engine::server_config_path(&dir));
        e
    };
    // Requested resources must fit the ceilings; unset ones default to the ceilings.
    let requested = body.limits.unwrap_or_default();
    requested
        .validate()
        .map_err(|e| cleanup(ApiError::bad_request(format!("limits: {e}"))))?;
    ceilings.check(&requested).map_err(|e| {
        cleanup(
            ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::LimitExceeded, e)
                .hint("ask for less, or ask a template admin to raise the template's ceilings"),
        )
    })?;
    // The workspace's own policy values (`ttl` is a shorthand), within the template's.
    let mut own = body.policy.clone().unwrap_or_default();
    if let Some(t) = &body.ttl {
        own.ttl = Some(t.clone());
    }
    let policy_json = if own == WorkspacePolicy::default() {
        None
    } else {
        let template: Option<PolicyDefaults> = serde_json::from_str(&version.policy_json).ok();
        warren_api::policy::resolve(template.as_ref(), Some(&own)).map_err(|e| {
            cleanup(
                ApiError::bad_request(format!("policy: {e}"))
                    .hint("`warren template show` lists the template's policy and ceilings"),
            )
        })?;
        Some(serde_json::to_string(&own).map_err(ApiError::internal)?)
    };
    // Its network: the template's policy (or the server's default), then its own.
    let base_network = serde_json::from_str::<PolicyDefaults>(&version.policy_json)
        .ok()
        .and_then(|p| p.network)
        .unwrap_or_else(|| state.cfg.default_network.clone());
    let owner = crate::net::Owner {
        owner_id: &caller.user.id,
        workspace_id: None,
        caller: Some(&caller),
    };
    let egress = crate::net::plan(&state, owner, &base_network, body.network.as_ref(), true)
        .await
        .map_err(cleanup)?;
    let network_json = body
        .network
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(ApiError::internal)?;
    let effective = Ceilings {
        cpus: requested.cpus.or(ceilings.cpus),
        memory_mb: requested.memory_mb.or(ceilings.memory_mb),
        disk_mb: requested.disk_mb.or(ceilings.disk_mb),
        pids: requested.pids.or(ceilings.pids),
    };
    let opts = UpOptions {
        name: Some(name.to_string()),
        limits: limits_of(&effective),
        ownership: Ownership {
            owner_id: caller.user.id.clone(),
            org_id: state.org.id.clone(),
            template_id: template_id.clone(),
            template_version_id: Some(version.id.clone()),
            parameters_json: serde_json::to_string(&params).unwrap_or_else(|_| "{}".into()),
            ttl_secs: None,
            deadline_at: None,
            policy_json,
            limits_json: serde_json::to_string(&limits_of(&effective))
                .unwrap_or_else(|_| "{}".into()),
            team_id: team_id.clone(),
            cost_json: cost_snapshot(&state, &version),
        },
        create_only: true,
        ..Default::default()
    };
    let rendered = match &body.template {
        Some(_) => warren_api::template::substitute_params(&version.devcontainer_json, &params),
        None => version.devcontainer_json.clone(),
    };
    write_server_config(&dir, &rendered).map_err(cleanup)?;
    // Creating starts it: the quota locks are held until its job exists.
    let _admitted = crate::quota::admit(
        &state,
        None,
        &caller.user.id,
        team_id.as_deref(),
        crate::quota::Demand::of(&opts.ownership.limits_json),
    )
    .await
    .map_err(cleanup)?;
    let (rec, warnings) = state
        .engine
        .create_pending(&dir, &opts)
        .await
        .map_err(|e| cleanup(e.into()))?;
    if let Err(e) = state.engine.set_network(&rec, network_json, &egress).await {
        let _ = state.engine.delete(WsRef::Id(rec.id.clone()), true).await;
        return Err(cleanup(e.into()));
    }
    if let Err(e) = state
        .store
        .set_workspace_secrets(&rec.id, &body.secrets)
        .await
    {
        let _ = state.engine.delete(WsRef::Id(rec.id.clone()), true).await;
        return Err(cleanup(e.into()));
    }
    let id = rec.id.clone();
    let how = warren_engine::Hooks {
        attach: true,
        wait_all: body.wait_all,
    };
    let job = jobs::spawn(
        &state,
        &rec.id,
        "create",
        Some(&caller.user.id),
        Reason::User,
        move |st, log| async move {
            for w in &warnings {
                warren_engine::Progress::warn(&*log, w);
            }
            st.engine.provision_with(&id, how, &*log).await.map(|_| ())
        },
    )
    .await?;
    let mut note = AuditNote::target("workspace", &rec.id, rec.name.as_str());
    note.details_json = Some(
        serde_json::json!({
            "template": body.template, "template_version_id": version.id,
            "parameters": params, "job": job.id, "secrets": body.secrets,
        })
        .to_string(),
    );
    Ok((rec, job, note))
}

/// The cost rates a workspace made from `version` is metered at (none: free): the version's
/// declared `cost`, or, when it declares none (uploaded folders' ad-hoc versions included), the
/// server's `default_running_cost` / `default_stopped_cost`, so that no workspace escapes
/// budgets by having no template.
fn cost_snapshot(state: &AppState, version: &warren_store::VersionRecord) -> Option<String> {
    let declared: warren_api::template::CostRates =
        serde_json::from_str(&version.cost_json).unwrap_or_default();
    if declared.running_per_hour.is_none() && declared.stopped_per_hour.is_none() {
        let rates = state.cfg.default_cost;
        return (!rates.is_free()).then(|| serde_json::to_string(&rates).unwrap_or_default());
    }
    (!declared.is_free()).then(|| version.cost_json.clone())
}

/// The team a new workspace of the caller is charged to: the one named (the caller must be a
/// member), else the caller's only team; none for a caller in no team, or in several without
/// quotas. A caller in several teams of which one has a quota must say which.
pub(crate) async fn charged_team(
    state: &AppState,
    caller: &Caller,
    named: Option<&str>,
) -> ApiResult<Option<String>> {
    let teams = state.store.teams(&state.org.id).await?;
    let mine: Vec<&warren_store::TeamRecord> = teams
        .iter()
        .filter(|t| t.members.contains(&caller.user.id))
        .collect();
    let names = || {
        mine.iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = named {
        let Some(t) = teams.iter().find(|t| t.name == name) else {
            return Err(ApiError::not_found("team", name).hint(if mine.is_empty() {
                "you are in no team: leave out `team`".to_owned()
            } else {
                format!("your teams: {}", names())
            }));
        };
        if !t.members.contains(&caller.user.id) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::PermissionDenied,
                format!("you are not a member of team `{name}`: a workspace can be charged only to your own teams"),
            )
            .hint(if mine.is_empty() {
                "leave out `--team`, or ask an admin to add you to the team".to_owned()
            } else {
                format!("your teams: {}", names())
            }));
        }
        return Ok(Some(t.id.clone()));
    }
    match mine.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.id.clone())),
        several => {
            let quotas = state.store.quotas().await?;
            let limited = several.iter().any(|t| {
                quotas
                    .iter()
                    .any(|q| q.subject_kind == "team" && q.subject_id == t.id)
            });
            if limited {
                Err(ApiError::bad_request(format!(
                    "you are in several teams ({}) and at least one has a quota: say which to charge",
                    names()
                ))
                .hint("pass `--team TEAM` (API: `\"team\": \"TEAM\"`)"))
            } else {
                Ok(None)
            }
        }
    }
}

/// Writes the rendered devcontainer.json beside the project folder (see
/// [`warren_engine::server_config_path`]), where the engine reads it from.
fn write_server_config(dir: &FsPath, text: &str) -> ApiResult<()> {
    let dir = std::fs::canonicalize(dir).map_err(ApiError::internal)?;
    let path = warren_engine::server_config_path(&dir);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(ApiError::internal)?;
    std::fs::rename(&tmp, &path).map_err(ApiError::internal)
}

/// Changes a workspace's parameter values or template version and rebuilds it (an `update` job).
#[utoipa::path(patch, path = "/api/v1/workspaces/{ws}", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = UpdateWorkspace,
    responses((status = 202, body = Accepted), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn update_workspace(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<UpdateWorkspace>,
) -> ApiResult<Response> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceWrite).await?;
    let Some(template_id) = rec.ownership.template_id.clone() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::InvalidState,
            format!(
                "workspace `{}` was not built from a template: it has no parameters",
                rec.name
            ),
        )
        .hint("change its devcontainer.json and recreate it with `warren up`"));
    };
    if let Some(active) = state.store.active_job(&rec.id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::TransitionInProgress,
            format!(
                "workspace `{}` has a transition in progress: job {} ({})",
                rec.name, active.id, active.kind
            ),
        ));
    }
    let tpl = state
        .store
        .template_by_id(&template_id)
        .await?
        .ok_or_else(|| ApiError::not_found("template", &template_id))?;
    let version = match body.template_version {
        Some(n) => {
            crate::routes::templates::resolve_version(&state, &tpl.name, Some(n))
                .await?
                .1
        }
        None => {
            let vid = rec
                .ownership
                .template_version_id
                .clone()
                .unwrap_or_default();
            state
                .store
                .version(&vid)
                .await?
                .ok_or_else(|| ApiError::not_found("template version", &vid))?
        }
    };
    let specs: Vec<ParamSpec> = serde_json::from_str(&version.parameters_json)
        .map_err(|e| ApiError::internal(format!("version {}: {e}", version.id)))?;
    let previous: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&rec.ownership.parameters_json).unwrap_or_default();
    let params = warren_api::template::resolve(&specs, &body.parameters, Some(&previous))?;
    for (name, value) in &params {
        if value.to_string().contains("${") {
            return Err(warren_api::template::ParamError::new(
                name,
                "values may not contain `${` (variables are not expanded in parameter values)",
            )
            .into());
        }
    }
    let rendered = warren_api::template::substitute_params(&version.devcontainer_json, &params);
    crate::routes::templates::check_devcontainer(&rendered)?;
    // The rebuild starts it again: a start as far as quotas and budgets go.
    let _admitted = admit(&state, &rec, by(&caller, &rec)).await?;
    let job = jobs::spawn(
        &state,
        &rec.id,
        "update",
        Some(&caller.user.id),
        by(&caller, &rec),
        {
            let id = rec.id.clone();
            let project = rec.project_dir.clone();
            let version_id = version.id.clone();
            let cost = cost_snapshot(&state, &version);
            let params_json = serde_json::to_string(&params).unwrap_or_else(|_| "{}".into());
            move |st, log| async move {
                warren_engine::Progress::step(&*log, "Stopping the workspace to rebuild it");
                st.engine.unprovision(&id).await?;
                let path = warren_engine::server_config_path(FsPath::new(&project));
                std::fs::write(&path, rendered).map_err(|e| {
                    warren_engine::EngineError::Internal(format!("write {}: {e}", path.display()))
                })?;
                st.store
                    .set_template_version(&id, &version_id, &params_json)
                    .await?;
                // The new version's network policy, before it starts again.
                crate::net::refresh_id(&st, &id).await?;
                // Metered at the new version's rates from now on.
                st.store.reprice(&id, cost.as_deref()).await?;
                st.engine.provision(&id, &*log).await.map(|_| ())
            }
        },
    )
    .await?;
    let mut note = AuditNote::target("workspace", &rec.id, rec.name.as_str());
    note.diff_json = warren_store::field_diff(
        &serde_json::json!({"parameters": previous, "template_version_id": rec.ownership.template_version_id}),
        &serde_json::json!({"parameters": params, "template_version_id": version.id}),
    );
    let fresh = state.store.get(&rec.id).await?.unwrap_or(rec);
    Ok((
        StatusCode::ACCEPTED,
        axum::Extension(note),
        Json(Accepted {
            workspace: ws_view(fresh),
            job: job_view(&job),
        }),
    )
        .into_response())
}

/// Records the ad-hoc template version of a folder uploaded by `warren up DIR` and unpacks it
/// into `dir`.
async fn adhoc_version(
    state: &AppState,
    caller: &Caller,
    file_id: &str,
    dir: &FsPath,
) -> ApiResult<warren_store::VersionRecord> {
    if !state.store.has_file(file_id).await? {
        return Err(ApiError::not_found("file", file_id)
            .hint("upload the folder first: POST /api/v1/files"));
    }
    let tar = crate::routes::files::file_path(state, file_id)?;
    let d = dir.to_path_buf();
    tokio::task::spawn_blocking(move || crate::routes::files::extract(&tar, &d))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            let _ = std::fs::remove_dir_all(dir);
            ApiError::bad_request(format!("uploaded folder: {e}"))
        })?;
    let text = [".devcontainer/devcontainer.json", ".devcontainer.json"]
        .iter()
        .find_map(|p| std::fs::read_to_string(dir.join(p)).ok())
        .ok_or_else(|| {
            let _ = std::fs::remove_dir_all(dir);
            ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidConfig,
                "the uploaded folder has no .devcontainer/devcontainer.json or .devcontainer.json",
            )
        })?;
    Ok(state
        .store
        .add_adhoc_version(warren_store::NewVersion {
            message: Some("ad-hoc version from an uploaded folder".into()),
            devcontainer_json: text,
            file_id: Some(file_id.to_string()),
            parameters_json: "[]".into(),
            ceilings_json: "{}".into(),
            policy_json: "{}".into(),
            cost_json: "{}".into(),
            created_by: caller.user.id.clone(),
        })
        .await?)
}

/// A workspace by name (yours), `name.username`, or id.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace name, name.username, or id")),
    responses((status = 200, body = Workspace), (status = 404, body = ErrorBody)))]
async fn get_workspace(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<Workspace>> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceRead).await?;
    Ok(Json(ws_view(rec)))
}

/// Why a user's request acts on a workspace: its owner's, or someone else's with the right.
pub(crate) fn by(caller: &Caller, rec: &WorkspaceRecord) -> Reason {
    if caller.user.id == rec.ownership.owner_id {
        Reason::User
    } else {
        Reason::Admin
    }
}

/// Records and runs a `start` job for the workspace (the first start of a workspace created
/// without starting provisions it).
pub(crate) async fn spawn_start(
    state: &AppState,
    rec: &WorkspaceRecord,
    initiator: Option<&str>,
    reason: Reason,
) -> ApiResult<JobRecord> {
    let never_provisioned = rec.spec_json.is_empty();
    let id = rec.id.clone();
    // The quota locks are held until the job exists, so a concurrent start counts this one.
    let _admitted = admit(state, rec, reason).await?;
    jobs::spawn(
        state,
        &rec.id,
        "start",
        initiator,
        reason,
        move |st, log| async move {
            if never_provisioned {
                st.engine.provision(&id, &*log).await.map(|_| ())
            } else {
                st.engine.start(WsRef::Id(id), &*log).await.map(|_| ())
            }
        },
    )
    .await
}

/// Checks the owner's and team's quotas and budgets before a start of `rec` (see
/// [`crate::quota::admit`]); a refused autostart is recorded as an event.
async fn admit(
    state: &AppState,
    rec: &WorkspaceRecord,
    reason: Reason,
) -> ApiResult<Vec<crate::coord::LockGuard>> {
    let res = crate::quota::admit(
        state,
        Some(&rec.id),
        &rec.ownership.owner_id,
        rec.ownership.team_id.as_deref(),
        crate::quota::Demand::of(&rec.ownership.limits_json),
    )
    .await;
    if let Err(e) = &res {
        if reason == Reason::Autostart
            && matches!(
                e.body.code,
                ErrorCode::QuotaExceeded | ErrorCode::BudgetExhausted
            )
        {
            crate::quota::record_refused_start(state, rec, reason, e).await;
        }
    }
    res
}

/// Records and runs a `stop` job.
pub(crate) async fn spawn_stop(
    state: &AppState,
    rec: &WorkspaceRecord,
    initiator: Option<&str>,
    reason: Reason,
) -> ApiResult<JobRecord> {
    let id = rec.id.clone();
    jobs::spawn(
        state,
        &rec.id,
        "stop",
        initiator,
        reason,
        move |st, log| async move {
            warren_engine::Progress::step(&*log, "Stopping workspace");
            st.toolbox.forget_workspace(&id);
            st.engine.stop(WsRef::Id(id)).await.map(|_| ())
        },
    )
    .await
}

/// Records and runs a `delete` job: the workspace, and the project folder of a server-made one.
pub(crate) async fn spawn_delete(
    state: &AppState,
    rec: &WorkspaceRecord,
    initiator: Option<&str>,
    reason: Reason,
) -> ApiResult<JobRecord> {
    let id = rec.id.clone();
    let owner = rec.ownership.owner_id.clone();
    let project = rec.project_dir.clone();
    let projects = projects_dir(state);
    jobs::spawn(
        state,
        &rec.id,
        "delete",
        initiator,
        reason,
        move |st, log| async move {
            warren_engine::Progress::step(&*log, "Deleting workspace");
            // Its credentials stop working before anything is torn down.
            if let Err(e) = crate::secrets::revoke_workspace(&st, &id).await {
                return Err(warren_engine::EngineError::Internal(format!(
                    "revoking the workspace's credentials: {}",
                    e.body.message
                )));
            }
            st.toolbox.forget_workspace(&id);
            st.engine.delete(WsRef::Id(id), true).await?;
            crate::net::after_delete(&st, &owner).await;
            // The project folder of a server-made workspace goes with it.
            let projects = std::fs::canonicalize(&projects).unwrap_or(projects);
            if FsPath::new(&project).starts_with(&projects) {
                let _ = std::fs::remove_dir_all(&project);
                let _ =
                    std::fs::remove_file(warren_engine::server_config_path(FsPath::new(&project)));
            }
            Ok(())
        },
    )
    .await
}

async fn transition(
    state: AppState,
    caller: Caller,
    ws: String,
    kind: &'static str,
) -> ApiResult<Response> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceWrite).await?;
    let id = rec.id.clone();
    let who = Some(caller.user.id.as_str());
    let reason = by(&caller, &rec);
    let job = match kind {
        "start" => spawn_start(&state, &rec, who, reason).await?,
        "stop" => spawn_stop(&state, &rec, who, reason).await?,
        "restart" => {
            let _admitted = admit(&state, &rec, reason).await?;
            jobs::spawn(
                &state,
                &rec.id,
                kind,
                who,
                reason,
                move |st, log| async move {
                    st.toolbox.forget_workspace(&id);
                    st.engine.restart(WsRef::Id(id), &*log).await.map(|_| ())
                },
            )
            .await?
        }
        _ => spawn_delete(&state, &rec, who, reason).await?,
    };
    let fresh = state.store.get(&rec.id).await?.unwrap_or(rec);
    let note = AuditNote::target("workspace", &fresh.id, fresh.name.as_str());
    Ok((
        StatusCode::ACCEPTED,
        axum::Extension(note),
        Json(Accepted {
            workspace: ws_view(fresh),
            job: job_view(&job),
        }),
    )
        .into_response())
}

/// Starts a workspace (a `start` job).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/start", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn start_workspace(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Response> {
    transition(state, caller, ws, "start").await
}

/// Stops a workspace (a `stop` job); its files are kept.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/stop", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn stop_workspace(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Response> {
    transition(state, caller, ws, "stop").await
}

/// Restarts a workspace (a `restart` job).
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/restart", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn restart_workspace(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Response> {
    transition(state, caller, ws, "restart").await
}

/// Deletes a workspace and everything it has (a `delete` job; a running one is stopped first).
#[utoipa::path(delete, path = "/api/v1/workspaces/{ws}", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 202, body = Accepted), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_workspace(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Response> {
    transition(state, caller, ws, "delete").await
}

/// Sets the workspace's deadline to now + `by`, within the template's maximum lifetime.
#[utoipa::path(post, path = "/api/v1/workspaces/{ws}/extend", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")), request_body = Extend,
    responses((status = 200, body = Workspace), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn extend_workspace(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    Json(body): Json<Extend>,
) -> ApiResult<Response> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceWrite).await?;
    let by = warren_api::template::parse_duration(&body.by)
        .map_err(|e| ApiError::bad_request(format!("by `{}`: {e}", body.by)))?;
    if rec.state != WorkspaceState::Running {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::InvalidState,
            format!(
                "workspace `{}` is {}: only a running workspace has a deadline to extend",
                rec.name, rec.state
            ),
        )
        .hint("start it; each run gets the template's `autostop` deadline"));
    }
    let now = state.store.now_time();
    let deadline = now + by;
    let eff = crate::governor::policy_for(&state, &rec).await?;
    let run_start = rec
        .started_at
        .as_deref()
        .and_then(warren_store::clock::parse_time)
        .unwrap_or(now);
    if let Some(max) = eff.max_lifetime {
        let cap = run_start + max;
        if deadline > cap {
            let left = (cap - now).max(time::Duration::ZERO).unsigned_abs();
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::LimitExceeded,
                format!(
                    "the deadline would pass the workspace's maximum lifetime of {} (this run \
                     ends by {})",
                    warren_api::template::format_duration(max),
                    warren_store::format_time(cap)
                ),
            )
            .hint(format!(
                "extend by at most {}, or stop and start it for a new run",
                warren_api::template::format_duration(std::time::Duration::from_secs(
                    left.as_secs()
                ))
            )));
        }
    }
    let at = warren_store::format_time(deadline);
    state.store.set_deadline(&rec.id, Some(&at)).await?;
    let mut note = AuditNote::target("workspace", &rec.id, rec.name.as_str());
    note.diff_json = warren_store::field_diff(
        &serde_json::json!({"deadline_at": rec.ownership.deadline_at}),
        &serde_json::json!({"deadline_at": at}),
    );
    let fresh = state.store.get(&rec.id).await?.unwrap_or(rec);
    Ok((axum::Extension(note), Json(ws_view(fresh))).into_response())
}

/// The workspace's jobs, newest first.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/jobs", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 200, body = [Job]), (status = 404, body = ErrorBody)))]
async fn workspace_jobs(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<Vec<Job>>> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceRead).await?;
    Ok(Json(
        state
            .store
            .jobs_of(&rec.id)
            .await?
            .iter()
            .map(job_view)
            .collect(),
    ))
}

/// A job, checked against its workspace's visibility.
async fn find_job(
    state: &AppState,
    caller: &Caller,
    id: &str,
    op: fn(Owner) -> Op,
) -> ApiResult<(JobRecord, Option<WorkspaceRecord>)> {
    let not_found = || ApiError::not_found("job", id);
    let job = state.store.job(id).await?.ok_or_else(not_found)?;
    let ws = state.store.get(&job.workspace_id).await?;
    let owner_id = ws.as_ref().map(|w| w.ownership.owner_id.clone());
    let initiator = job.initiator_id.clone();
    // A deleted workspace's jobs stay readable by whoever could read it: its initiator, or roles
    // that see every workspace.
    let own = owner_id.as_deref().or(initiator.as_deref()) == Some(caller.user.id.as_str());
    let owner = if own { Owner::Own } else { Owner::Other };
    match caller.check(op(owner), Some(&job.workspace_id)) {
        Decision::Allow => Ok((job, ws)),
        Decision::Hidden => Err(not_found()),
        Decision::Forbidden(f) => Err(forbidden(f)),
    }
}

/// A job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", security(("token" = [])),
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody)))]
async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Job>> {
    let (job, _) = find_job(&state, &caller, &id, Op::WorkspaceRead).await?;
    Ok(Json(job_view(&job)))
}

/// Cancels a pending or running job: a create or start is stopped and marked failed, a stop or
/// delete is finished.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", security(("token" = [])),
    params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = Job), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn cancel_job(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (job, ws) = find_job(&state, &caller, &id, Op::WorkspaceWrite).await?;
    let done = jobs::cancel(&state, &job, &caller.user.username, None).await?;
    let mut note = AuditNote::target(
        "job",
        &job.id,
        ws.as_ref().map(|w| w.name.as_str()).unwrap_or(""),
    );
    note.details_json =
        Some(serde_json::json!({"workspace_id": job.workspace_id, "kind": job.kind}).to_string());
    Ok((axum::Extension(note), Json(job_view(&done))).into_response())
}

/// Query of log routes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Stream new lines as Server-Sent Events until the job ends (job logs) or the client leaves
    /// (lifecycle logs).
    follow: Option<bool>,
}

fn sse_line(line: &str) -> String {
    // One SSE event per line; a line never contains '\n' here.
    format!("data: {}\n\n", line.replace('\r', ""))
}

/// A job's log: text, or Server-Sent Events with `follow=true` ending with `event: end` whose data
/// is the job's final status.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/logs", tag = "jobs", security(("token" = [])),
    params(("id" = String, Path, description = "job id"), LogQuery),
    responses((status = 200, description = "text/plain, or text/event-stream with follow=true"), (status = 404, body = ErrorBody)))]
async fn job_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(bad_query)?;
    let (job, _) = find_job(&state, &caller, &id, Op::WorkspaceRead).await?;
    let path = state.jobs.log_path(&job.id);
    if !q.follow.unwrap_or(false) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    // Subscribe before reading the file, then skip the lines the file already had.
    let sub = state.jobs.follow(&job.id);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::convert::Infallible>>(256);
    let st = state.clone();
    tokio::spawn(async move {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // The next line number to send; the file and the broadcast number lines the same way.
        let mut next = text.lines().count() as u64;
        for l in text.lines() {
            if tx.send(Ok(sse_line(l))).await.is_err() {
                return;
            }
        }
        if let Some(mut sub) = sub {
            loop {
                match sub.recv().await {
                    Ok((seq, line)) if seq >= next => {
                        next = seq + 1;
                        if tx.send(Ok(sse_line(&line))).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow for the broadcast: catch up from the file.
                        let text = std::fs::read_to_string(&path).unwrap_or_default();
                        for l in text.lines().skip(next as usize) {
                            next += 1;
                            if tx.send(Ok(sse_line(l))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        // The job ended (or had ended): report its final status.
        let mut status = "unknown".to_string();
        for _ in 0..50 {
            match st.store.job(&job.id).await {
                Ok(Some(j)) if !j.is_active() => {
                    status = j.status;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let _ = tx.send(Ok(format!("event: end\ndata: {status}\n\n"))).await;
    });
    Ok(sse_response(rx))
}

/// The most of a log read at once (the tail shown, and each step of a follow).
const MAX_LOG_READ: u64 = 4 << 20;

/// The last `max` bytes of a file as text, and the file's length.
fn tail_of(path: &FsPath, max: u64) -> (String, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return (String::new(), 0);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(max);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_ok() {
        let _ = f.take(max).read_to_end(&mut buf);
    }
    (
        String::from_utf8_lossy(&buf).into_owned(),
        start + buf.len() as u64,
    )
}

/// At most `max` bytes of a file from `offset` as text, and the offset after them (0 again when
/// the file was truncated or replaced).
fn read_from(path: &FsPath, offset: u64, max: u64) -> (String, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(path) else {
        return (String::new(), offset);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let offset = if len < offset { 0 } else { offset };
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(offset)).is_ok() {
        let _ = f.take(max).read_to_end(&mut buf);
    }
    (
        String::from_utf8_lossy(&buf).into_owned(),
        offset + buf.len() as u64,
    )
}

fn sse_response(
    rx: tokio::sync::mpsc::Receiver<Result<String, std::convert::Infallible>>,
) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response()
}

/// When the workspace was last used, by kind of use, and the sessions open on it now.
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/activity", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace")),
    responses((status = 200, body = v1::WorkspaceActivity), (status = 404, body = ErrorBody)))]
async fn workspace_activity(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
) -> ApiResult<Json<v1::WorkspaceActivity>> {
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceRead).await?;
    let last = state.activity.last(&state.store, &rec.id).await?;
    Ok(Json(v1::WorkspaceActivity {
        last_at: last.values().max().cloned(),
        last,
        open_sessions: state.activity.open_sessions(&rec.id),
    }))
}

/// The workspace's lifecycle log (the output of its lifecycle commands): text, or Server-Sent
/// Events with `follow=true` (until the client disconnects).
#[utoipa::path(get, path = "/api/v1/workspaces/{ws}/logs", tag = "workspaces", security(("token" = [])),
    params(("ws" = String, Path, description = "workspace"), LogQuery),
    responses((status = 200, description = "text/plain, or text/event-stream with follow=true"), (status = 404, body = ErrorBody)))]
async fn workspace_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(ws): Path<String>,
    q: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(bad_query)?;
    let rec = find_workspace(&state, &caller, &ws, Op::WorkspaceRead).await?;
    let path = state.engine.log_file(&rec);
    if !q.follow.unwrap_or(false) {
        let p = path.clone();
        let text = tokio::task::spawn_blocking(move || tail_of(&p, MAX_LOG_READ).0)
            .await
            .map_err(ApiError::internal)?;
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::convert::Infallible>>(256);
    tokio::spawn(async move {
        // Start from the last MAX_LOG_READ bytes, then read only what is appended.
        let (text, mut offset) = {
            let p = path.clone();
            tokio::task::spawn_blocking(move || tail_of(&p, MAX_LOG_READ))
                .await
                .unwrap_or_default()
        };
        let mut partial = text;
        loop {
            while let Some(i) = partial.find('\n') {
                let line: String = partial.drain(..=i).collect();
                if tx
                    .send(Ok(sse_line(line.trim_end_matches('\n'))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            if partial.len() > MAX_LOG_READ as usize {
                let line = std::mem::take(&mut partial);
                if tx.send(Ok(sse_line(&line))).await.is_err() {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            let p = path.clone();
            let (more, next) =
                tokio::task::spawn_blocking(move || read_from(&p, offset, MAX_LOG_READ))
                    .await
                    .unwrap_or_default();
            offset = next;
            partial.push_str(&more);
        }
    });
    Ok(sse_response(rx))
}
