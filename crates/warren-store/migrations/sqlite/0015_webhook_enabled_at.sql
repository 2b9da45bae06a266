-- When a webhook was last enabled by an admin (NULL: never disabled since its creation). A webhook
-- is disabled for a stale backlog only when both its oldest pending delivery and this time are
-- older than the limit, so an admin who enables it again gives it a fresh day to catch up.
ALTER TABLE webhooks ADD COLUMN enabled_at TEXT;
