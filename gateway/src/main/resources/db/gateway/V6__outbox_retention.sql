-- Published outbox rows are kept for a while (to look a request up) and then deleted, so the table does not grow
-- without end; a BRIN index on the append-ordered created_at finds the old ones at almost no cost per insert.
CREATE INDEX usage_outbox_created_brin ON usage_outbox USING brin (created_at);
