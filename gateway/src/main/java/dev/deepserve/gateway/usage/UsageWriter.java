package dev.deepserve.gateway.usage;

import dev.deepserve.gateway.Backoff;
import dev.deepserve.gateway.config.GatewayConfig;
import dev.deepserve.gateway.metering.Leases;
import dev.deepserve.gateway.metering.Ledger;
import io.quarkus.runtime.ShutdownEvent;
import io.quarkus.runtime.StartupEvent;
import io.quarkus.scheduler.Scheduled;
import io.smallrye.mutiny.Uni;
import io.vertx.core.Context;
import io.vertx.core.Vertx;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Tuple;
import io.vertx.sqlclient.data.Numeric;
import jakarta.annotation.Priority;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import jakarta.inject.Inject;
import org.jboss.logging.Logger;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.time.Duration;
import java.time.OffsetDateTime;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * Settles leased requests in groups: their usage events go to the outbox, and their costs onto their leases, in one
 * statement per group (so one commit covers many requests). Inserting is idempotent per event id, and a lease is
 * charged only for events actually inserted, so retrying a group whose commit went unacknowledged is exact; an
 * event whose lease is gone (returned by the sweeper while the event waited) is charged to its account's
 * {@code reserved} instead, where billing collects it.
 * <p>
 * A request's answer is released once its event is in the local {@link UsageJournal}; groups are sent every
 * {@code group-wait} behind the answers and retried until PostgreSQL takes them, and what is still in the journal
 * when the gateway stops is replayed at its next start. An event the journal cannot take (a full disk) waits in
 * memory, its answer held until PostgreSQL commits it. A request still streaming keeps a provisional record of what
 * it has cost so far, so a gateway that dies mid-stream bills, at its next start, the output that reached a client.
 */
@ApplicationScoped
public class UsageWriter {

    private static final Logger LOG = Logger.getLogger(UsageWriter.class);
    private static final int MAX_GROUP = 2000;
    /** How a batch PostgreSQL refused is retried: from 250 ms, doubling, at most every 5 s. */
    private static final Backoff RETRY = new Backoff(250, 5000);
    private static final long PUBLISH_PAUSE_NANOS = TimeUnit.SECONDS.toNanos(30);

    private final Pool pool;
    private final UsagePublisher publisher;
    private final Duration publishTimeout;
    private final Leases leases;
    private final UsageJournal journal;
    private final long groupWaitMs;
    private final Duration retention;
    private final ArrayDeque<Item> queue = new ArrayDeque<>();
    private final List<Waiter> drains = new ArrayList<>();
    private volatile long publishPausedUntil;
    /**
     * Where group waits and retries are timed: a thread of the writer's own, not a Vert.x timer, because a timer set
     * from a request's context belongs to the HTTP server's deployment and a stopping Quarkus undeploys that first,
     * cancelling it, so the last group before a stop would never be sent.
     */
    private final ScheduledExecutorService timer = Executors.newSingleThreadScheduledExecutor(Thread.ofPlatform().daemon().name("usage-writer").factory());
    /** The next group's wait, while one is timed (under this). */
    private ScheduledFuture<?> waiting;
    /** Stopping: groups go at once, without their wait (under this). */
    private boolean closing;
    private boolean sending;
    private long accepted;
    private long finished;

    @Inject
    UsageWriter(Pool pool, Leases leases, UsagePublisher publisher, GatewayConfig config) {
        this(pool, leases, publisher, config.usage(), config.outbox());
    }

    public UsageWriter(Pool pool, Leases leases, UsagePublisher publisher, GatewayConfig.Usage usage, GatewayConfig.Outbox outbox) {
        this.pool = pool;
        this.publisher = publisher;
        this.publishTimeout = outbox.publishTimeout();
        this.leases = leases;
        this.groupWaitMs = usage.groupWait().toMillis();
        this.retention = outbox.retention();
        if (!usage.journal().enabled()) {
            // an answer whose event lived only in memory would be free if this process died before PostgreSQL took it
            throw new IllegalStateException("DEEPSERVE_USAGE_JOURNAL_ENABLED=false is not supported: usage events are journaled before an answer "
                    + "goes out; give each replica a DEEPSERVE_USAGE_JOURNAL_DIR on storage that outlives the process");
        }
        try {
            this.journal = UsageJournal.open(usage.journal().dir().toAbsolutePath(), usage.journal().fsync());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot open the usage journal " + usage.journal().dir().toAbsolutePath() + ": " + e.getMessage(), e);
        }
    }

