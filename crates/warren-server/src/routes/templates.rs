//! Templates and their immutable versions.
//!
//! A version holds a devcontainer.json text (inline, or read from an uploaded folder), typed
//! parameters, resource ceilings and policy defaults. Versions are numbered 1, 2, 3... per
//! template and never change; pushing makes a new one, and one of them is the active version
//! that new workspaces get. Archived templates take no new versions and no new workspaces.
//!
//! Template texts may not use `${localEnv:...}`: on a server that would read the server's own
//! environment. Parameters (`${param:NAME}`) are the way to vary a template.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path as FsPath;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::Op;
use warren_api::template::{
    check_specs, substitute_params, Ceilings, CostRates, ParamError, ParamSpec, PolicyDefaults,
    TemplateManifest, MANIFEST_FILE,
};
use warren_api::v1::{Activate, CreateTemplate, CreateVersion, Template, TemplateVersion};
use warren_api::{ErrorCode, WorkspaceName};
use warren_store::{NewVersion, TemplateRecord, VersionRecord};

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::routes::files::{self, What};

/// Longest devcontainer.json or manifest text accepted.
const MAX_TEXT: u64 = 1 << 20;

const NESTED_CONFIG: &str = ".devcontainer/devcontainer.json";
const ROOT_CONFIG: &str = ".devcontainer.json";

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_templates, create_template))
        .routes(routes!(get_template))
        .routes(routes!(archive_template))
        .routes(routes!(unarchive_template))
        .routes(routes!(list_versions, create_version))
        .routes(routes!(get_version))
        .routes(routes!(set_active))
}

fn invalid_config(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidConfig, message)
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found("template", name).hint("`warren template list` shows the templates")
}

fn archived(name: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::InvalidState,
        format!("template `{name}` is archived"),
    )
    .hint(format!(
        "unarchive it first: POST /api/v1/templates/{name}/unarchive"
    ))
}

fn no_version(name: &str, number: i64) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("template `{name}` has no version {number}"),
    )
    .hint(format!(
        "`warren template versions {name}` lists its versions"
    ))
}

fn validate_name(name: &str) -> ApiResult<()> {
    WorkspaceName::new(name).map(|_| ()).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidName,
            e.to_string().replacen("workspace name", "template name", 1),
        )
    })
}

async fn find(state: &AppState, name: &str) -> ApiResult<TemplateRecord> {
    state
        .store
        .template(&state.org.id, name)
        .await?
        .ok_or_else(|| not_found(name))
}

/// The API view of a template.
pub async fn template_view(state: &AppState, t: &TemplateRecord) -> ApiResult<Template> {
    let active_version = match &t.active_version_id {
        Some(id) => state.store.version(id).await?.map(|v| v.number),
        None => None,
    };
    Ok(Template {
        id: t.id.clone(),
        name: t.name.clone(),
        display_name: t.display_name.clone(),
        description: t.description.clone(),
        active_version,
        archived: t.archived_at.is_some(),
        created_at: t.created_at.clone(),
        updated_at: t.updated_at.clone(),
    })
}

/// Parses a version's stored JSON columns.
pub fn version_view(v: &VersionRecord, active: bool) -> ApiResult<TemplateVersion> {
    fn parse<T: serde::de::DeserializeOwned>(
        v: &VersionRecord,
        what: &str,
        s: &str,
    ) -> ApiResult<T> {
        serde_json::from_str(s)
            .map_err(|e| ApiError::internal(format!("version {}: stored {what}: {e}", v.id)))
    }
    Ok(TemplateVersion {
        id: v.id.clone(),
        number: v.number,
        active,
        message: v.message.clone(),
        devcontainer: v.devcontainer_json.clone(),
        file_id: v.file_id.clone(),
        parameters: parse(v, "parameters", &v.parameters_json)?,
        ceilings: parse(v, "ceilings", &v.ceilings_json)?,
        policy: parse(v, "policy", &v.policy_json)?,
        cost: parse(v, "cost", &v.cost_json)?,
        created_by: v.created_by.clone(),
        created_at: v.created_at.clone(),
    })
}

/// The template's version to build from: `number` or the active one. 404 when missing, 409
/// invalid_state when archived.
pub async fn resolve_version(
    state: &AppState,
    template: &str,
    number: Option<i64>,
) -> ApiResult<(TemplateRecord, VersionRecord)> {
    let t = find(state, template).await?;
    if t.archived_at.is_some() {
        return Err(archived(template));
    }
    let v = match number {
        Some(n) => state
            .store
            .version_by_number(&t.id, n)
            .await?
            .ok_or_else(|| no_version(template, n))?,
        None => {
            let missing = || {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::NotFound,
                    format!("template `{template}` has no active version"),
                )
                .hint("push a version first: `warren template push`")
            };
            let id = t.active_version_id.clone().ok_or_else(missing)?;
            state.store.version(&id).await?.ok_or_else(missing)?
        }
    };
    Ok((t, v))
}

