package dev.deepserve.gateway.metering;

import dev.deepserve.accounting.Money;
import io.smallrye.mutiny.Uni;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.enterprise.context.ApplicationScoped;

import java.math.BigDecimal;
import java.util.Optional;
import java.util.UUID;
import java.util.function.Function;

/**
 * The gateway's side of pre-paid billing, all in PostgreSQL so every replica sees the same money:
 * <ul>
 * <li>{@link #reserve}: under a row lock on the account, set aside the most the request can cost (capping its output
 *     tokens to what the balance pays for) — so concurrent requests can never overshoot the balance;</li>
 * <li>{@link #settle}: in one transaction, release what was not spent (the exact cost stays reserved until billing
 *     applies the usage event, which moves it from {@code reserved} to spent) and write the usage event to the outbox.</li>
 * </ul>
 */
@ApplicationScoped
public class Ledger {

    private final Pool pool;

    Ledger(Pool pool) {
        this.pool = pool;
    }

    /**
     * A reservation that went through: the amount held and the output tokens it pays for; {@code lease} is set when
     * it was made against this replica's balance lease ({@link Leases}) rather than as a row of its own.
     */
    public record Reservation(String requestId, String accountId, String keyId, BigDecimal amount, int maxTokens, UUID lease) {
    }

    /**
     * Reserves {@code amountFor(maxTokens)} for the request, or for as many output tokens as the available balance
     * covers; empty when it covers none ({@code affordable} maps the available balance to that token count).
     */
    public Uni<Optional<Reservation>> reserve(String requestId, String accountId, String keyId, boolean capped,
                                              Function<BigDecimal, Integer> affordable, Function<Integer, BigDecimal> amountFor) {
        return pool.withTransaction(tx -> tx.preparedQuery(
                        "SELECT granted_balance + topped_up_balance - reserved AS available FROM billing.accounts WHERE id = $1 FOR UPDATE")
                .execute(Tuple.of(accountId))
                .chain(account -> (capped
                        ? tx.preparedQuery("SELECT spend_cap - spent - reserved AS left FROM billing.api_keys WHERE id = $1 FOR UPDATE").execute(Tuple.of(keyId))
                        : Uni.createFrom().<io.vertx.mutiny.sqlclient.RowSet<Row>>nullItem())
                        .onItem().transformToUni(key -> {
                            if (!account.iterator().hasNext()) {
                                return Uni.createFrom().item(Optional.<Reservation>empty());
                            }
                            BigDecimal available = account.iterator().next().getBigDecimal("available");
                            if (key != null && key.iterator().hasNext()) {
                                // the key's spend cap limits like a second, smaller balance
                                available = available.min(key.iterator().next().getBigDecimal("left"));
                            }
                            int tokens = affordable.apply(available);
                            if (tokens <= 0) {
                                return Uni.createFrom().item(Optional.<Reservation>empty());
                            }
                            BigDecimal amount = amountFor.apply(tokens);
                            return tx.preparedQuery("UPDATE billing.accounts SET reserved = reserved + $2 WHERE id = $1").execute(Tuple.of(accountId, amount))
                                    .chain(() -> capped
                                            ? tx.preparedQuery("UPDATE billing.api_keys SET reserved = reserved + $2 WHERE id = $1").execute(Tuple.of(keyId, amount))
                                            : Uni.createFrom().nullItem())
                                    .chain(() -> tx.preparedQuery("INSERT INTO gateway.reservations (request_id, account_id, amount, api_key_id) VALUES ($1, $2, $3, $4)")
                                            .execute(Tuple.of(requestId, accountId, amount, capped ? keyId : null)))
                                    .map(ignored -> Optional.of(new Reservation(requestId, accountId, capped ? keyId : null, amount, tokens, null)));
                        })));
    }