    /**
     * What a request still streaming has cost so far, kept in the journal under the event id its settlement will use
     * (see {@link #provisional}); opaque outside this package.
     */
    public static final class Provisional {
        private final UsageJournal.Segment segment;

        private Provisional(UsageJournal.Segment segment) {
            this.segment = segment;
        }
    }

    /**
     * One event on its way: {@code segment} is the journal segment holding it ({@code null} when the journal could
     * not take it, and then {@code done} completes at its commit); {@code reservation} is {@code null} for an event
     * replayed from an earlier run's journal, whose lease this process never held.
     */
    private record Item(UUID eventId, String payload, UUID lease, String accountId, Ledger.Reservation reservation, BigDecimal cost,
                        UsageJournal.Segment segment, CompletableFuture<Void> done, boolean retried, boolean published, boolean provisional,
                        String traceparent) {
        Item again(boolean sent) {
            return new Item(eventId, payload, lease, accountId, reservation, cost, segment, done, true, sent, provisional, traceparent);
        }
    }

    private record Waiter(long upTo, CompletableFuture<Void> done) {
    }

    public void start(@Observes StartupEvent ev) {
        List<UsageJournal.Recovered> left = settledOrInterrupted(journal.takeRecovered());
        if (left.isEmpty()) {
            LOG.debugf("usage journal %s is empty", journal.dir());
            return;
        }
        OffsetDateTime tooOld = OffsetDateTime.now().minus(retention);
        Set<UUID> applied = appliedAmong(left.stream().filter(r -> r.completedAt() != null && r.completedAt().isBefore(tooOld))
                .map(r -> r.entry().eventId()).toList());
        int replayed = 0;
        int interrupted = 0;
        synchronized (this) {
            for (UsageJournal.Recovered r : left) {
                UsageJournal.Entry e = r.entry();
                OffsetDateTime at = r.completedAt();
                if (at != null && at.isBefore(tooOld)) {
                    // the outbox may have pruned it after billing applied it, so the ledger decides: an event it has
                    // is done; one it does not have is replayed (billing applies an event id once); when the ledger
                    // cannot be read now the event stays in the journal for the next start — never dropped unapplied
                    if (applied == null) {
                        LOG.warnf("usage event %s is older than the outbox retention and the ledger cannot be read now; kept in the journal", e.eventId());
                        continue;
                    }
                    if (applied.contains(e.eventId())) {
                        journal.committed(r.segment());
                        continue;
                    }
                    LOG.warnf("usage event %s is older than the outbox retention and not in the ledger: replayed", e.eventId());
                }
                queue.add(new Item(e.eventId(), e.payload(), e.lease(), e.accountId(), null, e.cost(), r.segment(), null, false, false, e.provisional(), null));
                accepted++;
                replayed++;
                if (e.provisional()) {
                    interrupted++;
                }
            }
        }
        LOG.infof("replaying %d usage event(s) left in the journal %s by an earlier run%s", replayed, journal.dir(),
                interrupted == 0 ? "" : ", " + interrupted + " of them for requests cut off mid-stream (billed for what they had streamed)");
        kick();
    }

    /**
     * The recovered entries to replay: every settled event, and for a request that never settled (this gateway died
     * while it streamed) its last provisional entry; the provisional entries a settlement superseded are let go.
     */
    private List<UsageJournal.Recovered> settledOrInterrupted(List<UsageJournal.Recovered> recovered) {
        Set<UUID> settled = new HashSet<>();
        java.util.Map<UUID, UsageJournal.Recovered> last = new java.util.HashMap<>();
        for (UsageJournal.Recovered r : recovered) {
            if (!r.entry().provisional()) {
                settled.add(r.entry().eventId());
            }
        }
        List<UsageJournal.Recovered> out = new ArrayList<>(recovered.size());
        for (UsageJournal.Recovered r : recovered) {
            UUID id = r.entry().eventId();
            if (!r.entry().provisional()) {
                out.add(r);
            } else if (settled.contains(id)) {
                journal.committed(r.segment());
            } else {
                // journal order is append order: a later provisional entry has streamed at least as much
                UsageJournal.Recovered earlier = last.put(id, r);
                if (earlier != null) {
                    journal.committed(earlier.segment());
                }
            }
        }
        out.addAll(last.values());
        return out;
    }