/// Whether a parameter value holds `${` anywhere (strings, list items).
fn holds_variable(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("${"),
        Value::Array(items) => items.iter().any(holds_variable),
        Value::Object(m) => m.values().any(holds_variable),
        _ => false,
    }
}

/// Writes the project folder of a new workspace built from `v` into `dest` (created, must not
/// exist): the archive's files (if any), and `.devcontainer/devcontainer.json` = the version's
/// devcontainer text with `${param:NAME}` substituted (`warren_api::template::substitute_params`).
/// Refuses (400 invalid_parameter naming the parameter) any parameter value containing `${`
/// because the devcontainer loader expands `${localEnv:...}` from the server's environment after
/// substitution.
///
/// When the archive has its own devcontainer.json (`.devcontainer/devcontainer.json` or
/// `.devcontainer.json`), the substituted text replaces it at that path. On failure `dest` is
/// removed.
pub fn materialize(
    state: &AppState,
    v: &VersionRecord,
    params: &BTreeMap<String, Value>,
    dest: &std::path::Path,
) -> ApiResult<()> {
    for (name, value) in params {
        if holds_variable(value) {
            return Err(ParamError::new(
                name,
                "values may not contain `${` (variables are not expanded in parameter values)",
            )
            .into());
        }
    }
    let text = substitute_params(&v.devcontainer_json, params);
    // Still a valid configuration, and still free of server-environment references.
    check_devcontainer(&text)?;
    let tar = v
        .file_id
        .as_deref()
        .map(|id| files::file_path(state, id))
        .transpose()?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| ApiError::internal(format!("create {}: {e}", parent.display())))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(dest)
        .map_err(|e| ApiError::internal(format!("create {}: {e}", dest.display())))?;
    let result = fill(dest, tar.as_deref(), &text);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(dest);
    }
    result
}

fn fill(dest: &FsPath, tar: Option<&FsPath>, text: &str) -> ApiResult<()> {
    if let Some(tar) = tar {
        if !tar.is_file() {
            return Err(ApiError::internal(format!(
                "the template's archive {} is missing",
                tar.display()
            )));
        }
        files::extract(tar, dest).map_err(|e| {
            invalid_config(format!("the template's files cannot be unpacked: {e}"))
                .hint("push a new version of the template")
        })?;
    }
    let exists = |rel: &str| std::fs::symlink_metadata(dest.join(rel)).ok();
    if let Some(m) = exists(".devcontainer") {
        if !m.file_type().is_dir() {
            return Err(invalid_config(
                "the template's files have a `.devcontainer` that is not a directory",
            )
            .hint("push a new version of the template"));
        }
    }
    let rel = if exists(NESTED_CONFIG).is_some() {
        NESTED_CONFIG
    } else if exists(ROOT_CONFIG).is_some() {
        ROOT_CONFIG
    } else {
        NESTED_CONFIG
    };
    files::write_file(dest, FsPath::new(rel), text.as_bytes(), 0o644).map_err(|e| {
        invalid_config(format!("cannot write {rel} into the workspace folder: {e}"))
            .hint("push a new version of the template")
    })
}

/// The position (1-based line and column) of the first token of a JSONC text.
fn root_pos(text: &str) -> (usize, usize) {
    let (mut line, mut col) = (1, 1);
    let mut chars = text.trim_start_matches('\u{feff}').chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '\n' => {
                chars.next();
                line += 1;
                col = 1;
            }
            c if c.is_whitespace() => {
                chars.next();
                col += 1;
            }
            '/' => {
                let mut look = chars.clone();
                look.next();
                match look.peek() {
                    Some('/') => {
                        for c in chars.by_ref() {
                            if c == '\n' {
                                line += 1;
                                col = 1;
                                break;
                            }
                        }
                    }
                    Some('*') => {
                        chars.next();
                        chars.next();
                        col += 2;
                        let mut prev = ' ';
                        for c in chars.by_ref() {
                            if c == '\n' {
                                line += 1;
                                col = 1;
                            } else {
                                col += 1;
                            }
                            if prev == '*' && c == '/' {
                                break;
                            }
                            prev = c;
                        }
                    }
                    _ => break,
                }
            }
            _ => break,
        }
    }
    (line, col)
}

