//! The audit log: query, export (JSON lines) and verification of the hash chain.
//!
//! Both routes need [`Op::AuditRead`]: the auditor, admin and owner roles with a token that
//! has the `audit:read` scope. Reading the log is not itself audited (GETs never are).

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::Op;
use warren_api::v1::AuditVerify;
use warren_store::{AuditQuery, AuditRecord, AUDIT_QUERY_MAX_LIMIT};

use crate::app::{AppState, Json};
use crate::auth::Caller;
use crate::error::{tracing_log, ApiError, ApiResult, ErrorBody};

/// The page size when `limit` is not given (JSON form).
pub const DEFAULT_LIMIT: u32 = 100;

/// The content type of the export.
pub const NDJSON: &str = "application/x-ndjson";

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(query_audit))
        .routes(routes!(verify_audit))
}

/// The answer format of `GET /audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuditFormat {
    /// One JSON object: a page of records and the cursor of the next page.
    #[default]
    Json,
    /// JSON lines (`application/x-ndjson`), one record per line: every matching record.
    Jsonl,
}

/// The query parameters of `GET /audit`. Every filter given must match. An empty value is the
/// same as leaving the parameter out; any parameter not listed here is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// A user id, username or token id: records whose actor is that user or token.
    pub actor: Option<String>,
    /// An action (`workspace.create`), or every action under a prefix (`workspace.*`).
    pub action: Option<String>,
    /// A target id or name.
    pub target: Option<String>,
    /// Records at or after this time (RFC 3339, e.g. `2024-05-01T12:00:00Z`).
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// Records strictly before this time (RFC 3339).
    #[param(format = DateTime)]
    pub until: Option<String>,
    /// Records with an id greater than this: the `next_after` of the previous page.
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// `json`: the most records in the page, 1 to 1000 (default 100). `jsonl`: the most records
    /// exported, any positive number (default: all).
    #[param(minimum = 1)]
    pub limit: Option<u64>,
    /// `json` (default) for one page, or `jsonl` to export every matching record.
    #[param(inline)]
    pub format: Option<AuditFormat>,
}

/// The names `GET /audit` accepts.
const PARAMS: &[&str] = &[
    "actor", "action", "target", "since", "until", "after", "limit", "format",
];

fn bad_param(name: &str, problem: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("query parameter `{name}`: {problem}"))
        .hint("see /api/v1/openapi.json for the parameters of GET /api/v1/audit")
}

fn check_time(name: &str, value: &str) -> ApiResult<()> {
    let t = time::OffsetDateTime::parse(value, &Rfc3339).map_err(|e| {
        bad_param(
            name,
            format!("`{value}` is not an RFC 3339 time ({e}), e.g. `2024-05-01T12:00:00Z`"),
        )
    })?;
    crate::quota::user_time(name, t).map(|_| ())
}

impl AuditParams {
    /// Parses and checks the query string's pairs.
    pub fn parse(pairs: &[(String, String)]) -> ApiResult<AuditParams> {
        let mut p = AuditParams::default();
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in pairs {
            let Some(&known) = PARAMS.iter().find(|k| **k == name.as_str()) else {
                return Err(
                    ApiError::bad_request(format!("unknown query parameter `{name}`"))
                        .hint(format!("GET /api/v1/audit takes {}", PARAMS.join(", "))),
                );
            };
            if seen.contains(&known) {
                return Err(bad_param(known, "given more than once"));
            }
            seen.push(known);
            if value.is_empty() {
                continue;
            }
            let value = value.clone();
            match known {
                "actor" => p.actor = Some(value),
                "action" => {
                    let stem = value.strip_suffix(".*").unwrap_or(&value);
                    if stem.is_empty() || stem.contains('*') {
                        return Err(bad_param(
                            known,
                            format!(
                                "`{value}`: give an action (`workspace.create`) or a prefix \
                                 followed by `.*` (`workspace.*`); `*` is allowed only there"
                            ),
                        ));
                    }
                    p.action = Some(value);
                }
                "target" => p.target = Some(value),
                "since" | "until" => {
                    check_time(known, &value)?;
                    if known == "since" {
                        p.since = Some(value);
                    } else {
                        p.until = Some(value);
                    }
                }
                "after" => {
                    let id = value.parse::<i64>().ok().filter(|id| *id >= 0);
                    p.after = Some(id.ok_or_else(|| {
                        bad_param(known, format!("`{value}` is not a record id"))
                    })?);
                }
                "limit" => {
                    let n = value.parse::<u64>().ok().filter(|n| *n >= 1);
                    p.limit = Some(n.ok_or_else(|| {
                        bad_param(known, format!("`{value}` is not a positive integer"))
                    })?);
                }
                _ => {
                    p.format = Some(match value.as_str() {
                        "json" => AuditFormat::Json,
                        "jsonl" => AuditFormat::Jsonl,
                        _ => {
                            return Err(bad_param(
                                known,
                                format!("`{value}`: expected `json` or `jsonl`"),
                            ))
                        }
                    })
                }
            }
        }
        if p.format.unwrap_or_default() == AuditFormat::Json
            && p.limit
                .is_some_and(|n| n > u64::from(AUDIT_QUERY_MAX_LIMIT))
        {
            return Err(bad_param(
                "limit",
                format!("at most {AUDIT_QUERY_MAX_LIMIT} records per page"),
            )
            .hint("page with `after`, or export everything with `format=jsonl`"));
        }
        Ok(p)
    }