    /** Which of these event ids billing's ledger has, or null when it cannot be read now. */
    private Set<UUID> appliedAmong(List<UUID> ids) {
        if (ids.isEmpty()) {
            return Set.of();
        }
        try {
            Set<UUID> found = new HashSet<>();
            pool.preparedQuery("SELECT event_id FROM billing.usage_ledger WHERE event_id = ANY($1)").execute(Tuple.of(ids.toArray(UUID[]::new)))
                    .await().atMost(Duration.ofSeconds(30)).forEach(row -> found.add(row.getUUID(0)));
            return found;
        } catch (RuntimeException e) {
            LOG.warnf("cannot read the usage ledger (%s)", e.getMessage());
            return null;
        }
    }

    /** Writes the event and charges its cost to the reservation's lease; completes once it is safe (journaled or committed). */
    public Uni<Void> write(Ledger.Reservation r, BigDecimal cost, UUID eventId, String event) {
        Context context = Vertx.currentContext();
        Uni<Void> written = Uni.createFrom().completionStage(submit(r, cost, eventId, event, null));
        return context == null ? written : written.emitOn(task -> context.runOnContext(v -> task.run()));
    }

    /**
     * As {@link #write}, completing on whichever thread sees the event safe; {@code traceparent} (W3C, or null) goes
     * into the Kafka record's headers when this process sends the event itself (not kept in the journal or the outbox).
     */
    public CompletableFuture<Void> submit(Ledger.Reservation r, BigDecimal cost, UUID eventId, String payload, String traceparent) {
        leases.settling(r, cost);
        UsageJournal.Appended appended = null;
        try {
            appended = journal.append(new UsageJournal.Entry(eventId, r.lease(), r.accountId(), cost, payload));
        } catch (IOException e) {
            LOG.errorf("usage journal %s not writable (%s); request %s waits for PostgreSQL instead", journal.dir(), e.getMessage(), r.requestId());
        }
        CompletableFuture<Void> committed = appended == null ? new CompletableFuture<>() : null;
        synchronized (this) {
            queue.add(new Item(eventId, payload, r.lease(), r.accountId(), r, cost, appended == null ? null : appended.segment(), committed, false, false, false, traceparent));
            accepted++;
        }
        kick();
        return appended == null ? committed : appended.synced();
    }

    /**
     * Records what a request still streaming has cost so far ({@code payload}: the usage event it would settle with
     * now, under the event id its settlement will use), replacing {@code previous}; nothing is sent anywhere. Should
     * this process die before the request settles, the next start replays the last such record, so output that
     * reached a client is billed; once the settlement is in the journal, {@link #release} lets it go.
     */
    public Provisional provisional(Ledger.Reservation r, BigDecimal cost, UUID eventId, String payload, Provisional previous) {
        Provisional now;
        try {
            now = new Provisional(journal.append(new UsageJournal.Entry(eventId, r.lease(), r.accountId(), cost, payload, true)).segment());
        } catch (IOException e) {
            LOG.debugf("usage journal not writable (%s); request %s's progress not recorded", e.getMessage(), r.requestId());
            return previous;
        }
        release(previous);
        return now;
    }

    /** A request's provisional record is superseded (its settlement is safe): its segment may go. */
    public void release(Provisional p) {
        if (p != null) {
            journal.committed(p.segment);
        }
    }

    /** Completes once every event accepted before the call has been committed. */
    public CompletableFuture<Void> drain() {
        CompletableFuture<Void> done = new CompletableFuture<>();
        synchronized (this) {
            if (finished >= accepted) {
                return CompletableFuture.completedFuture(null);
            }
            drains.add(new Waiter(accepted, done));
        }
        return done;
    }

    /**
     * Starts a group unless one is on its way, after {@code group-wait} (at once when that is zero, the queue is long
     * or the writer is stopping).
     */
    private void kick() {
        synchronized (this) {
            if (sending || queue.isEmpty()) {
                return;
            }
            sending = true;
            if (!closing && groupWaitMs > 0 && queue.size() < MAX_GROUP) {
                waiting = timer.schedule(() -> guarded(this::waited), groupWaitMs, TimeUnit.MILLISECONDS);
                return;
            }
        }
        send(0);
    }

    /**
     * Runs a timed send; should it fail on its own (not PostgreSQL refusing, which {@link #failed} handles), the writer
     * says so and goes on with the next group: the events of the group stay in the journal for the next start.
     */
    private void guarded(Runnable task) {
        try {
            task.run();
        } catch (RuntimeException e) {
            LOG.errorf(e, "sending a group of usage events failed; its events stay in the journal %s for the next start", journal.dir());
            synchronized (this) {
                sending = false;
            }
        }
    }