/// Checks a template's devcontainer.json text: valid JSONC of the devcontainer schema, names an
/// `image`, and reads nothing from the server's environment. 400 invalid_config otherwise.
pub fn check_devcontainer(text: &str) -> ApiResult<()> {
    // Load it as the workspace code will, with variables substituted (so paths made of
    // `${localWorkspaceFolder}` and friends check out), noting every environment lookup.
    let lookups = std::cell::RefCell::new(Vec::<String>::new());
    let local_env = |name: &str| {
        lookups.borrow_mut().push(name.to_string());
        None
    };
    let loaded = warren_devcontainer::load_str(
        text,
        FsPath::new("devcontainer.json"),
        FsPath::new("/workspaces-template/project"),
        &local_env,
    )
    .map_err(|e| {
        let mut err = invalid_config(e.to_string());
        if let Some(h) = e.hint() {
            err = err.hint(h);
        }
        err
    })?;
    if let Some(name) = lookups.borrow().first() {
        return Err(invalid_config(format!(
            "devcontainer.json: `${{localEnv:{}}}` is not allowed in a template: it would read the server's environment",
            name.chars().take(80).collect::<String>()
        ))
        .hint("declare a template parameter and write ${param:NAME} instead"));
    }
    if loaded
        .config
        .image
        .as_deref()
        .is_none_or(|i| i.trim().is_empty())
    {
        let (line, col) = root_pos(text);
        return Err(invalid_config(format!(
            "devcontainer.json:{line}:{col}: `image` is required: Warren makes workspaces from a container image"
        ))
        .hint("add e.g. \"image\": \"debian:bookworm\""));
    }
    Ok(())
}

/// Refuses `${param:NAME}` references to parameters that are not declared.
fn check_references(text: &str, specs: &[ParamSpec]) -> ApiResult<()> {
    const OPEN: &str = "${param:";
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !specs.iter().any(|s| s.name == name) {
            return Err(ParamError::new(
                name.chars().take(80).collect::<String>(),
                "is used in devcontainer.json (`${param:...}`) but not declared",
            )
            .into());
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// The devcontainer.json and manifest found in an uploaded folder.
struct FromArchive {
    devcontainer: String,
    manifest: Option<TemplateManifest>,
}

/// Reads `.devcontainer/devcontainer.json` (else `.devcontainer.json`) and `warren-template.json`
/// from the stored archive, checking the whole archive again.
fn read_folder(tar: &FsPath) -> ApiResult<FromArchive> {
    let mut found: HashMap<&'static str, Result<String, String>> = HashMap::new();
    files::read_archive(tar, |item, data| {
        let Some(key) = [NESTED_CONFIG, ROOT_CONFIG, MANIFEST_FILE]
            .into_iter()
            .find(|k| item.path.as_os_str() == *k)
        else {
            return Ok(());
        };
        let got = match &item.what {
            What::File(size) if *size <= MAX_TEXT => {
                let mut s = String::new();
                match data.take(*size).read_to_string(&mut s) {
                    Ok(_) => Ok(s),
                    Err(_) => Err("is not UTF-8 text".to_string()),
                }
            }
            What::File(_) => Err(format!("is larger than {} KiB", MAX_TEXT >> 10)),
            _ => Err("must be a regular file (not a directory or link)".to_string()),
        };
        found.insert(key, got);
        Ok(())
    })
    .map_err(|e| {
        invalid_config(format!("the uploaded folder is not a valid archive: {e}"))
            .hint("upload it again: POST /api/v1/files")
    })?;
    let (path, text) =
        match (found.remove(NESTED_CONFIG), found.remove(ROOT_CONFIG)) {
            (Some(t), _) => (NESTED_CONFIG, t),
            (None, Some(t)) => (ROOT_CONFIG, t),
            (None, None) => return Err(invalid_config(
                "the uploaded folder has no .devcontainer/devcontainer.json or .devcontainer.json",
            )
            .hint("put the devcontainer.json at .devcontainer/devcontainer.json in the folder")),
        };
    let devcontainer =
        text.map_err(|m| invalid_config(format!("{path} in the uploaded folder {m}")))?;
    let manifest = match found.remove(MANIFEST_FILE) {
        None => None,
        Some(Err(m)) => {
            return Err(invalid_config(format!(
                "{MANIFEST_FILE} in the uploaded folder {m}"
            )))
        }
        Some(Ok(text)) => Some(TemplateManifest::parse(&text).map_err(|e| {
            let code = if e.starts_with("`parameters`") {
                ErrorCode::InvalidParameter
            } else {
                ErrorCode::InvalidConfig
            };
            ApiError::new(
                StatusCode::BAD_REQUEST,
                code,
                format!("{MANIFEST_FILE}: {e}"),
            )
        })?),
    };
    Ok(FromArchive {
        devcontainer,
        manifest,
    })
}

/// The templates (`?archived=true` includes archived ones).
#[utoipa::path(get, path = "/api/v1/templates", tag = "templates", security(("token" = [])),
    params(("archived" = Option<bool>, Query, description = "include archived templates")),
    responses((status = 200, body = [Template]), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_templates(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Vec<Template>>> {
    caller.require(Op::TemplateRead)?;
    let archived = match q.get("archived").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`archived` must be true or false, not `{}`",
                other.chars().take(40).collect::<String>()
            )))
        }
    };
    let mut out = Vec::new();
    for t in state.store.templates(&state.org.id, archived).await? {
        out.push(template_view(&state, &t).await?);
    }
    Ok(Json(out))
}