    /// The store query (its `limit` is set per page by the caller).
    fn query(&self) -> AuditQuery {
        AuditQuery {
            actor: self.actor.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            after_id: self.after,
            limit: AUDIT_QUERY_MAX_LIMIT,
        }
    }
}

/// How an audited request ended.
#[derive(Serialize, ToSchema)]
#[schema(as = AuditOutcome)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum AuditOutcomeSchema {
    /// The request was carried out.
    Success,
    /// The request was allowed but failed.
    Failure,
    /// The request was refused: not authenticated or not authorized.
    Denied,
}

/// One audit record, as `warren_store::AuditRecord` serializes it (that type has no schema of
/// its own; a unit test keeps the two in step). Every member is always present; absent values
/// are `null`. See the store's documentation for the hashing scheme that `prev_hash` and `hash`
/// follow.
#[derive(ToSchema)]
#[schema(as = AuditRecord)]
#[allow(dead_code)]
pub struct AuditRecordSchema {
    /// Position in the log: 1, 2, 3, … without gaps.
    pub id: i64,
    /// When the record was appended (RFC 3339 UTC with milliseconds).
    pub at: String,
    /// The request's id (the `X-Request-Id` response header).
    pub request_id: String,
    /// The authenticated user's id.
    #[schema(required = true)]
    pub actor_user_id: Option<String>,
    /// The authenticated user's name at the time.
    #[schema(required = true)]
    pub actor_username: Option<String>,
    /// The API token used.
    #[schema(required = true)]
    pub actor_token_id: Option<String>,
    /// The client's address.
    #[schema(required = true)]
    pub source_ip: Option<String>,
    /// The client's `User-Agent`.
    #[schema(required = true)]
    pub user_agent: Option<String>,
    /// What was attempted, as `noun.verb` (`workspace.create`, `user.update`).
    pub action: String,
    /// The kind of object acted on (`workspace`, `token`, `user`).
    pub target_type: String,
    /// The id of the object acted on.
    #[schema(required = true)]
    pub target_id: Option<String>,
    /// The name of the object acted on.
    #[schema(required = true)]
    pub target_name: Option<String>,
    /// How the request ended.
    pub outcome: AuditOutcomeSchema,
    /// The HTTP status of the response.
    pub status: u16,
    /// For updates, the changed fields as JSON text: `{"field": {"old": .., "new": ..}}`.
    #[schema(required = true)]
    pub diff_json: Option<String>,
    /// Other details as JSON text.
    #[schema(required = true)]
    pub details_json: Option<String>,
    /// The previous record's `hash` (64 zeros for the first record).
    pub prev_hash: String,
    /// SHA-256 (hex) of `prev_hash`, a newline and the record's other members.
    pub hash: String,
}

/// A page of the audit log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditPage {
    /// The matching records, in id order.
    #[schema(value_type = Vec<AuditRecordSchema>)]
    pub records: Vec<AuditRecord>,
    /// Pass as `after` for the next page; `null` when there are no more matching records.
    #[schema(required = true)]
    pub next_after: Option<i64>,
}