    private void waited() {
        synchronized (this) {
            waiting = null;
        }
        send(0);
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
        // an id twice in one group (a client's event sent again) is written, and charged, once
        Set<UUID> seen = new HashSet<>();
        List<Item> unique = new ArrayList<>(group.size());
        for (Item it : group) {
            if (seen.add(it.eventId())) {
                unique.add(it);
            }
        }
        if (publisher == null || System.nanoTime() < publishPausedUntil) {
            insert(group, unique, seen, Set.of(), attempt);
            return;
        }
        // each event goes to Kafka first, and into the outbox already stamped as published, so the relay
        // has nothing to read back or stamp; what Kafka does not take now goes in unstamped for the relay to send
        List<UUID> toSend = new ArrayList<>(unique.size());
        List<String> payloads = new ArrayList<>(unique.size());
        List<String> traces = new ArrayList<>(unique.size());
        for (Item it : unique) {
            // a replayed provisional record goes only into the outbox, where it yields to a settlement committed
            // there before the crash (same event id); Kafka gets whichever the outbox holds, from the relay
            if (!it.published() && !it.provisional()) {
                toSend.add(it.eventId());
                payloads.add(it.payload());
                traces.add(it.traceparent());
            }
        }
        List<CompletableFuture<Void>> acks = toSend.isEmpty() ? List.of() : publisher.send(toSend, payloads, traces);
        CompletableFuture.allOf(acks.toArray(CompletableFuture[]::new)).orTimeout(publishTimeout.toMillis(), TimeUnit.MILLISECONDS)
                .whenComplete((v, t) -> {
                    Set<UUID> acked = new HashSet<>();
                    for (int i = 0; i < acks.size(); i++) {
                        if (acks.get(i).isDone() && !acks.get(i).isCompletedExceptionally()) {
                            acked.add(toSend.get(i));
                        }
                    }
                    if (t != null) {
                        // Kafka is away or slow: stop waiting on it for a while, so PostgreSQL keeps up with the traffic
                        publishPausedUntil = System.nanoTime() + PUBLISH_PAUSE_NANOS;
                        LOG.infof("Kafka did not take every usage event of a group now (%s); the outbox relay sends the rest", t.getMessage());
                    }
                    insert(group, unique, seen, acked, attempt);
                });
    }

    /** Writes {@code unique} (the group without repeated ids); {@code acked}: the ids Kafka took in this attempt. */
    private void insert(List<Item> group, List<Item> unique, Set<UUID> seen, Set<UUID> acked, int attempt) {
        int n = unique.size();
        UUID[] ids = new UUID[n];
        String[] payloads = new String[n];
        UUID[] leaseIds = new UUID[n];
        String[] accounts = new String[n];
        Numeric[] costs = new Numeric[n];
        Boolean[] sent = new Boolean[n];
        for (int i = 0; i < n; i++) {
            Item it = unique.get(i);
            ids[i] = it.eventId();
            payloads[i] = it.payload();
            leaseIds[i] = it.lease();
            accounts[i] = it.accountId();
            costs[i] = Numeric.create(it.cost());
            sent[i] = it.published() || acked.contains(it.eventId());
        }
        // held: the events' leases that still exist, locked so the sweeper cannot return one under this statement;
        // an inserted event whose lease is gone goes onto its account's reserved instead (billing takes it from there)
        pool.preparedQuery("""
                        WITH input AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::numeric[], $5::text[], $6::boolean[]) AS u(e, p, l, c, a, k)),
                             ev AS (INSERT INTO gateway.usage_outbox (event_id, payload, published_at) SELECT e, p::json, CASE WHEN k THEN now() END FROM input
                                    ON CONFLICT (event_id) DO NOTHING RETURNING event_id),
                             fresh AS (SELECT i.* FROM input i JOIN ev ON ev.event_id = i.e),
                             held AS (SELECT id FROM gateway.leases WHERE id IN (SELECT l FROM fresh) FOR UPDATE),
                             charged AS (UPDATE gateway.leases l SET consumed = l.consumed + s.c
                                         FROM (SELECT f.l, sum(f.c) AS c FROM fresh f JOIN held h ON h.id = f.l GROUP BY f.l) s
                                         WHERE l.id = s.l RETURNING 1),
                             orphaned AS (UPDATE billing.accounts a SET reserved = a.reserved + s.c
                                          FROM (SELECT f.a, sum(f.c) AS c FROM fresh f WHERE f.l IS NULL OR f.l NOT IN (SELECT id FROM held) GROUP BY f.a) s
                                          WHERE a.id = s.a RETURNING 1),
                             -- a spend-capped key's request settled here (handed over after its own settlement kept
                             -- failing): its cost counts against the cap, as Ledger.settle would have counted it
                             capped AS (UPDATE billing.api_keys k SET spent = k.spent + s.c
                                        FROM (SELECT f.p::json->>'api_key_id' AS key, sum(f.c) AS c FROM fresh f WHERE f.l IS NULL GROUP BY 1) s
                                        WHERE k.id = s.key AND k.spend_cap IS NOT NULL RETURNING 1)
                        SELECT event_id FROM ev""")
                .execute(Tuple.of(ids, payloads, leaseIds, costs, accounts, sent))
                .subscribe().with(rows -> {
                    Set<UUID> inserted = new HashSet<>();
                    rows.forEach(row -> inserted.add(row.getUUID(0)));
                    for (Item it : group) {
                        // not inserted: a duplicate id, or (when retried) the earlier attempt committed after all
                        boolean first = seen.remove(it.eventId());
                        finish(it, first && (inserted.contains(it.eventId()) || it.retried()));
                    }
                    done(group.size());
                }, e -> failed(group, acked, attempt, e));
    }

