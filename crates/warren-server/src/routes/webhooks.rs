//! Outgoing webhooks: `/webhooks` (admins manage them, auditors read them). A webhook receives
//! every matching event of the whole server, whoever it concerns, so it is an administrator's
//! tool ([`Op::WebhookAdmin`]; reading needs [`Op::WebhookRead`]). Its secret is shown once, in
//! the answer that creates it. The delivery worker is `crate::webhooks`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rand::RngCore;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use warren_api::auth::Decision;
use warren_api::auth::Op;
use warren_api::v1::{
    CreateWebhook, CreatedWebhook, UpdateWebhook, Webhook, WebhookDelivery, WebhookTest,
};
use warren_api::webhook;
use warren_store::{DeliveryRecord, NewEvent, NewWebhook, WebhookRecord};

use crate::app::{AppState, Json};
use crate::audit::AuditNote;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// The longest URL, in bytes.
pub const MAX_URL_LEN: usize = 2048;
/// The longest name, in characters.
pub const MAX_NAME_LEN: usize = 100;
/// Secret length bounds, in characters.
pub const SECRET_LEN: (usize, usize) = (16, 256);
/// Deliveries `GET /webhooks/{id}/deliveries` shows.
pub const DELIVERIES_SHOWN: u32 = 100;

/// The routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_webhooks, create_webhook))
        .routes(routes!(get_webhook, update_webhook, delete_webhook))
        .routes(routes!(test_webhook))
        .routes(routes!(list_deliveries))
}

/// A URL with its path and query masked (`https://hooks.slack.com/…`): Slack, Discord and many
/// other receivers put the credential there.
pub fn masked_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or_default();
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = u.path() != "/" || u.query().is_some() || u.fragment().is_some();
            format!(
                "{}://{host}{port}/{}",
                u.scheme(),
                if rest { "…" } else { "" }
            )
        }
        Err(_) => "…".to_owned(),
    }
}

/// Whether `caller` sees webhook URLs whole: those who may manage webhooks.
fn sees_urls(caller: &Caller) -> bool {
    caller.check(Op::WebhookAdmin, None) == Decision::Allow
}

/// The API view of a webhook (never its secret; its URL masked unless `whole`).
pub fn view(h: &WebhookRecord, whole: bool) -> Webhook {
    Webhook {
        id: h.id.clone(),
        name: h.name.clone(),
        url: if whole {
            h.url.clone()
        } else {
            masked_url(&h.url)
        },
        events: h.events.clone(),
        created_by: h.created_by.clone(),
        created_at: h.created_at.clone(),
        disabled: h.disabled,
        cursor: h.cursor,
        pending: h.pending,
    }
}

fn delivery_view(d: &DeliveryRecord) -> WebhookDelivery {
    WebhookDelivery {
        id: d.id.clone(),
        webhook_id: d.webhook_id.clone(),
        event_id: d.event_id,
        kind: d.kind.clone(),
        status: d.status.clone(),
        attempts: d.attempts,
        next_attempt_at: (d.status == "pending").then(|| d.next_attempt_at.clone()),
        last_status_code: d.last_status_code,
        last_error: d.last_error.clone(),
        created_at: d.created_at.clone(),
        delivered_at: d.delivered_at.clone(),
    }
}

fn bad(field: &str, problem: impl std::fmt::Display, hint: &str) -> ApiError {
    ApiError::bad_request(format!("`{field}`: {problem}")).hint(hint.to_owned())
}

/// Checks a webhook URL: absolute, `http` or `https`, a host, no credentials. Returns it as
/// given and its host.
pub fn check_url(url: &str) -> ApiResult<(String, String)> {
    const HINT: &str = "give an absolute http(s) URL, e.g. https://hooks.example.com/warren";
    if url.len() > MAX_URL_LEN {
        return Err(bad("url", format!("longer than {MAX_URL_LEN} bytes"), HINT));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("url", "contains spaces or control characters", HINT));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| bad("url", format!("`{url}` is not an absolute URL ({e})"), HINT))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(
            "url",
            format!("the scheme `{}` is not http or https", parsed.scheme()),
            HINT,
        ));
    }
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Err(bad("url", "it has no host", HINT));
    };
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad(
            "url",
            "it carries credentials (`user:password@`)",
            "authenticate the request by its `Warren-Signature` header instead; a URL is shown to every admin and auditor",
        ));
    }
    Ok((url.to_owned(), host.to_owned()))
}

