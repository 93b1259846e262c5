-- One row per usage event, forever: event_id is the permanent id the gateway gave the request, and the primary
-- key makes the consumer idempotent (INSERT ... ON CONFLICT DO NOTHING). Dedup has no time window.
CREATE TABLE usage_ledger (
    event_id                  uuid          PRIMARY KEY,
    request_id                text          NOT NULL,
    account_id                text          NOT NULL,
    api_key_id                text,
    model                     text          NOT NULL,
    prompt_cache_hit_tokens   integer       NOT NULL CHECK (prompt_cache_hit_tokens >= 0),
    prompt_cache_miss_tokens  integer       NOT NULL CHECK (prompt_cache_miss_tokens >= 0),
    completion_tokens         integer       NOT NULL CHECK (completion_tokens >= 0),
    cost                      numeric(30, 12) NOT NULL,
    currency                  text          NOT NULL,
    finish_reason             text,
    completed_at              timestamptz   NOT NULL,
    recorded_at               timestamptz   NOT NULL DEFAULT now(),
    payload                   jsonb         NOT NULL
);

CREATE INDEX usage_ledger_account_time ON usage_ledger (account_id, completed_at);