    private void finish(Item it, boolean written) {
        if (it.reservation() != null) {
            leases.settled(it.reservation(), it.cost(), written);
        }
        if (it.segment() != null) {
            journal.committed(it.segment());
        }
        if (it.done() != null) {
            it.done().complete(null);
        }
    }

    /** A group is finished: wake the drains it completes, then send the next (after group-wait when journaled). */
    private void done(int count) {
        List<CompletableFuture<Void>> woken = new ArrayList<>();
        synchronized (this) {
            finished += count;
            drains.removeIf(w -> {
                if (w.upTo() <= finished) {
                    woken.add(w.done());
                    return true;
                }
                return false;
            });
            sending = false;
        }
        woken.forEach(f -> f.complete(null));
        kick();
    }

    /** A group was not written: every event in it is retried (never dropped), what Kafka already took not sent again. */
    private void failed(List<Item> group, Set<UUID> acked, int attempt, Throwable e) {
        List<Item> retry = new ArrayList<>(group.size());
        int unjournaled = 0;
        for (Item it : group) {
            retry.add(it.again(it.published() || acked.contains(it.eventId())));
            if (it.segment() == null) {
                unjournaled++;
            }
        }
        if (attempt == 0 || attempt % 10 == 9) {
            LOG.warnf("writing %d usage event(s) to PostgreSQL failed (%s), retrying; %s", group.size(), e.getMessage(),
                    unjournaled == 0 ? "they are safe in the journal meanwhile" : unjournaled + " of them the journal could not take wait in memory, their answers held");
        }
        synchronized (this) {
            for (int i = retry.size() - 1; i >= 0; i--) {
                queue.addFirst(retry.get(i));
            }
        }
        try {
            timer.schedule(() -> guarded(() -> send(attempt + 1)), RETRY.millis(attempt), TimeUnit.MILLISECONDS);
        } catch (java.util.concurrent.RejectedExecutionException stopped) {
            // the writer has stopped: the group waits in the journal for the next start
            synchronized (this) {
                sending = false;
            }
        }
    }

    /** Ends a journal segment whose events are all in PostgreSQL, so an idle replica's journal holds nothing. */
    @Scheduled(every = "10s", concurrentExecution = Scheduled.ConcurrentExecution.SKIP)
    void tidy() {
        journal.tidy();
    }

    /** Before the leases are returned: what is queued goes to PostgreSQL, or stays in the journal for the next start. */
    void stop(@Observes @Priority(1) ShutdownEvent ev) {
        close(Duration.ofSeconds(5));
    }

    /**
     * Sends what waits for its group at once, waits up to {@code wait} for everything accepted to reach PostgreSQL,
     * then closes the journal (which keeps the rest).
     */
    public void close(Duration wait) {
        boolean now = false;
        synchronized (this) {
            closing = true;
            if (waiting != null && waiting.cancel(false)) {
                waiting = null;
                now = true;
            }
        }
        if (now) {
            send(0);
        }
        try {
            drain().get(wait.toMillis(), TimeUnit.MILLISECONDS);
        } catch (Exception e) {
            long left;
            synchronized (this) {
                left = accepted - finished;
            }
            LOG.warnf("%d usage event(s) not written to PostgreSQL at shutdown; the journal %s keeps them for the next start", left, journal.dir());
        }
        timer.shutdownNow();
        try {
            journal.close();
        } catch (IOException e) {
            LOG.warnf("closing the usage journal: %s", e.getMessage());
        }
    }
}
