-- Usage records billing cannot apply (unreadable, invalid, or refused by PostgreSQL when applied alone): kept with
-- the reason, counted and shown in the console, never dropped and never allowed to stop the consumer. The payload is
-- kept as the text received, in UTF-8 (bytea takes anything, a NUL byte included; bytes that were not UTF-8 were
-- already replaced by the Kafka deserializer).
CREATE TABLE usage_dead_letters (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid,
    account_id   text,
    reason       text        NOT NULL,
    payload      bytea       NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_dead_letters_received ON usage_dead_letters (received_at);