/// Creates a template, or updates its display name and description.
#[utoipa::path(post, path = "/api/v1/templates", tag = "templates", security(("token" = [])), request_body = CreateTemplate,
    responses((status = 201, body = Template), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_template(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateTemplate>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Op::TemplateWrite)?;
    validate_name(&body.name)?;
    let old = state.store.template(&state.org.id, &body.name).await?;
    if old.as_ref().is_some_and(|o| o.archived_at.is_some()) {
        return Err(archived(&body.name));
    }
    let t = state
        .store
        .upsert_template(
            &state.org.id,
            &body.name,
            body.display_name.as_deref(),
            body.description.as_deref(),
            &caller.user.id,
        )
        .await?;
    let mut note = AuditNote::target("template", &t.id, &t.name);
    if let Some(o) = old {
        let fields = |t: &TemplateRecord| json!({"display_name": t.display_name, "description": t.description});
        note.diff_json = warren_store::field_diff(&fields(&o), &fields(&t));
    }
    Ok((
        StatusCode::CREATED,
        axum::Extension(note),
        Json(template_view(&state, &t).await?),
    ))
}

/// A template.
#[utoipa::path(get, path = "/api/v1/templates/{template}", tag = "templates", security(("token" = [])),
    params(("template" = String, Path, description = "template name")),
    responses((status = 200, body = Template), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Template>> {
    caller.require(Op::TemplateRead)?;
    let t = find(&state, &name).await?;
    Ok(Json(template_view(&state, &t).await?))
}

async fn set_archived(
    state: AppState,
    caller: Caller,
    name: String,
    archive: bool,
) -> ApiResult<impl IntoResponse> {
    caller.require(Op::TemplateWrite)?;
    let t = find(&state, &name).await?;
    let was = t.archived_at.is_some();
    if was != archive {
        state.store.archive_template(&t.id, archive).await?;
    }
    let t = find(&state, &name).await?;
    let mut note = AuditNote::target("template", &t.id, &t.name);
    note.diff_json =
        warren_store::field_diff(&json!({"archived": was}), &json!({"archived": archive}));
    Ok((
        axum::Extension(note),
        Json(template_view(&state, &t).await?),
    ))
}

/// Archives a template: it stays readable but takes no new versions or workspaces.
#[utoipa::path(post, path = "/api/v1/templates/{template}/archive", tag = "templates", security(("token" = [])),
    params(("template" = String, Path, description = "template name")),
    responses((status = 200, body = Template), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn archive_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    set_archived(state, caller, name, true).await
}

/// Unarchives a template.
#[utoipa::path(post, path = "/api/v1/templates/{template}/unarchive", tag = "templates", security(("token" = [])),
    params(("template" = String, Path, description = "template name")),
    responses((status = 200, body = Template), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn unarchive_template(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    set_archived(state, caller, name, false).await
}

/// A template's versions, newest first.
#[utoipa::path(get, path = "/api/v1/templates/{template}/versions", tag = "templates", security(("token" = [])),
    params(("template" = String, Path, description = "template name")),
    responses((status = 200, body = [TemplateVersion]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Vec<TemplateVersion>>> {
    caller.require(Op::TemplateRead)?;
    let t = find(&state, &name).await?;
    let mut out = Vec::new();
    for v in state.store.versions(&t.id).await? {
        let active = t.active_version_id.as_deref() == Some(v.id.as_str());
        out.push(version_view(&v, active)?);
    }
    Ok(Json(out))
}

/// One version of a template.
#[utoipa::path(get, path = "/api/v1/templates/{template}/versions/{number}", tag = "templates", security(("token" = [])),
    params(("template" = String, Path, description = "template name"), ("number" = String, Path, description = "version number, or `active`")),
    responses((status = 200, body = TemplateVersion), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, number)): Path<(String, String)>,
) -> ApiResult<Json<TemplateVersion>> {
    caller.require(Op::TemplateRead)?;
    let t = find(&state, &name).await?;
    let v = if number == "active" {
        let id = t.active_version_id.clone().ok_or_else(|| {
            ApiError::not_found("active version of template", &name)
                .hint("activate one: warren template activate T N")
        })?;
        state
            .store
            .version(&id)
            .await?
            .ok_or_else(|| ApiError::not_found("template version", &id))?
    } else {
        let n: i64 = number.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "version `{}` is neither a whole number nor `active`",
                number.chars().take(40).collect::<String>()
            ))
        })?;
        state
            .store
            .version_by_number(&t.id, n)
            .await?
            .ok_or_else(|| no_version(&name, n))?
    };
    let active = t.active_version_id.as_deref() == Some(v.id.as_str());
    Ok(Json(version_view(&v, active)?))
}

