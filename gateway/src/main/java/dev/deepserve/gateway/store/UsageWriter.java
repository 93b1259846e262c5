package dev.deepserve.gateway.store;

import io.smallrye.mutiny.Uni;
import io.vertx.core.Context;
import io.vertx.core.Vertx;
import io.vertx.core.json.JsonObject;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Tuple;
import io.vertx.sqlclient.data.Numeric;
import jakarta.enterprise.context.ApplicationScoped;
import org.jboss.logging.Logger;

import java.math.BigDecimal;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;

/**
 * Settles leased requests in groups: their usage events go to the outbox, and their costs onto their leases, in one
 * statement per group (so one commit covers many requests). A group is sent as soon as the previous one is done —
 * no timer, so a lone request waits for nothing but its own round trip and a busy gateway sends large groups. Each
 * request's answer is released only after its event is committed. Inserting is idempotent per event id, and a
 * lease is charged only for events actually inserted, so retrying a group whose commit went unacknowledged is exact.
 */
@ApplicationScoped
public class UsageWriter {

    private static final Logger LOG = Logger.getLogger(UsageWriter.class);
    private static final int MAX_GROUP = 2000;
    private static final int MAX_ATTEMPTS = 7;

    private final Pool pool;
    private final Leases leases;
    private final Vertx vertx;
    private final ArrayDeque<Item> queue = new ArrayDeque<>();
    private boolean sending;

    UsageWriter(Pool pool, Leases leases, Vertx vertx) {
        this.pool = pool;
        this.leases = leases;
        this.vertx = vertx;
    }

    private record Item(UUID eventId, String payload, Ledger.Reservation reservation, BigDecimal cost, CompletableFuture<Void> done, boolean retried) {
        Item again() {
            return new Item(eventId, payload, reservation, cost, done, true);
        }
    }

    /** Writes the event and charges its cost to the reservation's lease; completes once committed (or given up and logged). */
    public Uni<Void> write(Ledger.Reservation r, BigDecimal cost, UUID eventId, JsonObject event) {
        Context context = Vertx.currentContext();
        Uni<Void> written = Uni.createFrom().completionStage(submit(r, cost, eventId, event));
        return context == null ? written : written.emitOn(task -> context.runOnContext(v -> task.run()));
    }

    /** As {@link #write}, completing on whichever thread the commit is seen. */
    public CompletableFuture<Void> submit(Ledger.Reservation r, BigDecimal cost, UUID eventId, JsonObject event) {
        leases.settling(r, cost);
        CompletableFuture<Void> done = new CompletableFuture<>();
        boolean start;
        synchronized (this) {
            queue.add(new Item(eventId, event.encode(), r, cost, done, false));
            start = !sending;
            sending = true;
        }
        if (start) {
            send(0);
        }
        return done;
    }

    private void send(int attempt) {
        List<Item> group = new ArrayList<>();
        synchronized (this) {
            while (!queue.isEmpty() && group.size() < MAX_GROUP) {
                group.add(queue.poll());
            }
            if (group.isEmpty()) {
                sending = false;
                return;
            }
        }
        int n = group.size();
        UUID[] ids = new UUID[n];
        String[] payloads = new String[n];
        UUID[] leaseIds = new UUID[n];
        Numeric[] costs = new Numeric[n];
        for (int i = 0; i < n; i++) {
            Item it = group.get(i);
            ids[i] = it.eventId();
            payloads[i] = it.payload();
            leaseIds[i] = it.reservation().lease();
            costs[i] = Numeric.create(it.cost());
        }
        pool.preparedQuery("""
                        WITH input AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::numeric[]) AS u(e, p, l, c)),
                             ev AS (INSERT INTO gateway.usage_outbox (event_id, payload) SELECT e, p::jsonb FROM input
                                    ON CONFLICT (event_id) DO NOTHING RETURNING event_id),
                             charged AS (UPDATE gateway.leases l SET consumed = l.consumed + s.c
                                         FROM (SELECT i.l, sum(i.c) AS c FROM input i JOIN ev ON ev.event_id = i.e GROUP BY i.l) s
                                         WHERE l.id = s.l RETURNING 1)
                        SELECT event_id FROM ev""")
                .execute(Tuple.of(ids, payloads, leaseIds, costs))
                .subscribe().with(rows -> {
                    java.util.Set<UUID> inserted = new java.util.HashSet<>();
                    rows.forEach(row -> inserted.add(row.getUUID(0)));
                    for (Item it : group) {
                        // not inserted: a duplicate id, or (when retried) the earlier attempt committed after all
                        leases.settled(it.reservation(), it.cost(), inserted.contains(it.eventId()) || it.retried());
                        it.done().complete(null);
                    }
                    send(0);
                }, e -> {
                    if (attempt + 1 >= MAX_ATTEMPTS) {
                        for (Item it : group) {
                            LOG.errorf("request %s: usage event not written after %d attempts (%s); kept in this log for replay: %s",
                                    it.reservation().requestId(), MAX_ATTEMPTS, e.getMessage(), it.payload());
                            leases.settled(it.reservation(), it.cost(), false);
                            it.done().complete(null);
                        }
                        vertx.setTimer(1, t -> send(0));
                        return;
                    }
                    LOG.warnf("writing %d usage event(s) failed (%s), retrying", n, e.getMessage());
                    synchronized (this) {
                        for (int i = group.size() - 1; i >= 0; i--) {
                            queue.addFirst(group.get(i).again());
                        }
                    }
                    vertx.setTimer(250L << attempt, t -> send(attempt + 1));
                });
    }
}
