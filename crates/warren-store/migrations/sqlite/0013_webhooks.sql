-- Outgoing webhooks (issue 6): where events are POSTed, signed, and each event's delivery.

-- A webhook. `secret` signs deliveries (HMAC-SHA256), so it is kept as given: the one secret the
-- store holds in the clear (only admins' API shows it, at creation). `events_json` is a JSON array
-- of kind patterns. `cursor` is the id of the last event considered for this webhook: events after
-- it are turned into deliveries, in the same transaction that moves it.
CREATE TABLE webhooks (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    url         TEXT    NOT NULL,
    secret      TEXT    NOT NULL,
    events_json TEXT    NOT NULL,
    created_by  TEXT,
    created_at  TEXT    NOT NULL,
    disabled    INTEGER NOT NULL DEFAULT 0,
    cursor      INTEGER NOT NULL DEFAULT 0
);

-- One event's delivery to one webhook (at most one per pair). Pending rows are sent oldest event
-- first per webhook, when `next_attempt_at` has come; an attempt in flight holds the row by moving
-- `next_attempt_at` past its timeout, so a crash mid-send means a retry, never a loss.
CREATE TABLE webhook_deliveries (
    id               TEXT    NOT NULL PRIMARY KEY,
    webhook_id       TEXT    NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    status           TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'failed')),
    next_attempt_at  TEXT    NOT NULL,
    last_status_code INTEGER,
    last_error       TEXT,
    created_at       TEXT    NOT NULL,
    delivered_at     TEXT,
    UNIQUE (webhook_id, event_id)
);

CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, status, event_id);
CREATE INDEX webhook_deliveries_done ON webhook_deliveries (status, delivered_at);
