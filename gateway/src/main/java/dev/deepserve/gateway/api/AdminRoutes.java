package dev.deepserve.gateway.api;

import dev.deepserve.gateway.OpenAiError;
import dev.deepserve.gateway.config.GatewayConfig;
import dev.deepserve.gateway.upstream.CircuitBreaker;
import dev.deepserve.gateway.upstream.Upstream;
import dev.deepserve.gateway.upstream.UpstreamRegistry;
import dev.deepserve.accounting.ApiKeys;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.RoutingContext;
import io.vertx.ext.web.handler.BodyHandler;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;

/**
 * The gateway's admin API (bearer {@code DEEPSERVE_ADMIN_KEY}, never a user key): upstream providers listed with
 * their models and circuit state, added and removed at runtime. API keys are never sent here or shown — an
 * upstream added here names the {@code DEEPSERVE_UPSTREAM_*} env var that holds its key on the gateway hosts.
 */
@ApplicationScoped
public class AdminRoutes {

    private final GatewayConfig config;
    private final UpstreamRegistry upstreams;

    AdminRoutes(GatewayConfig config, UpstreamRegistry upstreams) {
        this.config = config;
        this.upstreams = upstreams;
    }

    void routes(@Observes Router router) {
        router.route("/admin/*").handler(this::authorize);
        router.get("/admin/upstreams").handler(this::list);
        router.post("/admin/upstreams").handler(BodyHandler.create(false).setBodyLimit(64 << 10)).handler(this::add);
        router.delete("/admin/upstreams/:name").handler(this::remove);
    }

    private void authorize(RoutingContext rc) {
        String admin = config.adminKey().filter(k -> !k.isBlank()).orElse(null);
        if (admin == null) {
            Http.fail(rc, OpenAiError.unavailable("the admin API is disabled: set DEEPSERVE_ADMIN_KEY"));
            return;
        }
        String header = rc.request().getHeader("Authorization");
        String token = header != null && header.regionMatches(true, 0, "Bearer ", 0, 7) ? header.substring(7).trim() : null;
        if (!ApiKeys.sameSecret(token, admin)) {
            Http.fail(rc, OpenAiError.unauthorized(token == null ? "missing admin key: send Authorization: Bearer <admin key>" : "invalid admin key"));
            return;
        }
        rc.next();
    }

    private static JsonObject describe(Upstream u) {
        CircuitBreaker.State state = u.breaker().state(System.nanoTime());
        return new JsonObject().put("name", u.name()).put("base_url", u.base().toString()).put("source", u.source()).put("has_api_key", u.hasKey())
                .put("models", new JsonArray(u.models())).put("circuit", state.name().toLowerCase(java.util.Locale.ROOT))
                .put("list_error", u.listError());
    }

    private void list(RoutingContext rc) {
        JsonArray data = new JsonArray();
        upstreams.all().forEach(u -> data.add(describe(u)));
        rc.response().putHeader("Content-Type", "application/json").end(new JsonObject().put("data", data).encode());
    }

    private void add(RoutingContext rc) {
        JsonObject body;
        try {
            body = rc.body().asJsonObject();
        } catch (RuntimeException e) {
            body = null;
        }
        if (body == null || !(body.getValue("name") instanceof String name) || !(body.getValue("base_url") instanceof String url)) {
            Http.fail(rc, OpenAiError.invalid(null, "send {\"name\": ..., \"base_url\": ..., \"api_key_env\": optional DEEPSERVE_UPSTREAM_* variable}"));
            return;
        }
        if (body.containsKey("api_key")) {
            Http.fail(rc, OpenAiError.invalid("api_key", "API keys are not accepted here; set a DEEPSERVE_UPSTREAM_* env var on the gateway and send its name as api_key_env"));
            return;
        }
        Object keyEnv = body.getValue("api_key_env");
        if (keyEnv != null && !(keyEnv instanceof String)) {
            Http.fail(rc, OpenAiError.invalid("api_key_env", "api_key_env must be a string"));
            return;
        }
        try {
            upstreams.add(name, url, (String) keyEnv).subscribe().with(
                    u -> rc.response().setStatusCode(201).putHeader("Content-Type", "application/json").end(describe(u).encode()),
                    t -> Http.fail(rc, OpenAiError.unavailable("could not store the upstream (database unavailable); retry shortly")));
        } catch (IllegalArgumentException e) {
            Http.fail(rc, OpenAiError.invalid(null, e.getMessage()));
        } catch (IllegalStateException e) {
            Http.fail(rc, new OpenAiError(409, "invalid_request_error", "name", "conflict", e.getMessage(), 0));
        }
    }

    private void remove(RoutingContext rc) {
        String name = rc.pathParam("name");
        try {
            upstreams.remove(name).subscribe().with(found -> {
                if (found) {
                    rc.response().setStatusCode(204).end();
                } else {
                    Http.fail(rc, new OpenAiError(404, "invalid_request_error", "name", "not_found", "no upstream named " + name, 0));
                }
            }, t -> Http.fail(rc, OpenAiError.unavailable("could not remove the upstream (database unavailable); retry shortly")));
        } catch (IllegalStateException e) {
            Http.fail(rc, new OpenAiError(409, "invalid_request_error", "name", "conflict", e.getMessage(), 0));
        }
    }
}