/// Pushes a new version (creating the template if needed). Give the devcontainer.json inline
/// (`devcontainer`) or as an uploaded folder (`file_id`); a folder's `warren-template.json`
/// supplies parameters, ceilings and policy the request leaves out.
#[utoipa::path(post, path = "/api/v1/templates/{template}/versions", tag = "templates", security(("token" = [])), request_body = CreateVersion,
    params(("template" = String, Path, description = "template name")),
    responses((status = 201, body = TemplateVersion), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_version(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<CreateVersion>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Op::TemplateWrite)?;
    validate_name(&name)?;
    if let Some(t) = state.store.template(&state.org.id, &name).await? {
        if t.archived_at.is_some() {
            return Err(archived(&name));
        }
    }
    let (text, manifest) = match (body.devcontainer, &body.file_id) {
        (Some(text), None) => {
            if text.len() as u64 > MAX_TEXT {
                return Err(ApiError::bad_request(format!(
                    "`devcontainer` is larger than {} KiB",
                    MAX_TEXT >> 10
                )));
            }
            (text, None)
        }
        (None, Some(id)) => {
            let tar = files::file_path(&state, id)?;
            if !state.store.has_file(id).await? {
                return Err(ApiError::not_found("file", id)
                    .hint("upload the folder first: POST /api/v1/files"));
            }
            let found = tokio::task::spawn_blocking(move || read_folder(&tar))
                .await
                .map_err(ApiError::internal)??;
            (found.devcontainer, found.manifest)
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `devcontainer` (the devcontainer.json text) and `file_id` (an uploaded folder)",
            ))
        }
    };
    let parameters: Vec<ParamSpec> = if body.parameters.is_empty() {
        manifest
            .as_ref()
            .map(|m| m.parameters.clone())
            .unwrap_or_default()
    } else {
        body.parameters
    };
    let ceilings: Ceilings = body
        .ceilings
        .or_else(|| manifest.as_ref().and_then(|m| m.ceilings))
        .unwrap_or_default();
    let policy: PolicyDefaults = body
        .policy
        .or_else(|| manifest.as_ref().and_then(|m| m.policy.clone()))
        .unwrap_or_default();
    let cost: CostRates = body
        .cost
        .or_else(|| manifest.as_ref().and_then(|m| m.cost))
        .unwrap_or_default();
    check_devcontainer(&text)?;
    check_specs(&parameters)?;
    check_references(&text, &parameters)?;
    ceilings
        .validate()
        .map_err(|e| ApiError::bad_request(format!("`ceilings`: {e}")))?;
    policy
        .validate()
        .map_err(|e| ApiError::bad_request(format!("`policy`: {e}")))?;
    cost.validate().map_err(|e| {
        ApiError::bad_request(format!("`cost`: {e}"))
            .hint("e.g. \"cost\": {\"running_per_hour\": 1.5, \"stopped_per_hour\": 0.05}")
    })?;

    let t = state
        .store
        .upsert_template(
            &state.org.id,
            &name,
            manifest.as_ref().and_then(|m| m.display_name.as_deref()),
            manifest.as_ref().and_then(|m| m.description.as_deref()),
            &caller.user.id,
        )
        .await?;
    if t.archived_at.is_some() {
        return Err(archived(&name));
    }
    let activate = body.activate.unwrap_or(true);
    let v = state
        .store
        .add_version(
            &t.id,
            NewVersion {
                message: body.message,
                devcontainer_json: text,
                file_id: body.file_id,
                parameters_json: to_json(&parameters)?,
                ceilings_json: to_json(&ceilings)?,
                policy_json: to_json(&policy)?,
                cost_json: to_json(&cost)?,
                created_by: caller.user.id.clone(),
            },
            activate,
        )
        .await?;
    let mut note = AuditNote::target("template", &t.id, &t.name);
    // The route alone would name it `template.versions`.
    note.action = Some("template.version.create".into());
    note.details_json =
        Some(json!({"version": v.number, "file_id": v.file_id, "activated": activate}).to_string());
    Ok((
        StatusCode::CREATED,
        axum::Extension(note),
        Json(version_view(&v, activate)?),
    ))
}