/// Queries or exports the audit log.
///
/// `format=json` (the default) answers one page of matching records, in id order; follow
/// `next_after` for the next. `format=jsonl` streams every matching record, one per line: an
/// unfiltered export verifies on its own with the store's documented hashing scheme.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", security(("token" = [])),
    params(AuditParams),
    responses(
        (status = 200, description = "A page of records (`format=json`), or every matching \
            record as JSON lines, one `AuditRecord` per line (`format=jsonl`)",
            content((AuditPage = "application/json"), (String = "application/x-ndjson"))),
        (status = 400, description = "A bad or unknown query parameter", body = ErrorBody),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs the auditor, admin or owner role and the \
            `audit:read` scope", body = ErrorBody)))]
async fn query_audit(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Response> {
    caller.require(Op::AuditRead)?;
    let Query(pairs) = query
        .map_err(|e| ApiError::bad_request(format!("malformed query string: {}", e.body_text())))?;
    let params = AuditParams::parse(&pairs)?;
    let mut q = params.query();
    match params.format.unwrap_or_default() {
        AuditFormat::Json => {
            let limit = params.limit.unwrap_or(u64::from(DEFAULT_LIMIT));
            q.limit = u32::try_from(limit).unwrap_or(AUDIT_QUERY_MAX_LIMIT);
            let records = state.store.query_audit(&q).await?;
            let next_after = match records.last() {
                Some(last) if records.len() as u64 == limit => {
                    // A full page: is there anything after it?
                    let probe = AuditQuery {
                        after_id: Some(last.id),
                        limit: 1,
                        ..q.clone()
                    };
                    let more = !state.store.query_audit(&probe).await?.is_empty();
                    more.then_some(last.id)
                }
                _ => None,
            };
            Ok(Json(AuditPage {
                records,
                next_after,
            })
            .into_response())
        }
        AuditFormat::Jsonl => export(state, q, params.limit).await,
    }
}

/// The next page of the export: up to [`AUDIT_QUERY_MAX_LIMIT`] records as JSON lines, or
/// `None` when it is complete. Advances `q.after_id` and counts down `remaining`.
async fn export_page(
    state: &AppState,
    q: &mut AuditQuery,
    remaining: &mut Option<u64>,
) -> ApiResult<Option<Bytes>> {
    let page = match *remaining {
        Some(0) => return Ok(None),
        Some(n) => u32::try_from(n).map_or(AUDIT_QUERY_MAX_LIMIT, |n| n.min(AUDIT_QUERY_MAX_LIMIT)),
        None => AUDIT_QUERY_MAX_LIMIT,
    };
    q.limit = page;
    let records = state.store.query_audit(q).await?;
    let Some(last) = records.last() else {
        return Ok(None);
    };
    q.after_id = Some(last.id);
    let mut buf = Vec::with_capacity(records.len() * 512);
    for r in &records {
        serde_json::to_writer(&mut buf, r).map_err(ApiError::internal)?;
        buf.push(b'\n');
    }
    if let Some(n) = remaining.as_mut() {
        *n -= records.len() as u64;
    }
    if (records.len() as u64) < u64::from(page) {
        // A short page is the end.
        *remaining = Some(0);
    }
    Ok(Some(Bytes::from(buf)))
}

/// Streams every matching record as JSON lines, page by page. The first page is read before
/// answering, so an error there is a proper error response; an error later aborts the body,
/// so a client never mistakes a truncated export for a complete one.
async fn export(state: AppState, mut q: AuditQuery, limit: Option<u64>) -> ApiResult<Response> {
    let mut remaining = limit;
    let first = export_page(&state, &mut q, &mut remaining).await?;
    let rest = futures_util::stream::try_unfold(
        (state, q, remaining, first.is_some()),
        |(state, mut q, mut remaining, more)| async move {
            if !more {
                return Ok(None);
            }
            match export_page(&state, &mut q, &mut remaining).await {
                Ok(Some(chunk)) => Ok(Some((chunk, (state, q, remaining, true)))),
                Ok(None) => Ok(None),
                Err(e) => {
                    tracing_log(&format!(
                        "audit export aborted: {} {}",
                        e.status, e.body.message
                    ));
                    Err(std::io::Error::other("audit export failed"))
                }
            }
        },
    );
    let first = futures_util::stream::iter(first.map(Ok::<_, std::io::Error>));
    let body = Body::from_stream(futures_util::StreamExt::chain(first, rest));
    Ok(([(header::CONTENT_TYPE, NDJSON)], body).into_response())
}

/// Verifies the audit log's hash chain.
///
/// Checks every record from the first to the last. Answers 200 also when the chain is broken:
/// then `ok` is false, and `first_bad_id` and `reason` say where and why.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", security(("token" = [])),
    responses(
        (status = 200, body = AuditVerify),
        (status = 401, description = "No valid token", body = ErrorBody),
        (status = 403, description = "Needs the auditor, admin or owner role and the \
            `audit:read` scope", body = ErrorBody)))]
