-- Requests served by an upstream provider: which one, and whether the token counts are the gateway's own estimate
-- (the upstream reported no usage, or the client left before it did) rather than the upstream's numbers.
ALTER TABLE usage_ledger
    ADD COLUMN upstream  text    GENERATED ALWAYS AS (payload->>'upstream') STORED,
    ADD COLUMN estimated boolean GENERATED ALWAYS AS (coalesce((payload->>'estimated')::boolean, false)) STORED;
