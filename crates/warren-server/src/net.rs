//! Network policies of server workspaces: the plan in force of a workspace is its template's
//! `policy.network` (or the server's `default_network`) followed by its own policy, with
//! `workspace:NAME` rules resolved to the addresses of the owner's other workspaces.

use axum::http::StatusCode;
use warren_api::net::{NetworkPolicy, RuleError, Target};
use warren_api::ErrorCode;
use warren_runtime::network::EgressPlan;
use warren_store::WorkspaceRecord;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// A bad rule as an API error: 400 `invalid_request` naming the rule, with its hint.
pub(crate) fn rule_error(e: RuleError) -> ApiError {
    let hint = e.hint.clone().unwrap_or_else(|| {
        "rules are ADDRESS[:PORTS]: an IPv4 address or CIDR, a domain, `*.domain`, or \
         `workspace:NAME`"
            .into()
    });
    ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidRequest,
        e.to_string(),
    )
    .hint(hint)
}

/// The base policy of a workspace: its template's network policy, else the server's default;
/// and where it came from.
pub(crate) async fn base_policy(
    state: &AppState,
    rec: &WorkspaceRecord,
) -> ApiResult<(NetworkPolicy, &'static str)> {
    let template = crate::governor::template_policy(state, rec).await?;
    Ok(match template.and_then(|t| t.network.clone()) {
        Some(n) => (n, "template"),
        None => (state.cfg.default_network.clone(), "server"),
    })
}

/// The workspace's own network policy, if it has one.
pub(crate) async fn own_policy(
    state: &AppState,
    rec: &WorkspaceRecord,
) -> ApiResult<Option<NetworkPolicy>> {
    let cols = state
        .store
        .network_columns(&rec.id)
        .await?
        .unwrap_or_default();
    Ok(cols
        .own
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok()))
}

/// Whose policy a plan is for: the owner whose workspaces `workspace:NAME` rules name, and the
/// workspace itself (which a rule cannot name), once it exists.
#[derive(Clone, Copy)]
pub(crate) struct Owner<'a> {
    pub owner_id: &'a str,
    pub workspace_id: Option<&'a str>,
    /// The caller setting the policy, if any: a token restricted to some workspaces may name
    /// only those.
    pub caller: Option<&'a crate::auth::Caller>,
}

impl<'a> Owner<'a> {
    pub fn of(rec: &'a WorkspaceRecord) -> Owner<'a> {
        Owner {
            owner_id: &rec.ownership.owner_id,
            workspace_id: Some(&rec.id),
            caller: None,
        }
    }
}

/// The plan in force for `rec` with base policy `base` and own policy `own`. `workspace:NAME`
/// rules name the owner's other workspaces, which must have an address already; unless
/// `strict`, rules naming workspaces that are gone (or have no address) are left out, which
/// closes what they opened.
pub(crate) async fn plan(
    state: &AppState,
    owner: Owner<'_>,
    base: &NetworkPolicy,
    own: Option<&NetworkPolicy>,
    strict: bool,
) -> ApiResult<EgressPlan> {
    let mut plan = EgressPlan::default();
    for policy in std::iter::once(base).chain(own) {
        let (mut stage, limits) = policy.check().map_err(rule_error)?;
        for list in [&mut stage.allow, &mut stage.deny] {
            let mut kept = Vec::with_capacity(list.len());
            for mut rule in std::mem::take(list) {
                if let Target::Workspace(name) = &rule.target {
                    match sibling_address(state, owner, name).await? {
                        Ok(addr) => {
                            rule.target =
                                Target::Net(warren_api::net::Ipv4Net { addr, prefix: 32 });
                            rule.sibling = true;
                        }
                        Err((message, hint)) if strict => {
                            return Err(rule_error(RuleError {
                                rule: rule.text.clone(),
                                message,
                                hint: Some(hint),
                            }))
                        }
                        Err(_) => continue,
                    }
                }
                kept.push(rule);
            }
            *list = kept;
        }
        plan.limits = if plan.stages.is_empty() {
            limits
        } else {
            plan.limits.min(limits)
        };
        plan.stages.push(stage);
    }
    Ok(plan)
}

/// The address of the owner's other workspace `name`, or why there is none (message, hint).
async fn sibling_address(
    state: &AppState,
    owner: Owner<'_>,
    name: &str,
) -> ApiResult<Result<std::net::Ipv4Addr, (String, String)>> {
    let sibling = state
        .store
        .get_by_name(owner.owner_id, name)
        .await?
        .filter(|s| Some(s.id.as_str()) != owner.workspace_id)
        .filter(|s| {
            owner.caller.is_none_or(|c| {
                let whose = if s.ownership.owner_id == c.user.id {
                    warren_api::auth::Owner::Own
                } else {
                    warren_api::auth::Owner::Other
                };
                c.check(warren_api::auth::Op::WorkspaceWrite(whose), Some(&s.id))
                    == warren_api::auth::Decision::Allow
            })
        });
    let Some(sibling) = sibling else {
        return Ok(Err((
            format!("no other workspace of this owner is named `{name}`"),
            "`warren list` shows your workspaces".into(),
        )));
    };
    match state
        .engine
        .address(warren_engine::WsRef::Id(sibling.id))
        .await?
    {
        Some(addr) => Ok(Ok(addr)),
        None => Ok(Err((
            format!("workspace `{name}` has no address yet"),
            format!("start it once (`warren start {name}`), then set the rule"),
        ))),
    }
}

/// [`refresh`] of the workspace with this id, for jobs (errors as the engine's).
pub(crate) async fn refresh_id(
    state: &AppState,
    id: &str,
) -> Result<(), warren_engine::EngineError> {
    let Some(rec) = state.store.get(id).await? else {
        return Ok(());
    };
    refresh(state, &rec).await.map_err(|e| {
        warren_engine::EngineError::Internal(format!("network policy: {}", e.body.message))
    })
}

/// After a workspace of `owner_id` went away: the plans of the owner's workspaces that name
/// other workspaces (in their own policy or their template's) are computed again, so none keeps
/// an address the next workspace may get.
pub(crate) async fn after_delete(state: &AppState, owner_id: &str) {
    if owner_id.is_empty() {
        return;
    }
    let ids = match state.store.workspaces_naming_siblings(owner_id).await {
        Ok(ids) => ids,
        Err(e) => {
            crate::error::tracing_log(&format!("network policies after a deletion: {e}"));
            return;
        }
    };
    for id in ids {
        if let Err(e) = refresh_id(state, &id).await {
            crate::error::tracing_log(&format!("network policy of workspace {id}: {e}"));
        }
    }
}

/// Recomputes and applies the plan of `rec` from its stored policies (after its template
/// changed, or a workspace its rules name went away: a rule naming a deleted workspace no
/// longer opens anything, and the address is not reused until then).
pub(crate) async fn refresh(state: &AppState, rec: &WorkspaceRecord) -> ApiResult<()> {
    let (base, _) = base_policy(state, rec).await?;
    let own = own_policy(state, rec).await?;
    let own_json = own
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(ApiError::internal)?;
    let plan = plan(state, Owner::of(rec), &base, own.as_ref(), false).await?;
    state.engine.set_network(rec, own_json, &plan).await?;
    Ok(())
}
