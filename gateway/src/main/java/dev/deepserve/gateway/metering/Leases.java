package dev.deepserve.gateway.metering;

import dev.deepserve.gateway.config.GatewayConfig;
import io.micrometer.core.instrument.Counter;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import io.quarkus.runtime.ShutdownEvent;
import io.quarkus.scheduler.Scheduled;
import io.smallrye.mutiny.Uni;
import io.vertx.core.Context;
import io.vertx.core.Vertx;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import jakarta.inject.Inject;
import org.jboss.logging.Logger;

import java.math.BigDecimal;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Function;

/**
 * Reservations without a database round trip: this replica leases part of an account's balance (see
 * {@code V5__balance_leases.sql}) and reserves requests against the lease in memory, exactly as
 * {@link Ledger#reserve} would against the whole balance — the most a request can cost is set aside, and its output
 * capped to what is left — so nothing can overshoot. A lease grows (one statement, under the account's row lock)
 * when a request does not fit, and ahead of need when it runs low; what an idle lease holds goes back to the
 * account. Settlement goes through {@link UsageWriter}, which records each event's cost against its lease in the
 * same statement that writes the event.
 *
 * <p>Fencing ({@code V8__lease_fencing.sql}): a lease is spent in memory only while PostgreSQL confirmed it lately (a
 * heartbeat that returned it, or a grow, within half the sweep's TTL). A replica that was paused past the sweep finds
 * its lease unconfirmed, so its next request goes to PostgreSQL, where {@code grow_lease} refuses the swept id; the
 * lease is then dropped here (counted in {@code deepserve.lease.fenced}) and a new one taken. Requests admitted under a
 * lease before it was swept are charged to the account when their events are written.
 */
@ApplicationScoped
public class Leases {

    private static final Logger LOG = Logger.getLogger(Leases.class);

    private final Pool pool;
    private final GatewayConfig.Lease config;
    private final String holder = UUID.randomUUID().toString();
    private final Map<String, Lease> byAccount = new ConcurrentHashMap<>();
    private final Counter fenced;

    @Inject
    Leases(Pool pool, GatewayConfig config, MeterRegistry registry) {
        this(pool, config.lease(), registry);
    }

    Leases(Pool pool, GatewayConfig.Lease config) {
        this(pool, config, new SimpleMeterRegistry());
    }

    Leases(Pool pool, GatewayConfig.Lease config, MeterRegistry registry) {
        this.pool = pool;
        this.config = config;
        this.fenced = Counter.builder("deepserve.lease.fenced").description("balance leases dropped because the sweeper had returned them")
                .register(registry);
    }

    /** One account's lease on this replica; every field is guarded by the lease's monitor. */
    static final class Lease {
        final String accountId;
        final UUID id = UUID.randomUUID();
        BigDecimal amount = BigDecimal.ZERO;
        /** Costs written to the outbox (and counted in the lease row). */
        BigDecimal consumed = BigDecimal.ZERO;
        /** Costs of settlements on their way to the outbox. */
        BigDecimal settling = BigDecimal.ZERO;
        /** Reservations of requests in flight. */
        BigDecimal held = BigDecimal.ZERO;
        CompletableFuture<Boolean> growing;
        long lastUsed = System.nanoTime();
        /** When PostgreSQL last confirmed this lease (a grow, or a heartbeat that returned it); 0: never. */
        long confirmedAt;
        /** Swept by PostgreSQL: never spent or grown again (the account gets a new lease). */
        boolean fenced;
        /** PostgreSQL has a row for it (a grow granted something). */
        boolean inDb;

        Lease(String accountId) {
            this.accountId = accountId;
        }

        BigDecimal free() {
            return amount.subtract(consumed).subtract(settling).subtract(held);
        }
    }

    public boolean enabled() {
        return config.enabled();
    }

    /**
     * Reserves as {@link Ledger#reserve} does, against this replica's lease of the account: {@code wanted} output
     * tokens if the balance pays for them, else as many as it does; empty when not one.
     */
    public Uni<Optional<Ledger.Reservation>> reserve(String requestId, String accountId, int wanted, Function<BigDecimal, Integer> affordable,
                                                     Function<Integer, BigDecimal> amountFor) {
        Ledger.Reservation now = tryReserve(requestId, accountId, wanted, affordable, amountFor);
        if (now != null) {
            return Uni.createFrom().item(Optional.of(now));
        }
        Lease lease = byAccount.computeIfAbsent(accountId, Lease::new);
        BigDecimal need = amountFor.apply(wanted);
        Context context = Vertx.currentContext();
        Uni<Optional<Ledger.Reservation>> grown = growAndHold(lease, requestId, wanted, affordable, amountFor, need, 0);
        return context == null ? grown : grown.emitOn(r -> context.runOnContext(v -> r.run()));
    }

