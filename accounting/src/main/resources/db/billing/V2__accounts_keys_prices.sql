-- Accounts hold money in two pots: granted (promotional, spent first) and topped up. `reserved` is what the gateway
-- has set aside for requests in flight plus settled charges billing has not applied yet; the gateway only reserves
-- what is available (granted + topped up - reserved), so the CHECK below can never fail in normal operation.
CREATE TABLE accounts (
    id                 text          PRIMARY KEY,
    name               text          NOT NULL,
    currency           text          NOT NULL DEFAULT 'USD',
    granted_balance    numeric(30,8) NOT NULL DEFAULT 0 CHECK (granted_balance >= 0),
    topped_up_balance  numeric(30,8) NOT NULL DEFAULT 0 CHECK (topped_up_balance >= 0),
    reserved           numeric(30,8) NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    created_at         timestamptz   NOT NULL DEFAULT now()
);

-- API keys: only a SHA-256 of the secret is stored (the secret has 256 random bits, so a fast hash is enough); the
-- prefix is kept for display. models = NULL allows every model.
CREATE TABLE api_keys (
    id            text          PRIMARY KEY,
    account_id    text          NOT NULL REFERENCES accounts (id),
    name          text          NOT NULL,
    prefix        text          NOT NULL,
    secret_sha256 bytea         NOT NULL UNIQUE,
    models        text[],
    rpm           integer       CHECK (rpm > 0),
    tpm           integer       CHECK (tpm > 0),
    spend_cap     numeric(30,8) CHECK (spend_cap >= 0),
    created_at    timestamptz   NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX api_keys_account ON api_keys (account_id);

-- Top-ups and grants are ledger entries too: balances are always the sum of entries minus applied usage.
CREATE TABLE balance_entries (
    entry_id    uuid          PRIMARY KEY,
    account_id  text          NOT NULL REFERENCES accounts (id),
    kind        text          NOT NULL CHECK (kind IN ('top_up', 'grant')),
    amount      numeric(30,8) NOT NULL CHECK (amount > 0),
    note        text,
    created_at  timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX balance_entries_account ON balance_entries (account_id, created_at);

-- The pricing catalog: per model, per 1M tokens, from effective_from on; rows with a window apply only inside that
-- daily UTC window (which may wrap midnight) and win over the base row then.
CREATE TABLE prices (
    model                  text          NOT NULL,
    currency               text          NOT NULL,
    cache_hit_per_million  numeric(20,8) NOT NULL CHECK (cache_hit_per_million >= 0),
    cache_miss_per_million numeric(20,8) NOT NULL CHECK (cache_miss_per_million >= cache_hit_per_million),
    output_per_million     numeric(20,8) NOT NULL CHECK (output_per_million >= 0),
    effective_from         timestamptz   NOT NULL,
    window_start           time,
    window_end             time,
    CHECK ((window_start IS NULL) = (window_end IS NULL))
);
CREATE UNIQUE INDEX prices_unique ON prices (model, effective_from, coalesce(window_start, '00:00'::time), (window_start IS NULL));

-- DeepSeek's published prices (USD per 1M tokens) for the model names this platform serves.
INSERT INTO prices VALUES
    ('deepseek-chat',     'USD', 0.07, 0.27, 1.10, '2025-01-01T00:00:00Z', NULL, NULL),
    ('deepseek-reasoner', 'USD', 0.14, 0.55, 2.19, '2025-01-01T00:00:00Z', NULL, NULL);

-- How each applied usage event was paid: granted first, then topped up; anything billing could not collect (which
-- the gateway's reservation prevents) is recorded, never silently dropped.
ALTER TABLE usage_ledger
    ADD COLUMN granted_spent    numeric(30,8),
    ADD COLUMN topped_up_spent  numeric(30,8),
    ADD COLUMN uncollected      numeric(30,8);

-- Hourly aggregates, updated in the same transaction as the ledger insert; days and months are sums of hours.
CREATE TABLE usage_hourly (
    account_id                text          NOT NULL,
    api_key_id                text          NOT NULL,
    model                     text          NOT NULL,
    hour                      timestamptz   NOT NULL,
    requests                  bigint        NOT NULL,
    prompt_cache_hit_tokens   bigint        NOT NULL,
    prompt_cache_miss_tokens  bigint        NOT NULL,
    completion_tokens         bigint        NOT NULL,
    cost                      numeric(30,8) NOT NULL,
    PRIMARY KEY (account_id, api_key_id, model, hour)
);
