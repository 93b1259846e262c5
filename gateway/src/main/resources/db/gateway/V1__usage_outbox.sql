-- Usage events leave the gateway through this outbox: a row is written in the same transaction as the
-- settlement of the request it describes, and a relay publishes it to Kafka and stamps published_at.
-- Billing deduplicates by event_id, so publishing a row twice (crash between send and stamp) is harmless.
CREATE TABLE usage_outbox (
    event_id      uuid        PRIMARY KEY,
    payload       jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    attempts      integer     NOT NULL DEFAULT 0,
    last_error    text
);

CREATE INDEX usage_outbox_unpublished ON usage_outbox (created_at) WHERE published_at IS NULL;