async fn verify_audit(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<AuditVerify>> {
    caller.require(Op::AuditRead)?;
    let v = state.store.verify_audit().await?;
    let (first_bad_id, reason) = match v.first_bad {
        Some(b) => (Some(b.id), Some(b.reason)),
        None => (None, None),
    };
    Ok(Json(AuditVerify {
        records: v.records,
        ok: v.ok,
        head_hash: v.head_hash,
        first_bad_id,
        reason,
    }))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        q.split('&')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    fn err(q: &str) -> String {
        let e = AuditParams::parse(&pairs(q)).unwrap_err();
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{q}");
        e.body.message
    }

    #[test]
    fn params_parse() {
        let p = AuditParams::parse(&pairs(
            "actor=alice&action=workspace.*&target=dev&since=2024-05-01T12:00:00Z\
             &until=2024-05-01T14:00:00+02:00&after=7&limit=5&format=jsonl",
        ))
        .unwrap();
        assert_eq!(p.actor.as_deref(), Some("alice"));
        assert_eq!(p.action.as_deref(), Some("workspace.*"));
        assert_eq!(p.after, Some(7));
        assert_eq!(p.limit, Some(5));
        assert_eq!(p.format, Some(AuditFormat::Jsonl));
        assert_eq!(
            AuditParams::parse(&pairs("actor=&limit=")).unwrap(),
            AuditParams::default()
        );
        // The export has no page cap.
        assert_eq!(
            AuditParams::parse(&pairs("format=jsonl&limit=5000"))
                .unwrap()
                .limit,
            Some(5000)
        );
    }

    #[test]
    fn bad_params_name_the_parameter() {
        for (q, name) in [
            ("limit=ten", "`limit`"),
            ("limit=0", "`limit`"),
            ("limit=1001", "`limit`"),
            ("limit=-1", "`limit`"),
            ("after=x", "`after`"),
            ("since=yesterday", "`since`"),
            ("until=2024-05-01", "`until`"),
            ("until=9999-12-31T23:00:00-05:00", "`until`"),
            ("since=0001-01-01T00:00:00Z", "`since`"),
            ("format=csv", "`format`"),
            ("action=*", "`action`"),
            ("action=work*", "`action`"),
            ("actor=a&actor=b", "`actor`"),
            ("bogus=1", "`bogus`"),
        ] {
            let msg = err(q);
            assert!(msg.contains(name), "{q}: {msg}");
        }
    }

    /// The documented schema lists exactly the members `AuditRecord` serializes, all required.
    #[test]
    fn record_schema_matches_the_store_type() {
        let record = AuditRecord {
            id: 1,
            at: "2024-05-01T12:00:00.000Z".into(),
            request_id: "r".into(),
            actor_user_id: None,
            actor_username: None,
            actor_token_id: None,
            source_ip: None,
            user_agent: None,
            action: "user.create".into(),
            target_type: "user".into(),
            target_id: None,
            target_name: None,
            outcome: warren_store::AuditOutcome::Success,
            status: 201,
            diff_json: None,
            details_json: None,
            prev_hash: warren_store::AUDIT_GENESIS_HASH.into(),
            hash: String::new(),
        };
        let value = serde_json::to_value(&record).unwrap();
        let members: BTreeSet<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let schema =
            serde_json::to_value(<AuditRecordSchema as utoipa::PartialSchema>::schema()).unwrap();
        let props: BTreeSet<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(members, props);
        let required: BTreeSet<&str> = schema["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(required, members);
        assert_eq!(
            <AuditRecordSchema as utoipa::ToSchema>::name(),
            "AuditRecord"
        );
        for outcome in ["success", "failure", "denied"] {
            let o: warren_store::AuditOutcome =
                serde_json::from_value(serde_json::json!(outcome)).unwrap();
            assert_eq!(o.as_str(), outcome);
        }
        let outcomes =
            serde_json::to_value(<AuditOutcomeSchema as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(
            outcomes["enum"],
            serde_json::json!(["success", "failure", "denied"])
        );
    }
}