    /**
     * Settles a request: keeps exactly {@code cost} reserved for billing to apply, releases the rest, drops the
     * reservation and writes the usage event to the outbox — one transaction, so a crash leaves either all or none.
     */
    public Uni<Void> settle(Reservation r, BigDecimal cost, UUID eventId, String event) {
        BigDecimal release = r.amount().subtract(cost).max(BigDecimal.ZERO);
        return pool.withTransaction(tx -> tx.preparedQuery("DELETE FROM gateway.reservations WHERE request_id = $1").execute(Tuple.of(r.requestId()))
                .chain(deleted -> deleted.rowCount() == 0 ? settleWithoutReservation(tx, r, cost, eventId, event)
                        : tx.preparedQuery("UPDATE billing.accounts SET reserved = GREATEST(reserved - $2, 0) WHERE id = $1")
                                .execute(Tuple.of(r.accountId(), release))
                                .chain(() -> r.keyId() == null ? Uni.createFrom().nullItem()
                                        : tx.preparedQuery("UPDATE billing.api_keys SET reserved = GREATEST(reserved - $2, 0), spent = spent + $3 WHERE id = $1")
                                                .execute(Tuple.of(r.keyId(), r.amount(), cost)))
                                .chain(() -> tx.preparedQuery("INSERT INTO gateway.usage_outbox (event_id, payload) VALUES ($1, $2::text::json)")
                                        .execute(Tuple.of(eventId, event)))
                                .replaceWithVoid()));
    }

    /**
     * The reservation is gone: either an earlier try of this settlement committed (its event is in the outbox, and
     * nothing more is done), or the sweeper released it while the database was away. Then the event is still written
     * — never free — and its cost parked in {@code reserved} as a settlement does, for billing to charge.
     */
    private static Uni<Void> settleWithoutReservation(io.vertx.mutiny.sqlclient.SqlConnection tx, Reservation r, BigDecimal cost, UUID eventId, String event) {
        return tx.preparedQuery("INSERT INTO gateway.usage_outbox (event_id, payload) VALUES ($1, $2::text::json) ON CONFLICT (event_id) DO NOTHING")
                .execute(Tuple.of(eventId, event))
                .chain(inserted -> inserted.rowCount() == 0 ? Uni.createFrom().voidItem()
                        : tx.preparedQuery("UPDATE billing.accounts SET reserved = reserved + $2 WHERE id = $1").execute(Tuple.of(r.accountId(), cost))
                                .chain(() -> r.keyId() == null ? Uni.createFrom().nullItem()
                                        : tx.preparedQuery("UPDATE billing.api_keys SET spent = spent + $2 WHERE id = $1").execute(Tuple.of(r.keyId(), cost)))
                                .replaceWithVoid());
    }

    /** Balances for {@code /user/balance}: total, granted, topped up, and what is spendable now. */
    public Uni<Optional<Row>> balance(String accountId) {
        return pool.preparedQuery("SELECT currency, granted_balance, topped_up_balance, reserved FROM billing.accounts WHERE id = $1")
                .execute(Tuple.of(accountId)).map(rows -> rows.iterator().hasNext() ? Optional.of(rows.iterator().next()) : Optional.empty());
    }

    /** Releases reservations whose requests cannot still be running (their gateway died); returns how many. */
    public Uni<Integer> sweep(java.time.Duration ttl) {
        return pool.withTransaction(tx -> tx.preparedQuery("""
                        WITH stale AS (DELETE FROM gateway.reservations WHERE created_at < now() - $1 * interval '1 second' RETURNING account_id, api_key_id, amount),
                             keys AS (UPDATE billing.api_keys k SET reserved = GREATEST(k.reserved - s.amount, 0)
                                      FROM (SELECT api_key_id, sum(amount) AS amount FROM stale WHERE api_key_id IS NOT NULL GROUP BY api_key_id) s
                                      WHERE k.id = s.api_key_id),
                             sums AS (SELECT account_id, sum(amount) AS amount FROM stale GROUP BY account_id)
                        UPDATE billing.accounts a SET reserved = GREATEST(a.reserved - s.amount, 0) FROM sums s WHERE a.id = s.account_id""")
                .execute(Tuple.of(ttl.toSeconds())).map(rows -> rows.rowCount()));
    }

    static String plain(BigDecimal b) {
        return Money.plain(b);
    }
}