fn check_name(name: &str) -> ApiResult<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(bad(
            "name",
            format!("a webhook name is 1 to {MAX_NAME_LEN} characters without control characters"),
            "pass another name, or none to use the URL's host",
        ));
    }
    Ok(name.to_owned())
}

fn check_secret(secret: &str) -> ApiResult<()> {
    let (min, max) = SECRET_LEN;
    let n = secret.chars().count();
    if n < min || n > max || !secret.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad(
            "secret",
            format!("a secret is {min} to {max} printable ASCII characters without spaces"),
            "leave `secret` out and the server makes one (shown once)",
        ));
    }
    Ok(())
}

/// A new secret: 32 random bytes, hex.
fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

async fn hook_for(state: &AppState, id: &str) -> ApiResult<WebhookRecord> {
    state.store.webhook(id).await?.ok_or_else(|| {
        ApiError::not_found("webhook", id).hint("`warren webhook list` shows the webhooks")
    })
}

fn note(action: &str, h: &WebhookRecord) -> AuditNote {
    let mut n = AuditNote::target("webhook", &h.id, &h.name);
    n.action = Some(action.into());
    // The secret is never logged, nor the URL's path, which may hold a credential.
    n.details_json = Some(
        serde_json::json!({ "url": masked_url(&h.url), "events": h.events, "disabled": h.disabled })
            .to_string(),
    );
    n
}

