-- Balance leases: a gateway replica sets aside part of an account's balance (added to billing.accounts.reserved,
-- exactly like a reservation) and reserves requests against it in memory, so a request costs no round trip to
-- PostgreSQL for its reservation. Never more than the balance is leased (grow_lease runs under the account's row
-- lock), so concurrent requests on any number of replicas still cannot overshoot it.
--   amount:   set aside for this lease, in total
--   consumed: costs of usage events written to the outbox under this lease (same statement as the events)
-- amount - consumed is what the lease still holds; billing moves each event's cost out of reserved when it applies
-- it. A replica that dies stops heartbeating, and sweep_leases returns what its leases still held.
CREATE TABLE leases (
    id            uuid          PRIMARY KEY,
    account_id    text          NOT NULL,
    holder        text          NOT NULL,
    amount        numeric(30,8) NOT NULL CHECK (amount >= 0),
    consumed      numeric(30,8) NOT NULL DEFAULT 0,
    heartbeat_at  timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX leases_heartbeat ON leases (heartbeat_at);

-- Adds up to p_want to the lease (creating it), as much as the account's available balance allows; returns what
-- was added (0 when nothing is available, NULL when the account does not exist).
CREATE FUNCTION grow_lease(p_account text, p_want numeric, p_lease uuid, p_holder text) RETURNS numeric AS $$
DECLARE
    avail numeric;
    g     numeric;
BEGIN
    SELECT granted_balance + topped_up_balance - reserved INTO avail FROM billing.accounts WHERE id = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
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

-- Gives back p_amount of a lease's unused part (the account row is locked first, as in grow_lease).
CREATE FUNCTION shrink_lease(p_lease uuid, p_amount numeric) RETURNS void AS $$
DECLARE
    acc text;
BEGIN
    SELECT account_id INTO acc FROM gateway.leases WHERE id = p_lease;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    PERFORM 1 FROM billing.accounts WHERE id = acc FOR UPDATE;
    UPDATE gateway.leases SET amount = amount - p_amount WHERE id = p_lease;
    UPDATE billing.accounts SET reserved = GREATEST(reserved - p_amount, 0) WHERE id = acc;
END
$$ LANGUAGE plpgsql;

-- Returns what the leases of dead replicas (no heartbeat for p_ttl) still held, and drops them; how many.
CREATE FUNCTION sweep_leases(p_ttl interval) RETURNS integer AS $$
DECLARE
    l record;
    n integer := 0;
BEGIN
    FOR l IN SELECT id, account_id, amount - consumed AS unused FROM gateway.leases WHERE heartbeat_at < now() - p_ttl ORDER BY account_id LOOP
        PERFORM 1 FROM billing.accounts WHERE id = l.account_id FOR UPDATE;
        UPDATE billing.accounts SET reserved = GREATEST(reserved - GREATEST(l.unused, 0), 0) WHERE id = l.account_id;
        DELETE FROM gateway.leases WHERE id = l.id;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$ LANGUAGE plpgsql;
