package dev.deepserve.gateway.engine;

import dev.deepserve.gateway.config.GatewayConfig;
import io.smallrye.mutiny.Uni;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.RequestOptions;
import io.vertx.core.json.JsonObject;
import jakarta.enterprise.context.ApplicationScoped;
import org.jboss.logging.Logger;

import java.net.URI;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.OptionalInt;
import java.util.concurrent.TimeUnit;

/**
 * The context the local engines serve — the most tokens (prompt + output) one request may hold — learned from the
 * engines themselves ({@code context_length} of each instance's {@code /internal/load}: the model's
 * {@code max_position_embeddings}, bounded by its KV budget or set by its operator), the smallest over the instances.
 * Known after the first answer, re-read in the background every 30 s; unknown while no engine has answered (then the
 * engine's own check is the only one).
 */
@ApplicationScoped
public class EngineLimits {

    private static final Logger LOG = Logger.getLogger(EngineLimits.class);
    static final long REFRESH_NANOS = TimeUnit.SECONDS.toNanos(30);

    private final GatewayConfig config;
    private final HttpClient http;
    /** The learned context, or 0 while unknown. */
    private volatile int context;
    private volatile long learnedAt;
    private volatile Uni<OptionalInt> asking;

    EngineLimits(GatewayConfig config, Vertx vertx) {
        this.config = config;
        // a background poll, not part of whichever request happened to start it: not traced
        this.http = vertx.createHttpClient(new HttpClientOptions().setMaxPoolSize(4).setKeepAlive(true).setConnectTimeout(2000)
                .setTracingPolicy(io.vertx.core.tracing.TracingPolicy.IGNORE));
    }

    /**
     * The engines' context: at once when it was learned (re-read in the background once it is 30 s old), else asked
     * now; empty when no instance answers.
     */
    public Uni<OptionalInt> context() {
        if (context > 0) {
            if (System.nanoTime() - learnedAt > REFRESH_NANOS) {
                ask().subscribe().with(c -> { }, t -> { });
            }
            return Uni.createFrom().item(OptionalInt.of(context));
        }
        // the answer comes on whichever event loop asked first: each caller goes on on its own request's context
        io.vertx.core.Context caller = Vertx.currentContext();
        Uni<OptionalInt> answer = ask();
        return caller == null ? answer : answer.emitOn(task -> caller.runOnContext(v -> task.run()));
    }

    /** Asks every instance (one question in flight at a time); keeps the smallest context any of them reports. */
    private synchronized Uni<OptionalInt> ask() {
        if (asking != null) {
            return asking;
        }
        List<Future<Integer>> answers = new ArrayList<>();
        for (URI base : config.engineUrls()) {
            answers.add(contextOf(base));
        }
        Uni<OptionalInt> question = Uni.createFrom().completionStage(() -> Future.join(answers).transform(ar -> {
            int smallest = 0;
            for (Future<Integer> f : answers) {
                if (f.succeeded() && f.result() > 0) {
                    smallest = smallest == 0 ? f.result() : Math.min(smallest, f.result());
                }
            }
            if (smallest > 0) {
                if (smallest != context) {
                    LOG.infof("the engines serve a context of %d tokens", smallest);
                }
                context = smallest;
                learnedAt = System.nanoTime();
            }
            return Future.succeededFuture(known());
        }).toCompletionStage())
                // an engine that trickles bytes or never ends its answer holds no request up: after 3 s, what is known
                .ifNoItem().after(Duration.ofSeconds(3)).recoverWithItem(this::known)
                .onFailure().recoverWithItem(this::known)
                .memoize().indefinitely();
        asking = question;
        question.subscribe().with(c -> clear(), t -> clear());
        return question;
    }

    private OptionalInt known() {
        return context > 0 ? OptionalInt.of(context) : OptionalInt.empty();
    }

    private synchronized void clear() {
        asking = null;
    }

    private Future<Integer> contextOf(URI base) {
        RequestOptions get = EngineClient.internal(HttpMethod.GET, base, "/internal/load", config).setIdleTimeout(2000);
        return http.request(get).compose(req -> req.send()).compose(resp -> resp.body().map(body -> {
            if (resp.statusCode() != 200) {
                if (resp.statusCode() != 503) { // 503: still loading
                    LOG.warnf("engine instance %s answered %d to /internal/load; its context is not known", base, resp.statusCode());
                }
                return 0;
            }
            try {
                Object n = new JsonObject(body).getValue("context_length");
                return n instanceof Number num && num.longValue() > 0 ? (int) Math.min(num.longValue(), Integer.MAX_VALUE) : 0;
            } catch (RuntimeException notJson) {
                return 0;
            }
        }));
    }
}
