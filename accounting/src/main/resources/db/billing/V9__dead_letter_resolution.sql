-- A dead letter is resolved by an administrator, once: replayed (applied to the ledger after all, e.g. once the cause
-- is fixed) or written off (never charged; the cost the gateway had set aside in the account's reserved is released,
-- and the amount is recorded here).
ALTER TABLE usage_dead_letters
    ADD COLUMN resolved_at  timestamptz,
    ADD COLUMN resolution   text CHECK (resolution IN ('replayed', 'written_off')),
    ADD COLUMN written_off  numeric(30,12),
    ADD COLUMN note         text;
