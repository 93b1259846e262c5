-- A top-up or grant sent with an Idempotency-Key is applied once per account and key: a retried POST (a timeout, a
-- double click) finds the first one's entry instead of crediting again.
ALTER TABLE balance_entries ADD COLUMN idempotency_key text;
CREATE UNIQUE INDEX balance_entries_idempotency ON balance_entries (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
