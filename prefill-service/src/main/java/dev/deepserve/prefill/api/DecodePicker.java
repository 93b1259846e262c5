package dev.deepserve.prefill.api;

import dev.deepserve.internal.InternalGuard;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.RequestOptions;
import io.vertx.core.json.JsonObject;

import java.net.URI;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

/**
 * Chooses the decode instance for a prefilled sequence: the one with the most free latent-KV capacity (less what it
 * has queued and what this prefill instance sent it since it last reported), read from each instance's
 * {@code /internal/load} every half second. An instance that does not answer, or fails a transfer, sits out until
 * it answers again. With one decode instance there is nothing to choose and nothing is polled.
 */
final class DecodePicker {

    private static final long STALE = TimeUnit.SECONDS.toNanos(3);

    static final class Target {
        final URI base;
        volatile long freeTokens = Long.MAX_VALUE / 4;
        volatile long queued;
        volatile long reportedAt;
        volatile boolean down;
        /** KV tokens sent since the last report (so back-to-back picks spread out). */
        volatile long sentSince;

        Target(URI base) {
            this.base = base;
        }

        long score() {
            return freeTokens - sentSince - queued * 1024;
        }
    }

    private final List<Target> targets = new ArrayList<>();
    private final HttpClient http;
    private final Vertx vertx;
    private final Optional<String> internalToken;

    DecodePicker(List<URI> bases, Vertx vertx, HttpClient http, Optional<String> internalToken) {
        this(bases, vertx, http, internalToken, 500);
    }

    DecodePicker(List<URI> bases, Vertx vertx, HttpClient http, Optional<String> internalToken, long pollMillis) {
        this.http = http;
        this.internalToken = internalToken;
        this.vertx = vertx;
        bases.forEach(b -> targets.add(new Target(b)));
        if (targets.size() > 1) {
            vertx.setPeriodic(pollMillis, id -> refresh());
        }
    }

    /**
     * Reads every instance's load now. The requests are made on a Vert.x context: made from another thread, a request
     * on a kept-alive connection now and then never completes (Vert.x 4.5 client, not even its idle timeout fires).
     */
    io.vertx.core.Future<Void> refresh() {
        io.vertx.core.Promise<Void> done = io.vertx.core.Promise.promise();
        vertx.runOnContext(v -> io.vertx.core.Future.join(targets.stream().map(this::poll).toList()).<Void>mapEmpty().onComplete(done));
        return done.future();
    }

    private io.vertx.core.Future<Void> poll(Target t) {
        RequestOptions get = InternalGuard.withCredential(new RequestOptions().setMethod(HttpMethod.GET).setHost(t.base.getHost())
                .setPort(t.base.getPort()).setURI("/internal/load").setIdleTimeout(1000), internalToken);
        return http.request(get).compose(req -> req.send()).compose(resp -> resp.body().map(b -> resp.statusCode() == 200 ? new JsonObject(b) : null))
                .onComplete(ar -> {
                    if (ar.failed() || ar.result() == null) {
                        t.down = true;
                        return;
                    }
                    JsonObject load = ar.result();
                    t.freeTokens = load.getLong("kv_free_tokens", 0L);
                    t.queued = load.getLong("queued", 0L);
                    t.sentSince = 0;
                    t.reportedAt = System.nanoTime();
                    t.down = false;
                }).<Void>mapEmpty().otherwiseEmpty();
    }

    /** The decode instance for a sequence holding {@code kvTokens} latent-KV tokens. */
    Target pick(long kvTokens) {
        Target best = null;
        long now = System.nanoTime();
        for (Target t : targets) {
            boolean usable = targets.size() == 1 || !t.down && (t.reportedAt == 0 || now - t.reportedAt < STALE);
            if (usable && (best == null || t.score() > best.score())) {
                best = t;
            }
        }
        if (best == null) {
            best = targets.getFirst();
            for (Target t : targets) {
                if (!t.down) {
                    best = t;
                    break;
                }
            }
        }
        best.sentSince += kvTokens;
        return best;
    }

    /** A transfer to this instance failed: keep others in front until it reports again. */
    void failed(Target t) {
        if (targets.size() > 1) {
            t.down = true;
        }
    }
}