    /**
     * Grows the lease and takes the reservation from it; when requests that waited on the same grow used it up,
     * grows again, until the account has nothing more to lease — only then is the request capped (or refused).
     */
    private Uni<Optional<Ledger.Reservation>> growAndHold(Lease lease, String requestId, int wanted, Function<BigDecimal, Integer> affordable,
                                                          Function<Integer, BigDecimal> amountFor, BigDecimal need, int round) {
        return Uni.createFrom().completionStage(grow(lease, need.multiply(BigDecimal.valueOf(config.requests()))))
                .chain(exhausted -> {
                    boolean dropped;
                    synchronized (lease) {
                        dropped = lease.fenced;
                    }
                    if (dropped && round < 16) {
                        // the lease was swept while this replica could not heartbeat: start a new one
                        return growAndHold(byAccount.computeIfAbsent(lease.accountId, Lease::new), requestId, wanted, affordable, amountFor, need, round + 1);
                    }
                    Optional<Ledger.Reservation> r = hold(lease, requestId, wanted, affordable, amountFor, true);
                    if (r.isPresent() || exhausted || round >= 16) {
                        return Uni.createFrom().item(r.isPresent() ? r : hold(lease, requestId, wanted, affordable, amountFor, false));
                    }
                    return growAndHold(lease, requestId, wanted, affordable, amountFor, need, round + 1);
                });
    }

    /** The whole reservation from the lease as it is, without waiting; null when the lease must grow first. */
    public Ledger.Reservation tryReserve(String requestId, String accountId, int wanted, Function<BigDecimal, Integer> affordable,
                                         Function<Integer, BigDecimal> amountFor) {
        Lease lease = byAccount.computeIfAbsent(accountId, Lease::new);
        Optional<Ledger.Reservation> now = hold(lease, requestId, wanted, affordable, amountFor, true);
        if (now.isEmpty()) {
            return null;
        }
        BigDecimal low;
        synchronized (lease) {
            low = lease.free();
        }
        BigDecimal need = now.get().amount();
        if (low.compareTo(need.multiply(BigDecimal.valueOf(config.requests() / 4))) < 0) {
            // running low: grow in the background so the next requests find room
            grow(lease, need.multiply(BigDecimal.valueOf(config.requests())));
        }
        return now.get();
    }

    private Optional<Ledger.Reservation> hold(Lease lease, String requestId, int wanted, Function<BigDecimal, Integer> affordable,
                                              Function<Integer, BigDecimal> amountFor, boolean onlyInFull) {
        synchronized (lease) {
            lease.lastUsed = System.nanoTime();
            if (lease.fenced || lease.lastUsed - lease.confirmedAt > config.orphanedAfter().toNanos() / 2) {
                // swept, or not confirmed lately (this replica may have been paused past the sweep): ask PostgreSQL
                return Optional.empty();
            }
            BigDecimal free = lease.free();
            if (free.signum() <= 0) {
                return Optional.empty();
            }
            int tokens = affordable.apply(free);
            if (tokens <= 0 || onlyInFull && tokens < wanted) {
                return Optional.empty();
            }
            BigDecimal amount = amountFor.apply(tokens);
            lease.held = lease.held.add(amount);
            return Optional.of(new Ledger.Reservation(requestId, lease.accountId, null, amount, tokens, lease.id));
        }
    }

    /**
     * Adds up to {@code want} to the lease; concurrent callers share one grow in flight. Completes with whether the
     * account is exhausted (it could not give all that was asked).
     */
    private CompletableFuture<Boolean> grow(Lease lease, BigDecimal want) {
        CompletableFuture<Boolean> f;
        synchronized (lease) {
            if (lease.growing != null) {
                return lease.growing;
            }
            f = lease.growing = new CompletableFuture<>();
        }
        pool.preparedQuery("SELECT gateway.grow_lease($1, $2, $3, $4) AS granted").execute(Tuple.of(lease.accountId, want, lease.id, holder))
                .subscribe().with(rows -> {
                    BigDecimal granted = rows.iterator().next().getBigDecimal("granted");
                    boolean swept = granted != null && granted.signum() < 0;
                    synchronized (lease) {
                        if (swept) {
                            fence(lease);
                        } else if (granted != null) {
                            lease.amount = lease.amount.add(granted);
                            lease.inDb |= granted.signum() > 0;
                            if (lease.inDb) {
                                lease.confirmedAt = System.nanoTime();
                            }
                        }
                        lease.growing = null;
                    }
                    f.complete(!swept && (granted == null || granted.compareTo(want) < 0));
                }, e -> {
                    synchronized (lease) {
                        lease.growing = null;
                    }
                    f.completeExceptionally(e);
                });
        return f;
    }

    /** Drops a lease PostgreSQL no longer has (called under its monitor); the account's next request starts a new one. */
    private void fence(Lease lease) {
        if (!lease.fenced) {
            lease.fenced = true;
            byAccount.remove(lease.accountId, lease);
            fenced.increment();
            LOG.warnf("lease %s of account %s was returned by the sweeper (this replica was silent too long): dropped", lease.id, lease.accountId);
        }
    }

    /** The live lease a reservation was taken from, or null (gone: its settlement is charged to the account). */
    private Lease leaseOf(Ledger.Reservation r) {
        Lease lease = byAccount.get(r.accountId());
        return lease != null && lease.id.equals(r.lease()) ? lease : null;
    }

