//! The webhook delivery worker: events out to the URLs admins registered, signed, retried with
//! backoff.
//!
//! It wakes when this process records an event (`Store::events_watch`) and every second. Each
//! pass first turns new events into deliveries for every enabled webhook whose patterns match
//! (`Store::enqueue_webhook_events`, which moves the webhook's cursor in the same transaction),
//! then sends what is due. Per webhook, deliveries go out one at a time in event order: only the
//! oldest pending one is ever due, so a failing receiver holds back its own later events and
//! nobody else's (each webhook has its own sender task; at most [`CONCURRENCY`] run at once).
//!
//! An attempt claims its row first (one more attempt, the next one pushed [`LEASE`] ahead), then
//! POSTs. A 2xx answer is delivered; anything else (other statuses, redirects, which are not
//! followed, timeouts after [`TIMEOUT`], connection errors) is retried after
//! [`backoff`] (10 s doubling to at most an hour, with jitter) up to [`MAX_ATTEMPTS`] attempts,
//! then the delivery is `failed` and the webhook disabled ([`disable`]: a `webhook.disabled`
//! event, a log line); so is a webhook whose oldest pending delivery is older than
//! [`MAX_BACKLOG_AGE`]. An admin enables it again (`PATCH /webhooks/{id}`), with its backlog or
//! without; pending rows of a disabled webhook are pruned after [`KEEP_PENDING_DISABLED`]. A
//! sender's turn is bounded ([`TURN_DELIVERIES`], [`TURN_TIME`]): a slow receiver draining a
//! long backlog gives its slot up between turns, so others are served. Rows live in the
//! database, so pending deliveries survive a restart and a crash mid-send means a retry: delivery
//! is at least once, and receivers dedupe by the `Warren-Delivery` header (or the event id). Times come from the store's clock, so tests
//! move time instead of waiting out a backoff.
//!
//! The request: `POST` with a JSON body ([`payload`]) and the headers `Content-Type:
//! application/json`, `User-Agent: warren-webhooks/VERSION`, `Warren-Event: KIND`,
//! `Warren-Delivery: ID` and `Warren-Signature: t=UNIX_SECONDS,v1=HEX`, where `HEX` is
//! HMAC-SHA256 under the webhook's secret of `T.BODY` (the decimal `t`, a dot, the exact body
//! bytes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinSet;
use warren_api::webhook::{self, Pattern};
use warren_store::{AttemptOutcome, DeliveryRecord, EventEntry, WebhookRecord};

use crate::app::AppState;
use crate::error::tracing_log;

/// How long a receiver has to answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How far a claimed attempt pushes the delivery's next attempt (past [`TIMEOUT`]), should this
/// process die before recording the outcome.
pub const LEASE: Duration = Duration::from_secs(60);
/// Attempts before a delivery is given up (`failed`).
pub const MAX_ATTEMPTS: i64 = 12;
/// The first retry's delay; each later one doubles it.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// The longest delay between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// Webhooks being sent to at once.
pub const CONCURRENCY: usize = 8;
/// Delivered rows are kept this long.
pub const KEEP_DELIVERED: Duration = Duration::from_secs(7 * 24 * 3600);
/// Failed rows are kept this long.
pub const KEEP_FAILED: Duration = Duration::from_secs(30 * 24 * 3600);
/// Events turned into deliveries per webhook per step.
const ENQUEUE_BATCH: u32 = 500;
/// The most deliveries one sender turn makes before it gives its slot up (it comes back at the
/// next pass, behind the webhooks waiting for a slot), so slow receivers with long backlogs do
/// not starve the others.
pub const TURN_DELIVERIES: usize = 20;
/// The longest one sender turn lasts (it ends after the attempt that crosses it).
pub const TURN_TIME: Duration = Duration::from_secs(2);
/// A webhook whose oldest pending delivery is older than this is disabled.
pub const MAX_BACKLOG_AGE: Duration = Duration::from_secs(24 * 3600);
/// Pending deliveries of a disabled webhook are kept this long.
pub const KEEP_PENDING_DISABLED: Duration = Duration::from_secs(7 * 24 * 3600);

/// The delay before the attempt after `attempts` failed ones: 10 s, 20 s, 40 s ... at most an
/// hour, each shortened by up to a fifth at random, so that receivers that came back are not
/// hit by every sender at once.
pub fn backoff(attempts: i64) -> Duration {
    let doublings = attempts.clamp(1, 30) - 1;
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << doublings.min(20))
        .min(MAX_BACKOFF);
    let jitter: f64 = rand::thread_rng().gen_range(0.8..=1.0);
    base.mul_f64(jitter)
}

/// The JSON body of an event's delivery.
pub fn payload(e: &EventEntry) -> serde_json::Value {
    let workspace = match (&e.workspace_id, &e.workspace_name) {
        (Some(id), name) => serde_json::json!({ "id": id, "name": name }),
        (None, _) => serde_json::Value::Null,
    };
    serde_json::json!({
        "id": e.id,
        "kind": e.kind,
        "at": e.at,
        "workspace": workspace,
        "owner_id": e.owner_id,
        "team_id": e.team_id,
        "actor_id": e.actor_id,
        "reason": e.reason,
        "message": e.message,
        "data": e.data,
    })
}