/// The webhooks (admins and auditors).
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", security(("token" = [])),
    responses((status = 200, body = [Webhook]), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_webhooks(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Vec<Webhook>>> {
    caller.require(Op::WebhookRead)?;
    let whole = sees_urls(&caller);
    Ok(Json(
        state
            .store
            .webhooks()
            .await?
            .iter()
            .map(|h| view(h, whole))
            .collect(),
    ))
}

/// Registers a webhook (admins). It receives the matching events recorded from now on, POSTed
/// as JSON and signed with its secret (`Warren-Signature`), which this answer shows once.
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", security(("token" = [])), request_body = CreateWebhook,
    responses((status = 201, body = CreatedWebhook), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
async fn create_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateWebhook>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Op::WebhookAdmin)?;
    let (url, host) = check_url(&body.url)?;
    let name = check_name(body.name.as_deref().unwrap_or(&host))?;
    let given = body.events.unwrap_or_else(|| vec!["*".to_owned()]);
    let patterns = webhook::parse_patterns(&given).map_err(|e| {
        bad(
            "events",
            e,
            "e.g. [\"workspace.*\", \"budget.*\"], or leave `events` out for every event",
        )
    })?;
    let events: Vec<String> = patterns.iter().map(|p| p.as_string()).collect();
    let secret = match body.secret {
        Some(s) => {
            check_secret(&s)?;
            s
        }
        None => new_secret(),
    };
    let h = state
        .store
        .create_webhook(NewWebhook {
            name: &name,
            url: &url,
            secret: &secret,
            events: &events,
            created_by: Some(&caller.user.id),
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Extension(note("webhook.create", &h)),
        Json(CreatedWebhook {
            webhook: view(&h, true),
            secret,
        }),
    ))
}

/// One webhook (admins and auditors).
#[utoipa::path(get, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("token" = [])),
    params(("id" = String, Path, description = "webhook id")),
    responses((status = 200, body = Webhook), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Webhook>> {
    caller.require(Op::WebhookRead)?;
    Ok(Json(view(
        &hook_for(&state, &id).await?,
        sees_urls(&caller),
    )))
}

/// Disables or enables a webhook (admins). Enabled again, it resumes with its backlog, or with
/// `skip_backlog: true` drops the pending deliveries and starts from the latest event.
#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("token" = [])),
    params(("id" = String, Path, description = "webhook id")), request_body = UpdateWebhook,
    responses((status = 200, body = Webhook), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn update_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(body): Json<UpdateWebhook>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Op::WebhookAdmin)?;
    if body.disabled && body.skip_backlog {
        return Err(bad(
            "skip_backlog",
            "applies when enabling a webhook (`disabled: false`)",
            "e.g. {\"disabled\": false, \"skip_backlog\": true}",
        ));
    }
    let h = hook_for(&state, &id).await?;
    let h = state
        .store
        .set_webhook_disabled(&h.id, body.disabled, body.skip_backlog)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook", &id))?;
    let action = if body.disabled {
        "webhook.disable"
    } else {
        "webhook.enable"
    };
    let mut n = note(action, &h);
    if body.skip_backlog {
        n.details_json = Some(
            serde_json::json!({ "url": masked_url(&h.url), "events": h.events,
                "disabled": h.disabled, "skip_backlog": true })
            .to_string(),
        );
    }
    Ok((axum::Extension(n), Json(view(&h, true))))
}

/// Removes a webhook and its deliveries (admins). Nothing more is sent to it.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("token" = [])),
    params(("id" = String, Path, description = "webhook id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Op::WebhookAdmin)?;
    let h = hook_for(&state, &id).await?;
    if !state.store.delete_webhook(&h.id).await? {
        return Err(ApiError::not_found("webhook", &id));
    }
    Ok((
        StatusCode::NO_CONTENT,
        axum::Extension(note("webhook.delete", &h)),
    ))
}

/// Queues a `webhook.test` event for this webhook only (admins): it is sent like any other,
/// and its delivery shows in `GET /webhooks/{id}/deliveries`.
#[utoipa::path(post, path = "/api/v1/webhooks/{id}/test", tag = "webhooks", security(("token" = [])),
    params(("id" = String, Path, description = "webhook id")),
    responses((status = 202, body = WebhookTest), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn test_webhook(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    caller.require(Op::WebhookAdmin)?;
    let h = hook_for(&state, &id).await?;
    let event = NewEvent {
        kind: webhook::TEST_KIND.to_owned(),
        actor_id: Some(caller.user.id.clone()),
        reason: Some("test".to_owned()),
        message: format!("a test of webhook `{}` by {}", h.name, caller.user.username),
        data: serde_json::json!({ "webhook_id": h.id }),
        ..Default::default()
    };
    let (e, delivery) = state
        .store
        .queue_webhook_test(&h.id, &event)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook", &id))?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Extension(note("webhook.test", &h)),
        Json(WebhookTest {
            event_id: e.id,
            delivery_id: delivery,
        }),
    ))
}

/// A webhook's latest deliveries, newest event first (admins and auditors): status, attempts,
/// the last answer or error, and when the next attempt is due.
#[utoipa::path(get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks", security(("token" = [])),
    params(("id" = String, Path, description = "webhook id")),
    responses((status = 200, body = [WebhookDelivery]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<WebhookDelivery>>> {
    caller.require(Op::WebhookRead)?;
    let h = hook_for(&state, &id).await?;
    let list = state
        .store
        .webhook_deliveries(&h.id, DELIVERIES_SHOWN)
        .await?;
    Ok(Json(list.iter().map(delivery_view).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_urls_keep_the_scheme_and_host_only() {
        for (url, masked) in [
            (
                "https://hooks.slack.com/services/T0/B0/XXXX",
                "https://hooks.slack.com/…",
            ),
            ("http://127.0.0.1:9000/h?token=s", "http://127.0.0.1:9000/…"),
            ("https://example.com/", "https://example.com/"),
            ("https://example.com/?k=v", "https://example.com/…"),
            ("not a url", "…"),
        ] {
            assert_eq!(masked_url(url), masked, "{url}");
        }
    }

    #[test]
    fn urls_are_absolute_http_without_credentials() {
        assert_eq!(
            check_url("https://hooks.example.com/x?a=1").unwrap().1,
            "hooks.example.com"
        );
        assert!(check_url("http://127.0.0.1:9/").is_ok());
        for bad in [
            "ftp://example.com/",
            "/relative/path",
            "example.com/x",
            "https://user:pass@example.com/",
            "https://user@example.com/",
            "https://exa mple.com/",
            "file:///etc/passwd",
        ] {
            let e = check_url(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(
                e.body.message.starts_with("`url`"),
                "{bad}: {}",
                e.body.message
            );
        }
    }
}