    /** A leased request finished: its reservation is released and its cost is on the way to the outbox. */
    public void settling(Ledger.Reservation r, BigDecimal cost) {
        Lease lease = leaseOf(r);
        if (lease == null) {
            return;
        }
        synchronized (lease) {
            lease.held = lease.held.subtract(r.amount()).max(BigDecimal.ZERO);
            lease.settling = lease.settling.add(cost);
            lease.lastUsed = System.nanoTime();
        }
    }

    /** The event is in the outbox ({@code written}) or given up on: its cost leaves the settling column. */
    public void settled(Ledger.Reservation r, BigDecimal cost, boolean written) {
        Lease lease = leaseOf(r);
        if (lease == null) {
            return;
        }
        synchronized (lease) {
            lease.settling = lease.settling.subtract(cost);
            if (written) {
                lease.consumed = lease.consumed.add(cost);
            }
        }
    }

    /** Releases a reservation that never reached settlement (nothing to write). */
    public void release(Ledger.Reservation r) {
        settling(r, BigDecimal.ZERO);
    }

    /** Gives back what idle leases hold and keeps this replica's leases alive. */
    @Scheduled(every = "${deepserve.lease.heartbeat:5s}", concurrentExecution = Scheduled.ConcurrentExecution.SKIP)
    Uni<Void> maintain() {
        return maintain(config.idle().toNanos());
    }

    Uni<Void> maintain(long idle) {
        List<Uni<Void>> work = giveBack(lease -> System.nanoTime() - lease.lastUsed >= idle && lease.growing == null);
        long sent = System.nanoTime();
        work.add(pool.preparedQuery("UPDATE gateway.leases SET heartbeat_at = now() WHERE holder = $1 RETURNING id").execute(Tuple.of(holder))
                .invoke(rows -> {
                    java.util.Set<UUID> alive = new java.util.HashSet<>();
                    rows.forEach(row -> alive.add(row.getUUID(0)));
                    confirm(alive, sent);
                }).replaceWithVoid()
                .onFailure().invoke(e -> LOG.warnf("lease heartbeat failed: %s", e.getMessage())).onFailure().recoverWithNull());
        return Uni.join().all(work).andCollectFailures().replaceWithVoid().onFailure().recoverWithNull();
    }

    /**
     * What a heartbeat sent at {@code sent} found: the leases it returned are confirmed; one PostgreSQL should have
     * returned (confirmed before the heartbeat, so its row existed) but did not was swept, and is fenced.
     */
    private void confirm(java.util.Set<UUID> alive, long sent) {
        for (Lease lease : byAccount.values()) {
            synchronized (lease) {
                if (alive.contains(lease.id)) {
                    lease.confirmedAt = Math.max(lease.confirmedAt, sent);
                } else if (lease.inDb && lease.confirmedAt < sent && lease.growing == null) {
                    fence(lease);
                }
            }
        }
    }

    /** Returns the unused part of every lease that {@code eligible} picks (looked at under the lease's monitor). */
    private List<Uni<Void>> giveBack(java.util.function.Predicate<Lease> eligible) {
        List<Uni<Void>> work = new ArrayList<>();
        for (Lease lease : byAccount.values()) {
            BigDecimal give;
            synchronized (lease) {
                if (!eligible.test(lease)) {
                    continue;
                }
                give = lease.free();
                if (give.signum() <= 0) {
                    continue;
                }
                lease.amount = lease.amount.subtract(give);
            }
            work.add(shrink(lease, give));
        }
        return work;
    }

    private Uni<Void> shrink(Lease lease, BigDecimal give) {
        return pool.preparedQuery("SELECT gateway.shrink_lease($1, $2)").execute(Tuple.of(lease.id, give)).replaceWithVoid()
                .onFailure().invoke(e -> {
                    // still leased in PostgreSQL: keep it here too, and try again next time
                    synchronized (lease) {
                        lease.amount = lease.amount.add(give);
                    }
                    LOG.warnf("could not return an idle lease of account %s: %s", lease.accountId, e.getMessage());
                }).onFailure().recoverWithNull();
    }

    /** Leases of replicas that stopped heartbeating give back what they held. */
    @Scheduled(every = "1m", concurrentExecution = Scheduled.ConcurrentExecution.SKIP)
    Uni<Void> sweep() {
        Duration ttl = config.orphanedAfter();
        return pool.preparedQuery("SELECT gateway.sweep_leases($1 * interval '1 second')").execute(Tuple.of(ttl.toSeconds()))
                .invoke(rows -> {
                    int n = rows.iterator().next().getInteger(0);
                    if (n > 0) {
                        LOG.warnf("returned %d lease(s) of gateway replicas that stopped", n);
                    }
                }).replaceWithVoid().onFailure().recoverWithNull();
    }

    void stop(@Observes ShutdownEvent ev) {
        List<Uni<Void>> work = giveBack(lease -> true);
        if (!work.isEmpty()) {
            try {
                Uni.join().all(work).andCollectFailures().await().atMost(Duration.ofSeconds(5));
            } catch (RuntimeException e) {
                LOG.warnf("leases not all returned at shutdown (the sweeper will): %s", e.getMessage());
            }
        }
    }
}