/// The HTTP client deliveries use: no redirects, a timeout, no connection reuse across hooks'
/// failures mattering (each request stands alone).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .user_agent(concat!("warren-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// The worker loop (spawned by `serve`, aborted at shutdown, which also aborts its senders).
pub async fn run(state: AppState) {
    let client = client();
    let mut events = state.store.events_watch();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let limit = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut senders: JoinSet<()> = JoinSet::new();
    // Webhook id -> whether its sender is still running.
    let mut busy: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    let mut passes: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            r = events.changed() => {
                if r.is_err() {
                    // Never while the store lives; the ticks still come.
                    tick.tick().await;
                }
            }
        }
        if state.shutting_down() {
            return;
        }
        while senders.try_join_next().is_some() {}
        busy.retain(|_, h| !h.is_finished());
        if let Err(e) = enqueue(&state).await {
            tracing_log(&format!("webhooks: {e}"));
        }
        let due = match state.store.webhooks_due(&state.store.now()).await {
            Ok(d) => d,
            Err(e) => {
                tracing_log(&format!("webhooks: {e}"));
                continue;
            }
        };
        for id in due {
            if busy.contains_key(&id) {
                continue;
            }
            let (state, client, limit) = (state.clone(), client.clone(), limit.clone());
            let hook = id.clone();
            let h = senders.spawn(async move {
                let Ok(_permit) = limit.acquire_owned().await else {
                    return;
                };
                send_due(&state, &client, &hook).await;
            });
            busy.insert(id, h);
        }
        passes += 1;
        // One index lookup per enabled webhook (its oldest pending row).
        disable_stale(&state).await;
        if passes % 600 == 1 {
            prune(&state).await;
        }
    }
}

/// Turns new events into deliveries for every enabled webhook.
pub async fn enqueue(state: &AppState) -> Result<(), warren_store::StoreError> {
    let hooks = state.store.webhooks_brief().await?;
    if hooks.is_empty() {
        return Ok(());
    }
    // Read-only when nothing is new, which is most seconds.
    let latest = state.store.latest_event_id().await?;
    for hook in hooks {
        if hook.disabled || hook.cursor >= latest {
            continue;
        }
        let patterns = patterns(&hook);
        let matches = |kind: &str| webhook::matches_any(&patterns, kind);
        loop {
            let (_, more) = state
                .store
                .enqueue_webhook_events(&hook.id, &matches, ENQUEUE_BATCH)
                .await?;
            if !more {
                break;
            }
        }
    }
    Ok(())
}

fn patterns(hook: &WebhookRecord) -> Vec<Pattern> {
    // Checked when the webhook was made; a pattern no longer known matches nothing.
    hook.events
        .iter()
        .filter_map(|p| Pattern::parse(p).ok())
        .collect()
}

/// Sends webhook `id`'s due deliveries, oldest first, until one fails, none is due, or the turn
/// is over ([`TURN_DELIVERIES`], [`TURN_TIME`]).
async fn send_due(state: &AppState, client: &reqwest::Client, id: &str) {
    let started = tokio::time::Instant::now();
    for _ in 0..TURN_DELIVERIES {
        if state.shutting_down() || started.elapsed() >= TURN_TIME {
            return;
        }
        let (hook, d) = match (
            state.store.webhook_brief(id).await,
            state.store.next_webhook_delivery(id).await,
        ) {
            (Ok(Some(h)), Ok(Some(d))) if !h.disabled => (h, d),
            (Err(e), _) | (_, Err(e)) => {
                tracing_log(&format!("webhooks: {e}"));
                return;
            }
            _ => return,
        };
        if d.next_attempt_at > state.store.now() {
            return;
        }
        match attempt(state, client, &hook, &d).await {
            Ok(true) => continue,
            Ok(false) => return,
            Err(e) => {
                tracing_log(&format!("webhooks: {e}"));
                return;
            }
        }
    }
}