fn to_json<T: serde::Serialize>(v: &T) -> ApiResult<String> {
    serde_json::to_string(v).map_err(ApiError::internal)
}

/// Makes a version the active one (what new workspaces get).
#[utoipa::path(post, path = "/api/v1/templates/{template}/active", tag = "templates", security(("token" = [])), request_body = Activate,
    params(("template" = String, Path, description = "template name")),
    responses((status = 200, body = Template), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_active(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<Activate>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Op::TemplateWrite)?;
    let t = find(&state, &name).await?;
    let v = state
        .store
        .version_by_number(&t.id, body.version)
        .await?
        .ok_or_else(|| no_version(&name, body.version))?;
    let old = template_view(&state, &t).await?.active_version;
    state.store.activate_version(&t.id, &v.id).await?;
    let t = find(&state, &name).await?;
    let mut note = AuditNote::target("template", &t.id, &t.name);
    note.diff_json = warren_store::field_diff(
        &json!({"active_version": old}),
        &json!({"active_version": v.number}),
    );
    Ok((
        axum::Extension(note),
        Json(template_view(&state, &t).await?),
    ))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::config::{ConfigLayer, ServerConfig};

    async fn state(dir: &FsPath) -> AppState {
        let cfg = ServerConfig::resolve(ConfigLayer {
            listen: Some("127.0.0.1:0".into()),
            state_dir: Some(dir.join("state")),
            ..Default::default()
        })
        .unwrap();
        crate::serve::open(cfg, PathBuf::from("/nonexistent/warren"))
            .await
            .unwrap()
    }

    fn new_version(text: &str, file_id: Option<&str>, params: Value) -> NewVersion {
        NewVersion {
            message: None,
            devcontainer_json: text.into(),
            file_id: file_id.map(str::to_string),
            parameters_json: params.to_string(),
            ceilings_json: "{}".into(),
            policy_json: "{}".into(),
            cost_json: "{}".into(),
            created_by: "u".into(),
        }
    }

    /// Stores `tar` as a file directly, bypassing the upload checks (as a tampered state dir
    /// would).
    async fn store_raw(state: &AppState, tar: &[u8]) -> String {
        let id = hex::encode(Sha256::digest(tar));
        let dir = files::files_dir(state);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{id}.tar")), tar).unwrap();
        state
            .store
            .put_file(&id, tar.len() as i64, "u")
            .await
            .unwrap();
        id
    }

    /// A raw entry: path, type, link target, data.
    type Entry<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

    /// A tar with raw GNU headers (so entries the builder refuses can be written).
    fn raw_tar(entries: &[Entry]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, ty, link, data) in entries {
            let mut h = tar::Header::new_gnu();
            {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..path.len()].copy_from_slice(path.as_bytes());
                gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            h.set_entry_type(*ty);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
        }
        out.extend([0u8; 1024]);
        out
    }

    const DC: &str =
        r#"{"image": "debian:bookworm", "containerEnv": {"GREETING": "${param:greeting}"}}"#;

    fn greeting() -> Value {
        json!([{"name": "greeting", "type": "string", "default": "hello"}])
    }

    #[tokio::test]
    async fn resolve_version_finds_active_numbered_and_refuses_archived() {
        let tmp = tempfile::tempdir().unwrap();
        let st = state(tmp.path()).await;
        let e = resolve_version(&st, "nope", None).await.unwrap_err();
        assert_eq!(
            (e.status, e.body.code),
            (StatusCode::NOT_FOUND, ErrorCode::NotFound)
        );

        let t = st
            .store
            .upsert_template(&st.org.id, "rust", None, None, "u")
            .await
            .unwrap();
        let e = resolve_version(&st, "rust", None).await.unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND, "{:?}", e.body);
        let v1 = st
            .store
            .add_version(&t.id, new_version(DC, None, greeting()), true)
            .await
            .unwrap();
        let v2 = st
            .store
            .add_version(&t.id, new_version(DC, None, greeting()), false)
            .await
            .unwrap();
        assert_eq!(resolve_version(&st, "rust", None).await.unwrap().1, v1);
        assert_eq!(resolve_version(&st, "rust", Some(2)).await.unwrap().1, v2);
        let e = resolve_version(&st, "rust", Some(3)).await.unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert!(
            e.body.message.contains("no version 3"),
            "{}",
            e.body.message
        );
        st.store.archive_template(&t.id, true).await.unwrap();
        let e = resolve_version(&st, "rust", None).await.unwrap_err();
        assert_eq!(
            (e.status, e.body.code),
            (StatusCode::CONFLICT, ErrorCode::InvalidState)
        );

        let view = version_view(&v2, false).unwrap();
        assert_eq!(view.parameters[0].name, "greeting");
        assert_eq!(view.number, 2);
    }

    #[tokio::test]
    async fn materialize_substitutes_and_refuses_variables_in_values() {
        let tmp = tempfile::tempdir().unwrap();
        let st = state(tmp.path()).await;
        let v = st
            .store
            .add_adhoc_version(new_version(DC, None, greeting()))
            .await
            .unwrap();
        let dest = tmp.path().join("projects/one");
        let params = BTreeMap::from([("greeting".to_string(), json!("say \"hi\""))]);
        materialize(&st, &v, &params, &dest).unwrap();
        let text = std::fs::read_to_string(dest.join(NESTED_CONFIG)).unwrap();
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["containerEnv"]["GREETING"], "say \"hi\"");
        // The destination must not exist yet.
        assert!(materialize(&st, &v, &params, &dest).is_err());

        let dest2 = tmp.path().join("projects/two");
        for bad in [json!("${localEnv:HOME}"), json!(["ok", "${env:PATH}"])] {
            let params = BTreeMap::from([("greeting".to_string(), bad)]);
            let e = materialize(&st, &v, &params, &dest2).unwrap_err();
            assert_eq!(e.body.code, ErrorCode::InvalidParameter);
            assert!(e.body.message.contains("`greeting`"), "{}", e.body.message);
            assert!(!dest2.exists());
        }
        // Splicing a `$` and a `{` from two places is caught after substitution.
        let spliced = r#"{"image": "x", "containerEnv": {"A": "$${param:greeting}"}}"#;
        let v = st
            .store
            .add_adhoc_version(new_version(spliced, None, greeting()))
            .await
            .unwrap();
        let params = BTreeMap::from([("greeting".to_string(), json!("{localEnv:HOME}"))]);
        let e = materialize(&st, &v, &params, &dest2).unwrap_err();
        assert_eq!(e.body.code, ErrorCode::InvalidConfig, "{}", e.body.message);
        assert!(!dest2.exists());
    }

    #[tokio::test]
    async fn materialize_writes_the_text_over_the_archive_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let st = state(tmp.path()).await;
        let tar = raw_tar(&[
            (
                ".devcontainer.json",
                tar::EntryType::Regular,
                "",
                b"{\"image\": \"old\"}",
            ),
            ("src/main.rs", tar::EntryType::Regular, "", b"fn main() {}"),
            ("src/link", tar::EntryType::Symlink, "main.rs", b""),
        ]);
        let id = store_raw(&st, &tar).await;
        let v = st
            .store
            .add_adhoc_version(new_version(DC, Some(&id), greeting()))
            .await
            .unwrap();
        let dest = tmp.path().join("p");
        let params = BTreeMap::from([("greeting".to_string(), json!("hey"))]);
        materialize(&st, &v, &params, &dest).unwrap();
        assert!(!dest.join(".devcontainer").exists());
        let text = std::fs::read_to_string(dest.join(ROOT_CONFIG)).unwrap();
        assert!(text.contains("\"hey\""), "{text}");
        assert_eq!(
            std::fs::read_to_string(dest.join("src/link")).unwrap(),
            "fn main() {}"
        );
    }

    #[tokio::test]
    async fn symlinks_in_a_stored_archive_cannot_write_outside() {
        let tmp = tempfile::tempdir().unwrap();
        let st = state(tmp.path()).await;
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("devcontainer.json"), "precious").unwrap();
        let out = outside.to_str().unwrap();
        let params = BTreeMap::from([("greeting".to_string(), json!("hey"))]);
        let cases: Vec<Vec<Entry>> = vec![
            // A link out of the folder, then a file through it.
            vec![
                ("d", tar::EntryType::Symlink, out, b""),
                ("d/pwned", tar::EntryType::Regular, "", b"x"),
            ],
            // `.devcontainer` pointing outside: materialize would write devcontainer.json there.
            vec![(".devcontainer", tar::EntryType::Symlink, out, b"")],
            vec![(
                ".devcontainer",
                tar::EntryType::Symlink,
                "../../../outside",
                b"",
            )],
            // A contained link as `.devcontainer` is refused too (the config must be ours).
            vec![
                ("sub/x", tar::EntryType::Regular, "", b"x"),
                (".devcontainer", tar::EntryType::Symlink, "sub", b""),
            ],
            // Relative escape through a link that goes up, then down again.
            vec![
                ("a/up", tar::EntryType::Symlink, "..", b""),
                ("a/esc", tar::EntryType::Symlink, "up/../outside", b""),
            ],
            vec![("h", tar::EntryType::Link, "/etc/passwd", b"")],
        ];
        for (i, entries) in cases.iter().enumerate() {
            let id = store_raw(&st, &raw_tar(entries)).await;
            let v = st
                .store
                .add_adhoc_version(new_version(DC, Some(&id), greeting()))
                .await
                .unwrap();
            let dest = tmp.path().join(format!("p{i}"));
            let e = materialize(&st, &v, &params, &dest).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{i}: {:?}", e.body);
            assert!(!dest.exists(), "{i}");
            assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 1, "{i}");
            assert_eq!(
                std::fs::read_to_string(outside.join("devcontainer.json")).unwrap(),
                "precious"
            );
        }
        // A devcontainer.json that is a link in the archive is replaced, not written through.
        let tar = raw_tar(&[
            ("cfg/real.json", tar::EntryType::Regular, "", b"{}"),
            (
                ".devcontainer.json",
                tar::EntryType::Symlink,
                "cfg/real.json",
                b"",
            ),
        ]);
        let id = store_raw(&st, &tar).await;
        let v = st
            .store
            .add_adhoc_version(new_version(DC, Some(&id), greeting()))
            .await
            .unwrap();
        let dest = tmp.path().join("linked");
        materialize(&st, &v, &params, &dest).unwrap();
        assert_eq!(
            std::fs::read_to_string(dest.join("cfg/real.json")).unwrap(),
            "{}"
        );
        assert!(std::fs::symlink_metadata(dest.join(ROOT_CONFIG))
            .unwrap()
            .is_file());
    }

    #[test]
    fn devcontainer_texts_are_checked() {
        check_devcontainer(r#"{"image": "debian"}"#).unwrap();
        let e = check_devcontainer("// c\n  {\"name\": \"x\"}").unwrap_err();
        assert_eq!(e.body.code, ErrorCode::InvalidConfig);
        assert!(
            e.body.message.starts_with("devcontainer.json:2:3: `image`"),
            "{}",
            e.body.message
        );
        let e = check_devcontainer("{\n  \"image\": \"x\",,\n}").unwrap_err();
        assert!(
            e.body.message.contains("devcontainer.json:2:"),
            "{}",
            e.body.message
        );
        for leak in [
            r#"{"image": "x", "containerEnv": {"A": "${localEnv:SECRET}"}}"#,
            r#"{"image": "x", "postCreateCommand": "echo ${env:SECRET}"}"#,
            r#"{"image": "x", "remoteEnv": {"A": "\u0024{localEnv:SECRET}"}}"#,
        ] {
            let e = check_devcontainer(leak).unwrap_err();
            assert!(
                e.body.message.contains("localEnv"),
                "{leak}: {}",
                e.body.message
            );
        }
        // Standard variables make valid paths once substituted.
        check_devcontainer(
            r#"{"image": "x", "workspaceMount": "source=${localWorkspaceFolder},target=/src,type=bind",
                "workspaceFolder": "/src", "mounts": ["source=${localWorkspaceFolder}/c,target=${containerWorkspaceFolder}/c,type=bind"]}"#,
        )
        .unwrap();
        let specs: Vec<ParamSpec> = serde_json::from_value(greeting()).unwrap();
        check_references("${param:greeting} ${param:greeting", &specs).unwrap();
        let e = check_references("${param:other}", &specs).unwrap_err();
        assert!(e.body.message.contains("`other`"), "{}", e.body.message);
    }
}
