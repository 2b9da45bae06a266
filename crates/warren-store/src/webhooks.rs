//! Outgoing webhooks and their deliveries (migration 13).
//!
//! Events become deliveries per webhook in one transaction that also moves the webhook's cursor
//! past them ([`Store::enqueue_webhook_events`]), so each event is considered once and never
//! lost. A delivery is sent at least once: an attempt first claims the row
//! ([`Store::claim_webhook_delivery`]: one more attempt, next attempt pushed past the send's
//! timeout), so a crash mid-send leaves a row that is retried later, never one that is forgotten.
//! Deliveries of one webhook go out in event order: only the oldest pending one is ever due.

use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::governance::insert_event;
use crate::{EventEntry, NewEvent, Store, StoreError};

/// A webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRecord {
    /// Id.
    pub id: String,
    /// Label.
    pub name: String,
    /// Where events go.
    pub url: String,
    /// The signing secret.
    pub secret: String,
    /// Event kind patterns, as given.
    pub events: Vec<String>,
    /// The user who made it.
    pub created_by: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// Disabled: nothing is queued or sent.
    pub disabled: bool,
    /// The last event id considered for it.
    pub cursor: i64,
    /// Deliveries pending.
    pub pending: i64,
}

/// A new webhook.
#[derive(Debug, Clone, Copy)]
pub struct NewWebhook<'a> {
    /// Label.
    pub name: &'a str,
    /// URL.
    pub url: &'a str,
    /// Signing secret.
    pub secret: &'a str,
    /// Patterns.
    pub events: &'a [String],
    /// Creator's user id.
    pub created_by: Option<&'a str>,
}

/// One event's delivery to one webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    /// Id (`Warren-Delivery`).
    pub id: String,
    /// The webhook.
    pub webhook_id: String,
    /// The event.
    pub event_id: i64,
    /// The event's kind.
    pub kind: String,
    /// Attempts made (claimed) so far.
    pub attempts: i64,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    /// When the next attempt is due.
    pub next_attempt_at: String,
    /// HTTP status of the last answer.
    pub last_status_code: Option<i64>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Queued at.
    pub created_at: String,
    /// Accepted at.
    pub delivered_at: Option<String>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// A 2xx answer.
    Delivered {
        /// Its status.
        code: i64,
    },
    /// Failed; try again at `next_at`.
    Retry {
        /// The answer's status, if there was one.
        code: Option<i64>,
        /// Why.
        error: String,
        /// When.
        next_at: String,
    },
    /// Failed for the last time.
    Failed {
        /// The answer's status, if there was one.
        code: Option<i64>,
        /// Why.
        error: String,
    },
}

const HOOK_COLUMNS: &str = "w.id, w.name, w.url, w.secret, w.events_json, w.created_by, \
    w.created_at, w.disabled, w.cursor, (SELECT COUNT(*) FROM webhook_deliveries p \
    WHERE p.webhook_id = w.id AND p.status = 'pending') AS pending";

/// [`HOOK_COLUMNS`] without the pending count, for the delivery worker, which reads webhooks
/// every second and per delivery: no `COUNT(*)` over a long backlog each time.
const HOOK_COLUMNS_BRIEF: &str = "w.id, w.name, w.url, w.secret, w.events_json, w.created_by, \
    w.created_at, w.disabled, w.cursor, 0 AS pending";

/// The kind of the event recorded when the server disables a webhook itself.
pub const WEBHOOK_DISABLED_KIND: &str = "webhook.disabled";

const DELIVERY_COLUMNS: &str = "d.id, d.webhook_id, d.event_id, COALESCE(e.kind, '') AS kind, \
    d.attempts, d.status, d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, \
    d.delivered_at";

fn hook_from_row(r: &SqliteRow) -> Result<WebhookRecord, StoreError> {
    let id: String = r.try_get("id")?;
    let events: String = r.try_get("events_json")?;
    let events = serde_json::from_str(&events).map_err(|e| crate::corrupt(&id, e))?;
    Ok(WebhookRecord {
        name: r.try_get("name")?,
        url: r.try_get("url")?,
        secret: r.try_get("secret")?,
        events,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        cursor: r.try_get("cursor")?,
        pending: r.try_get("pending")?,
        id,
    })
}

