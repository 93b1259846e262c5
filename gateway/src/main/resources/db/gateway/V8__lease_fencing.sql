-- Lease fencing: a lease the sweeper returned (its replica stopped heartbeating, e.g. paused past the TTL) must never
-- be spent or grown again under its old id. sweep_leases leaves a tombstone; grow_lease refuses a tombstoned id with
-- -1, and the replica then drops that lease and starts a new one. Costs of requests already admitted under a swept
-- lease are charged to the account when their events are written (usage_outbox insert: a lease that is gone puts the
-- cost onto billing.accounts.reserved, which billing collects), so nothing is free and nothing is written off.
CREATE TABLE swept_leases (
    id        uuid        PRIMARY KEY,
    swept_at  timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION grow_lease(p_account text, p_want numeric, p_lease uuid, p_holder text) RETURNS numeric AS $$
DECLARE
    avail numeric;
    g     numeric;
BEGIN
    SELECT granted_balance + topped_up_balance - reserved INTO avail FROM billing.accounts WHERE id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM gateway.swept_leases WHERE id = p_lease) THEN
        RETURN -1;
    END IF;
    g := LEAST(p_want, GREATEST(avail, 0));
    IF g > 0 THEN
        UPDATE billing.accounts SET reserved = reserved + g WHERE id = p_account;
        INSERT INTO gateway.leases (id, account_id, holder, amount) VALUES (p_lease, p_account, p_holder, g)
            ON CONFLICT (id) DO UPDATE SET amount = gateway.leases.amount + g, heartbeat_at = now();
    END IF;
    RETURN g;
END
$$ LANGUAGE plpgsql;

CREATE OR REPLACE FUNCTION sweep_leases(p_ttl interval) RETURNS integer AS $$
DECLARE
    l record;
    n integer := 0;
BEGIN
    FOR l IN SELECT id, account_id, amount - consumed AS unused FROM gateway.leases WHERE heartbeat_at < now() - p_ttl ORDER BY account_id LOOP
        PERFORM 1 FROM billing.accounts WHERE id = l.account_id FOR UPDATE;
        UPDATE billing.accounts SET reserved = GREATEST(reserved - GREATEST(l.unused, 0), 0) WHERE id = l.account_id;
        DELETE FROM gateway.leases WHERE id = l.id;
        INSERT INTO gateway.swept_leases (id) VALUES (l.id) ON CONFLICT (id) DO NOTHING;
        n := n + 1;
    END LOOP;
    -- a week is far longer than any replica stays paused and comes back
    DELETE FROM gateway.swept_leases WHERE swept_at < now() - interval '7 days';
    RETURN n;
END
$$ LANGUAGE plpgsql;
