package dev.deepserve.gateway.health;

import dev.deepserve.gateway.config.GatewayConfig;
import io.quarkus.runtime.StartupEvent;
import io.smallrye.health.api.AsyncHealthCheck;
import io.smallrye.mutiny.Uni;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import org.eclipse.microprofile.health.HealthCheckResponse;
import org.eclipse.microprofile.health.Readiness;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;

/**
 * The gateway is ready only when the services it forwards to are alive: tokenizer, prefill, the engine instances and billing.
 * It probes their liveness (not readiness) so that one slow model load does not cascade into a gateway restart loop.
 */
@Readiness
@ApplicationScoped
public class UpstreamsReadiness implements AsyncHealthCheck {

    private final GatewayConfig config;
    private final HttpClient http;

    UpstreamsReadiness(GatewayConfig config) {
        this.config = config;
        this.http = HttpClient.newBuilder().connectTimeout(config.upstreamProbeTimeout()).build();
    }

    /**
     * Probes once while the start finishes, in the background: the first probe sets up the HTTP client (0.2 s on a
     * 2-core machine), which would otherwise delay the first readiness answer by as much.
     */
    void warm(@Observes StartupEvent ev) {
        call().subscribe().with(ignored -> { }, ignored -> { });
    }

    @Override
    public Uni<HealthCheckResponse> call() {
        Map<String, URI> upstreams = new LinkedHashMap<>();
        upstreams.put("tokenizer", config.tokenizerUrl());
        upstreams.put("prefill", config.prefillUrl());
        upstreams.put("billing", config.billingUrl());
        List<URI> engines = config.engineUrls();
        for (int i = 0; i < engines.size(); i++) {
            upstreams.put(engines.size() == 1 ? "engine" : "engine-" + (i + 1), engines.get(i));
        }
        Map<String, CompletableFuture<String>> probes = new LinkedHashMap<>();
        upstreams.forEach((name, url) -> probes.put(name, probe(url)));
        return Uni.createFrom().completionStage(CompletableFuture.allOf(probes.values().toArray(CompletableFuture[]::new))
                .thenApply(ignored -> {
                    var builder = HealthCheckResponse.named("upstreams").up();
                    boolean anEngineUp = false;
                    for (var e : probes.entrySet()) {
                        String status = e.getValue().join();
                        builder.withData(e.getKey(), status);
                        if (e.getKey().startsWith("engine")) {
                            anEngineUp |= status.equals("UP");
                        } else if (!status.equals("UP")) {
                            builder.down();
                        }
                    }
                    // with several engine instances, one that is down only takes itself out of the routing
                    if (!anEngineUp) {
                        builder.down();
                    }
                    return builder.build();
                }));
    }

    private CompletableFuture<String> probe(URI base) {
        HttpRequest request = HttpRequest.newBuilder(base.resolve("/q/health/live"))
                .timeout(config.upstreamProbeTimeout()).GET().build();
        return http.sendAsync(request, HttpResponse.BodyHandlers.discarding())
                .thenApply(response -> response.statusCode() == 200 ? "UP" : "DOWN: " + base + " answered " + response.statusCode())
                .exceptionally(e -> "DOWN: " + base + " unreachable (" + rootMessage(e) + ")");
    }

    private static String rootMessage(Throwable e) {
        Throwable t = e;
        for (Throwable c = e; c != null; c = c.getCause()) {
            if (c instanceof java.net.ConnectException || c instanceof java.nio.channels.ClosedChannelException) {
                return "connection refused";
            }
            t = c;
        }
        return t.getClass().getSimpleName() + (t.getMessage() == null ? "" : ": " + t.getMessage());
    }
}