fn delivery_from_row(r: &SqliteRow) -> Result<DeliveryRecord, StoreError> {
    Ok(DeliveryRecord {
        id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        event_id: r.try_get("event_id")?,
        kind: r.try_get("kind")?,
        attempts: r.try_get("attempts")?,
        status: r.try_get("status")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_status_code: r.try_get("last_status_code")?,
        last_error: r.try_get("last_error")?,
        created_at: r.try_get("created_at")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Store {
    /// Records a webhook. It starts at the latest event: earlier events are not sent to it.
    pub async fn create_webhook(&self, new: NewWebhook<'_>) -> Result<WebhookRecord, StoreError> {
        let id = new_id();
        let events = serde_json::to_string(new.events).unwrap_or_else(|_| "[]".into());
        sqlx::query(
            "INSERT INTO webhooks (id, name, url, secret, events_json, created_by, created_at, \
             cursor) SELECT ?, ?, ?, ?, ?, ?, ?, COALESCE(MAX(id), 0) FROM events",
        )
        .bind(&id)
        .bind(new.name)
        .bind(new.url)
        .bind(new.secret)
        .bind(&events)
        .bind(new.created_by)
        .bind(self.now())
        .execute(&self.pool)
        .await?;
        self.webhook(&id)
            .await?
            .ok_or_else(|| crate::corrupt(&id, "the new webhook is gone"))
    }

    /// Every webhook, oldest first.
    pub async fn webhooks(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        self.webhooks_with(HOOK_COLUMNS).await
    }

    /// One webhook.
    pub async fn webhook(&self, id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        self.webhook_with(HOOK_COLUMNS, id).await
    }

    /// Every webhook, oldest first, with `pending` left at 0 (cheap: for the delivery worker).
    pub async fn webhooks_brief(&self) -> Result<Vec<WebhookRecord>, StoreError> {
        self.webhooks_with(HOOK_COLUMNS_BRIEF).await
    }

    /// One webhook, with `pending` left at 0 (cheap: for the delivery worker).
    pub async fn webhook_brief(&self, id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        self.webhook_with(HOOK_COLUMNS_BRIEF, id).await
    }

    async fn webhooks_with(&self, columns: &str) -> Result<Vec<WebhookRecord>, StoreError> {
        let sql = format!("SELECT {columns} FROM webhooks w ORDER BY w.created_at, w.id");
        sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(hook_from_row)
            .collect()
    }

    async fn webhook_with(
        &self,
        columns: &str,
        id: &str,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        let sql = format!("SELECT {columns} FROM webhooks w WHERE w.id = ?");
        sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(hook_from_row)
            .transpose()
    }

    /// Disables or enables webhook `id` (an admin's choice); returns it, None if there is no
    /// such webhook. Enabled again, it resumes where it stopped: the pending deliveries and the
    /// events recorded meanwhile are sent, unless `skip_backlog`, which drops the pending
    /// deliveries and moves its cursor to the latest event. Enabling makes its pending
    /// deliveries due now.
    pub async fn set_webhook_disabled(
        &self,
        id: &str,
        disabled: bool,
        skip_backlog: bool,
    ) -> Result<Option<WebhookRecord>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE webhooks SET disabled = ?, \
             enabled_at = CASE WHEN ? THEN enabled_at ELSE ? END WHERE id = ?",
        )
        .bind(i64::from(disabled))
        .bind(disabled)
        .bind(self.now())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(None);
        }
        if !disabled && !skip_backlog {
            // Whoever enables it means now: its backlog is due at once, not after the backoff
            // of its last failure.
            let now = self.now();
            sqlx::query(
                "UPDATE webhook_deliveries SET next_attempt_at = ? \
                 WHERE webhook_id = ? AND status = 'pending' AND next_attempt_at > ?",
            )
            .bind(&now)
            .bind(id)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        }
        if skip_backlog {
            sqlx::query(
                "DELETE FROM webhook_deliveries WHERE webhook_id = ? AND status = 'pending'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE webhooks SET cursor = (SELECT COALESCE(MAX(id), 0) FROM events) \
                 WHERE id = ?",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.webhook(id).await
    }

    /// Disables webhook `id` on the server's own account, recording `event` (a
    /// [`WEBHOOK_DISABLED_KIND`] event) in the same transaction; whether it was enabled until
    /// now (false: already disabled or gone, and nothing is recorded).
    pub async fn auto_disable_webhook(
        &self,
        id: &str,
        event: &NewEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query("UPDATE webhooks SET disabled = 1 WHERE id = ? AND disabled = 0")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() != 1 {
            return Ok(false);
        }
        let at = self.now();
        let event_id = insert_event(&mut tx, event, &at).await?;
        tx.commit().await?;
        self.notify_event(event_id);
        Ok(true)
    }

    /// Enabled webhooks whose oldest pending delivery was queued before `before`, and which were
    /// not enabled by an admin since (one index lookup per webhook).
    pub async fn stale_webhooks(&self, before: &str) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT w.id FROM webhooks w WHERE w.disabled = 0 \
             AND COALESCE(w.enabled_at, w.created_at) < ?1 AND \
             (SELECT d.created_at FROM webhook_deliveries d WHERE d.webhook_id = w.id \
              AND d.status = 'pending' ORDER BY d.event_id LIMIT 1) < ?1",
        )
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// Removes a webhook and its deliveries; whether it existed.
    pub async fn delete_webhook(&self, id: &str) -> Result<bool, StoreError> {
        let r = sqlx::query("DELETE FROM webhooks WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records `event` and queues it for webhook `webhook_id` only, due now, in one
    /// transaction; returns the event and the delivery's id (None: no such webhook).
    pub async fn queue_webhook_test(
        &self,
        webhook_id: &str,
        event: &NewEvent,
    ) -> Result<Option<(EventEntry, String)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let now = self.now();
        let Some(event_id) = insert_event(&mut tx, event, &now).await? else {
            return Ok(None);
        };
        let delivery = new_id();
        let r = sqlx::query(
            "INSERT INTO webhook_deliveries (id, webhook_id, event_id, next_attempt_at, \
             created_at) SELECT ?, id, ?, ?, ? FROM webhooks WHERE id = ?",
        )
        .bind(&delivery)
        .bind(event_id)
        .bind(&now)
        .bind(&now)
        .bind(webhook_id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() != 1 {
            return Ok(None); // Rolled back: no test event for a webhook that is gone.
        }
        tx.commit().await?;
        self.notify_event(Some(event_id));
        let entry = event.recorded(event_id, now);
        Ok(Some((entry, delivery)))
    }

    /// The id of the latest event recorded (by any process), 0 when there is none.
    pub async fn latest_event_id(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM events")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// One event.
    pub async fn event(&self, id: i64) -> Result<Option<EventEntry>, StoreError> {
        let mut list = self
            .list_events(&crate::EventFilter {
                after_id: Some(id - 1),
                limit: 1,
                ..Default::default()
            })
            .await?;
        Ok(list.pop().filter(|e| e.id == id))
    }

    /// Turns up to `limit` events after webhook `id`'s cursor into deliveries (those whose kind
    /// `matches`), due now, and moves the cursor past them, in one transaction. Returns how
    /// many deliveries were queued, and whether events remain beyond `limit`.
    pub async fn enqueue_webhook_events(
        &self,
        id: &str,
        matches: &(dyn Fn(&str) -> bool + Sync),
        limit: u32,
    ) -> Result<(usize, bool), StoreError> {
        let mut tx = self.pool.begin().await?;
        // A write first, so the transaction holds the write lock before it reads (no stale
        // snapshot to upgrade, whoever else writes events meanwhile).
        let touched =
            sqlx::query("UPDATE webhooks SET cursor = cursor WHERE id = ? AND disabled = 0")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        if touched.rows_affected() != 1 {
            return Ok((0, false));
        }
        let cursor: i64 = sqlx::query_scalar("SELECT cursor FROM webhooks WHERE id = ?")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        // A webhook is never sent the event of its own disabling.
        let rows = sqlx::query(
            "SELECT id, kind, (kind = ? AND json_extract(data_json, '$.webhook_id') = ?) AS own \
             FROM events WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(WEBHOOK_DISABLED_KIND)
        .bind(id)
        .bind(cursor)
        .bind(i64::from(limit.max(1)))
        .fetch_all(&mut *tx)
        .await?;
        let Some(last) = rows.last() else {
            return Ok((0, false));
        };
        let last: i64 = last.try_get("id")?;
        let now = self.now();
        let mut queued = 0;
        for r in &rows {
            let kind: String = r.try_get("kind")?;
            let own: Option<i64> = r.try_get("own")?;
            if own == Some(1) || !matches(&kind) {
                continue;
            }
            let event_id: i64 = r.try_get("id")?;
            let q = sqlx::query(
                "INSERT INTO webhook_deliveries (id, webhook_id, event_id, next_attempt_at, \
                 created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (webhook_id, event_id) DO NOTHING",
            )
            .bind(new_id())
            .bind(id)
            .bind(event_id)
            .bind(&now)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            queued += q.rows_affected() as usize;
        }
        sqlx::query("UPDATE webhooks SET cursor = ? WHERE id = ?")
            .bind(last)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((queued, rows.len() as u32 >= limit.max(1)))
    }

    /// The oldest pending delivery of webhook `id` (the only one that may be sent next).
    pub async fn next_webhook_delivery(
        &self,
        id: &str,
    ) -> Result<Option<DeliveryRecord>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
             LEFT JOIN events e ON e.id = d.event_id \
             WHERE d.webhook_id = ? AND d.status = 'pending' ORDER BY d.event_id LIMIT 1"
        );
        sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(delivery_from_row)
            .transpose()
    }

    /// Enabled webhooks whose oldest pending delivery is due at `now`.
    pub async fn webhooks_due(&self, now: &str) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT w.id FROM webhooks w WHERE w.disabled = 0 AND \
             (SELECT d.next_attempt_at FROM webhook_deliveries d WHERE d.webhook_id = w.id \
              AND d.status = 'pending' ORDER BY d.event_id LIMIT 1) <= ?",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    /// Claims pending delivery `d` for an attempt: counts the attempt and moves its next
    /// attempt to `lease_until` (past the send's timeout), unless someone changed it since it
    /// was read. Whether the claim is ours.
    pub async fn claim_webhook_delivery(
        &self,
        d: &DeliveryRecord,
        lease_until: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, next_attempt_at = ? \
             WHERE id = ? AND status = 'pending' AND attempts = ? AND next_attempt_at = ?",
        )
        .bind(lease_until)
        .bind(&d.id)
        .bind(d.attempts)
        .bind(&d.next_attempt_at)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Records how an attempt at delivery `id` ended.
    pub async fn finish_webhook_delivery(
        &self,
        id: &str,
        outcome: &AttemptOutcome,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let q = match outcome {
            AttemptOutcome::Delivered { code } => sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', last_status_code = ?, \
                 last_error = NULL, delivered_at = ? WHERE id = ? AND status = 'pending'",
            )
            .bind(code)
            .bind(now)
            .bind(id),
            AttemptOutcome::Retry {
                code,
                error,
                next_at,
            } => sqlx::query(
                "UPDATE webhook_deliveries SET last_status_code = ?, last_error = ?, \
                 next_attempt_at = ? WHERE id = ? AND status = 'pending'",
            )
            .bind(code)
            .bind(error)
            .bind(next_at)
            .bind(id),
            AttemptOutcome::Failed { code, error } => sqlx::query(
                "UPDATE webhook_deliveries SET status = 'failed', last_status_code = ?, \
                 last_error = ? WHERE id = ? AND status = 'pending'",
            )
            .bind(code)
            .bind(error)
            .bind(id),
        };
        q.execute(&self.pool).await?;
        Ok(())
    }

    /// Webhook `id`'s latest `limit` deliveries, newest event first.
    pub async fn webhook_deliveries(
        &self,
        id: &str,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
             LEFT JOIN events e ON e.id = d.event_id \
             WHERE d.webhook_id = ? ORDER BY d.event_id DESC LIMIT ?"
        );
        sqlx::query(&sql)
            .bind(id)
            .bind(i64::from(limit.max(1)))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(delivery_from_row)
            .collect()
    }

    /// Removes deliveries delivered before `delivered_before`, failed ones queued before
    /// `failed_before`, and pending ones of disabled webhooks queued before
    /// `disabled_pending_before`; how many.
    pub async fn prune_webhook_deliveries(
        &self,
        delivered_before: &str,
        failed_before: &str,
        disabled_pending_before: &str,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE (status = 'delivered' AND delivered_at < ?) \
             OR (status = 'failed' AND created_at < ?)",
        )
        .bind(delivered_before)
        .bind(failed_before)
        .execute(&self.pool)
        .await?;
        let p = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status = 'pending' AND created_at < ? \
             AND webhook_id IN (SELECT id FROM webhooks WHERE disabled = 1)",
        )
        .bind(disabled_pending_before)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() + p.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    fn ev(kind: &str) -> NewEvent {
        NewEvent {
            kind: kind.into(),
            message: kind.into(),
            data: serde_json::json!({}),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn events_become_deliveries_once_in_order_from_the_creation_on() {
        let store = Store::open_in_memory().await.unwrap();
        store.set_clock(FakeClock::starting_now());
        store.insert_event(&ev("workspace.created")).await.unwrap();
        let events = vec!["workspace.*".to_string()];
        let hook = store
            .create_webhook(NewWebhook {
                name: "h",
                url: "http://127.0.0.1:1/",
                secret: "s".repeat(16).as_str(),
                events: &events,
                created_by: None,
            })
            .await
            .unwrap();
        // No backfill: the earlier event is not queued.
        let only_ws = |k: &str| k.starts_with("workspace.");
        assert_eq!(
            store
                .enqueue_webhook_events(&hook.id, &only_ws, 10)
                .await
                .unwrap(),
            (0, false)
        );
        let a = store
            .insert_event(&ev("workspace.started"))
            .await
            .unwrap()
            .unwrap();
        store.insert_event(&ev("budget.warning")).await.unwrap();
        let b = store
            .insert_event(&ev("workspace.stopped"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store
                .enqueue_webhook_events(&hook.id, &only_ws, 2)
                .await
                .unwrap(),
            (1, true)
        );
        assert_eq!(
            store
                .enqueue_webhook_events(&hook.id, &only_ws, 2)
                .await
                .unwrap(),
            (1, false)
        );
        // Idempotent: nothing more.
        assert_eq!(
            store
                .enqueue_webhook_events(&hook.id, &only_ws, 2)
                .await
                .unwrap(),
            (0, false)
        );
        assert_eq!(store.webhook(&hook.id).await.unwrap().unwrap().pending, 2);
        let head = store
            .next_webhook_delivery(&hook.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (head.event_id, head.kind.as_str()),
            (a.id, "workspace.started")
        );
        assert_eq!(
            store.webhooks_due(&store.now()).await.unwrap(),
            std::slice::from_ref(&hook.id)
        );
        // A claim is one attempt and holds the row; a second claim of the same read loses.
        assert!(store
            .claim_webhook_delivery(&head, "2999-01-01T00:00:00.000Z")
            .await
            .unwrap());
        assert!(!store
            .claim_webhook_delivery(&head, "2999-01-01T00:00:00.000Z")
            .await
            .unwrap());
        // The head is held: the hook is not due, and the later delivery waits behind it.
        assert!(store.webhooks_due(&store.now()).await.unwrap().is_empty());
        store
            .finish_webhook_delivery(&head.id, &AttemptOutcome::Delivered { code: 204 })
            .await
            .unwrap();
        let next = store
            .next_webhook_delivery(&hook.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.event_id, b.id);
        let all = store.webhook_deliveries(&hook.id, 10).await.unwrap();
        assert_eq!(
            all.iter()
                .map(|d| (d.event_id, d.status.as_str(), d.attempts))
                .collect::<Vec<_>>(),
            [(b.id, "pending", 0), (a.id, "delivered", 1)]
        );
        // Pruning takes delivered rows older than the cut only.
        let future = "2999-01-01T00:00:00.000Z";
        assert_eq!(
            store
                .prune_webhook_deliveries(
                    future,
                    "2000-01-01T00:00:00.000Z",
                    "2000-01-01T00:00:00.000Z"
                )
                .await
                .unwrap(),
            1
        );
        // Deleting the webhook takes its deliveries.
        assert!(store.delete_webhook(&hook.id).await.unwrap());
        assert!(store
            .next_webhook_delivery(&hook.id)
            .await
            .unwrap()
            .is_none());
        assert!(!store.delete_webhook(&hook.id).await.unwrap());
        assert_eq!(
            store
                .queue_webhook_test(&hook.id, &ev("webhook.test"))
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn disabling_keeps_or_drops_the_backlog_and_a_hook_never_hears_of_its_own_disabling() {
        let store = Store::open_in_memory().await.unwrap();
        let clock = FakeClock::starting_now();
        store.set_clock(clock.clone());
        let all = vec!["*".to_string()];
        let mk = |name: &'static str| NewWebhook {
            name,
            url: "http://127.0.0.1:1/",
            secret: "ssssssssssssssss",
            events: &all,
            created_by: None,
        };
        let hook = store.create_webhook(mk("h")).await.unwrap();
        let other = store.create_webhook(mk("o")).await.unwrap();
        let any = |_: &str| true;
        store.insert_event(&ev("workspace.started")).await.unwrap();
        store
            .enqueue_webhook_events(&hook.id, &any, 10)
            .await
            .unwrap();
        assert_eq!(
            store
                .stale_webhooks("2000-01-01T00:00:00.000Z")
                .await
                .unwrap(),
            Vec::<String>::new()
        );
        clock.advance(std::time::Duration::from_secs(60));
        assert_eq!(
            store.stale_webhooks(&store.now()).await.unwrap(),
            std::slice::from_ref(&hook.id)
        );
        // Disabled by the server: its own event goes to others only.
        let e = NewEvent {
            data: serde_json::json!({"webhook_id": hook.id}),
            ..ev(WEBHOOK_DISABLED_KIND)
        };
        assert!(store.auto_disable_webhook(&hook.id, &e).await.unwrap());
        assert!(!store.auto_disable_webhook(&hook.id, &e).await.unwrap());
        assert!(store.webhook(&hook.id).await.unwrap().unwrap().disabled);
        assert!(store.stale_webhooks(&store.now()).await.unwrap().is_empty());
        assert_eq!(
            store
                .enqueue_webhook_events(&other.id, &any, 10)
                .await
                .unwrap(),
            (2, false)
        );
        // Enabled again: the backlog resumes, without the event of its disabling.
        let h = store
            .set_webhook_disabled(&hook.id, false, false)
            .await
            .unwrap()
            .unwrap();
        assert!(!h.disabled);
        assert_eq!(h.pending, 1);
        assert_eq!(
            store
                .enqueue_webhook_events(&hook.id, &any, 10)
                .await
                .unwrap(),
            (0, false)
        );
        // Skipping the backlog drops it and starts from the latest event.
        store.insert_event(&ev("workspace.stopped")).await.unwrap();
        let h = store
            .set_webhook_disabled(&hook.id, false, true)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(h.pending, 0);
        assert_eq!(h.cursor, store.latest_event_id().await.unwrap());
        assert!(store
            .set_webhook_disabled("nope", true, false)
            .await
            .unwrap()
            .is_none());
        // Pending rows of a disabled hook are pruned after the cut; an enabled hook's are not.
        store.insert_event(&ev("workspace.deleted")).await.unwrap();
        store
            .enqueue_webhook_events(&hook.id, &any, 10)
            .await
            .unwrap();
        store
            .set_webhook_disabled(&hook.id, true, false)
            .await
            .unwrap();
        let old = "2000-01-01T00:00:00.000Z";
        let future = "2999-01-01T00:00:00.000Z";
        assert_eq!(
            store
                .prune_webhook_deliveries(old, old, future)
                .await
                .unwrap(),
            1
        );
        assert_eq!(store.webhook(&hook.id).await.unwrap().unwrap().pending, 0);
        assert_eq!(store.webhook(&other.id).await.unwrap().unwrap().pending, 2);
    }
}
