-- The outbox keeps each usage event as the exact text the gateway wrote (json, not jsonb): the relay hands Kafka the
-- same bytes the journal and the direct publish carry, and an insert no longer converts every event into jsonb's
-- binary form (parsing, key sorting) on the settlement path. Nothing indexes the payload; ->> works on json as before.
ALTER TABLE usage_outbox ALTER COLUMN payload TYPE json USING payload::json;