/// One attempt at delivery `d`; whether it was delivered.
async fn attempt(
    state: &AppState,
    client: &reqwest::Client,
    hook: &WebhookRecord,
    d: &DeliveryRecord,
) -> Result<bool, warren_store::StoreError> {
    let store = &state.store;
    let lease = warren_store::format_time(store.now_time() + LEASE);
    if !store.claim_webhook_delivery(d, &lease).await? {
        return Ok(false); // Someone else has it.
    }
    let attempts = d.attempts + 1;
    let Some(event) = store.event(d.event_id).await? else {
        let outcome = AttemptOutcome::Failed {
            code: None,
            error: "the event no longer exists".into(),
        };
        store.finish_webhook_delivery(&d.id, &outcome).await?;
        return Ok(false);
    };
    let body = serde_json::to_vec(&payload(&event)).unwrap_or_default();
    let t = store.now_time().unix_timestamp();
    let sent = client
        .post(&hook.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Warren-Event", &event.kind)
        .header("Warren-Delivery", &d.id)
        .header(
            "Warren-Signature",
            webhook::signature(&hook.secret, t, &body),
        )
        .body(body)
        .send()
        .await;
    let (code, error) = match sent {
        Ok(resp) if resp.status().is_success() => {
            let code = i64::from(resp.status().as_u16());
            store
                .finish_webhook_delivery(&d.id, &AttemptOutcome::Delivered { code })
                .await?;
            state.metrics.webhook_delivery("delivered");
            return Ok(true);
        }
        Ok(resp) => {
            let s = resp.status();
            let mut why = format!("the receiver answered {s}");
            if s.is_redirection() {
                why.push_str(" (redirects are not followed)");
            }
            (Some(i64::from(s.as_u16())), why)
        }
        Err(e) if e.is_timeout() => (
            None,
            format!("no answer within {} seconds", TIMEOUT.as_secs()),
        ),
        Err(e) => (None, describe(&e)),
    };
    let (outcome, label) = if attempts >= MAX_ATTEMPTS {
        let error = format!("{error}; gave up after {attempts} attempts");
        (AttemptOutcome::Failed { code, error }, "failed")
    } else {
        let next_at = warren_store::format_time(store.now_time() + backoff(attempts));
        let retry = AttemptOutcome::Retry {
            code,
            error,
            next_at,
        };
        (retry, "retried")
    };
    store.finish_webhook_delivery(&d.id, &outcome).await?;
    if label == "failed" {
        disable(
            state,
            hook,
            &format!("a delivery failed {attempts} times in a row"),
        )
        .await;
    }
    // Counted once recorded (tests wait for the count).
    state.metrics.webhook_delivery(label);
    Ok(false)
}

/// Disables `hook` on the server's account: records a `webhook.disabled` event (admins see it in
/// `warren events --all`; other webhooks may subscribe to it, this one never gets it) and logs.
pub async fn disable(state: &AppState, hook: &WebhookRecord, why: &str) {
    let message = format!(
        "webhook `{}` ({}) was disabled: {why}; `warren webhook enable {}` resumes it",
        hook.name,
        crate::routes::webhooks::masked_url(&hook.url),
        hook.id
    );
    let event = warren_store::NewEvent {
        kind: warren_store::WEBHOOK_DISABLED_KIND.to_owned(),
        reason: Some("failing".to_owned()),
        message: message.clone(),
        data: serde_json::json!({ "webhook_id": hook.id, "name": hook.name, "why": why }),
        ..Default::default()
    };
    match state.store.auto_disable_webhook(&hook.id, &event).await {
        Ok(true) => tracing_log(&format!("webhooks: {message}")),
        Ok(false) => {}
        Err(e) => tracing_log(&format!("webhooks: cannot disable `{}`: {e}", hook.id)),
    }
}

/// Disables the webhooks whose oldest pending delivery is older than [`MAX_BACKLOG_AGE`].
async fn disable_stale(state: &AppState) {
    let before = warren_store::format_time(state.store.now_time() - MAX_BACKLOG_AGE);
    let ids = match state.store.stale_webhooks(&before).await {
        Ok(ids) => ids,
        Err(e) => {
            tracing_log(&format!("webhooks: {e}"));
            return;
        }
    };
    for id in ids {
        if let Ok(Some(hook)) = state.store.webhook_brief(&id).await {
            let hours = MAX_BACKLOG_AGE.as_secs() / 3600;
            disable(
                state,
                &hook,
                &format!("its oldest pending delivery is more than {hours} hours old"),
            )
            .await;
        }
    }
}

/// A send error in one line, without the URL (the webhook's own).
fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut out = if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut src = e.source();
    let mut last = None;
    while let Some(s) = src {
        last = Some(s.to_string());
        src = s.source();
    }
    if let Some(l) = last {
        out.push_str(": ");
        out.push_str(&l);
    }
    out
}

/// Removes old delivered and failed rows.
async fn prune(state: &AppState) {
    let now = state.store.now_time();
    let delivered = warren_store::format_time(now - KEEP_DELIVERED);
    let failed = warren_store::format_time(now - KEEP_FAILED);
    let pending = warren_store::format_time(now - KEEP_PENDING_DISABLED);
    if let Err(e) = state
        .store
        .prune_webhook_deliveries(&delivered, &failed, &pending)
        .await
    {
        tracing_log(&format!("webhooks: pruning: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_ten_seconds_to_an_hour_with_jitter() {
        for (attempts, base) in [(1, 10), (2, 20), (3, 40), (4, 80), (9, 2560), (10, 3600)] {
            for _ in 0..50 {
                let d = backoff(attempts).as_secs_f64();
                assert!(
                    d <= base as f64 && d >= base as f64 * 0.8,
                    "{attempts}: {d}"
                );
            }
        }
        assert!(backoff(1000) <= MAX_BACKOFF);
    }
}
