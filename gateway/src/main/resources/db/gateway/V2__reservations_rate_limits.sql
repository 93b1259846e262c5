-- Money set aside for requests in flight (the same amount is added to billing.accounts.reserved). The row goes away
-- in the settlement transaction; a row left behind by a crashed gateway is released by the sweeper after its TTL.
CREATE TABLE reservations (
    request_id  text          PRIMARY KEY,
    account_id  text          NOT NULL,
    amount      numeric(30,8) NOT NULL CHECK (amount >= 0),
    created_at  timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX reservations_age ON reservations (created_at);

-- Per-key request and token counts per UTC minute, shared by every gateway replica (fixed one-minute windows).
CREATE TABLE rate_usage (
    api_key_id  text        NOT NULL,
    minute      timestamptz NOT NULL,
    requests    integer     NOT NULL DEFAULT 0,
    tokens      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (api_key_id, minute)
);
