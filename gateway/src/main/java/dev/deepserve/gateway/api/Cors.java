package dev.deepserve.gateway.api;

import dev.deepserve.gateway.OpenAiError;
import dev.deepserve.gateway.config.GatewayConfig;
import io.vertx.core.http.HttpHeaders;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.RoutingContext;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.regex.Pattern;

/**
 * Cross-origin access for web pages, on the public API paths only ({@code /chat/completions}, {@code /completions},
 * {@code /models}, {@code /user/balance}, with and without {@code /v1}); never on admin, minting or internal paths.
 * Runs before everything else on a request: a preflight is answered here, with no key and no database, and a request
 * whose {@code Origin} is not allowed is refused here (403, nothing served) — so a page on another site cannot
 * spend a key even in the cases a browser would send without asking first.
 */
@ApplicationScoped
public class Cors {

    /** Exact origins: scheme, host (a name, IPv4 or bracketed IPv6), optional port; nothing after. */
    static final Pattern ORIGIN = Pattern.compile("https?://([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*|\\[[0-9a-f:.]{2,45}\\])(:[0-9]{1,5})?");
    static final int MAX_ORIGIN = 255;

    private static final Set<String> PUBLIC = Set.of("/chat/completions", "/completions", "/models", "/user/balance");
    /** Request headers a page may send: what the OpenAI and DeepSeek SDKs send from a browser, and fetch's basics. */
    private static final Set<String> HEADERS = Set.of("authorization", "content-type", "accept", "openai-beta", "openai-organization", "openai-project",
            "x-request-id", "idempotency-key");
    /** Response headers a page may read: the request id (to quote to support) and how long a 429/503 asks it to wait. */
    private static final String EXPOSED = "X-Request-Id, Retry-After";

    private final boolean any;
    private final Set<String> origins;

    @jakarta.inject.Inject
    Cors(GatewayConfig config) {
        this(config.corsOrigins().orElse(List.of()));
    }

    Cors(List<String> configured) {
        List<String> exact = new ArrayList<>();
        boolean star = false;
        for (String o : configured) {
            String origin = o.strip();
            if (origin.isEmpty()) {
                continue;
            }
            if (origin.equals("*")) {
                star = true;
            } else if (origin.length() > MAX_ORIGIN || !ORIGIN.matcher(origin).matches()) {
                throw new IllegalArgumentException("DEEPSERVE_CORS_ORIGINS: '" + origin + "' is not an origin (scheme://host[:port], lower case, no path), nor *");
            } else {
                exact.add(origin);
            }
        }
        this.any = star;
        this.origins = Set.copyOf(exact);
    }

    void routes(@Observes Router router) {
        router.route().order(Integer.MIN_VALUE + 1).handler(this::handle);
    }

    /** Whether a page from {@code origin} may call the public API. */
    public boolean allows(String origin) {
        return any || origins.contains(origin);
    }

    /** The public API's paths, as the router matches them (a trailing slash routes to the same handler). */
    static boolean publicPath(String path) {
        if (path == null) {
            return false;
        }
        String p = path.length() > 1 && path.endsWith("/") ? path.substring(0, path.length() - 1) : path;
        return PUBLIC.contains(p.startsWith("/v1/") ? p.substring(3) : p);
    }

    void handle(RoutingContext rc) {
        if (!publicPath(rc.normalizedPath())) {
            rc.next();
            return;
        }
        HttpServerResponse response = rc.response();
        // every public answer varies by Origin, so a shared cache never hands one origin's answer to another
        response.putHeader(HttpHeaders.VARY, "Origin");
        String origin = rc.request().getHeader(HttpHeaders.ORIGIN);
        if (origin == null) {
            rc.next();
            return;
        }
        if (!allows(origin)) {
            Http.fail(rc, new OpenAiError(403, "permission_error", null, "origin_not_allowed",
                    "this origin may not call the API (an administrator lists allowed web origins in DEEPSERVE_CORS_ORIGINS)", 0));
            return;
        }
        response.putHeader(HttpHeaders.ACCESS_CONTROL_ALLOW_ORIGIN, any ? "*" : origin);
        if (rc.request().method() == HttpMethod.OPTIONS && rc.request().getHeader(HttpHeaders.ACCESS_CONTROL_REQUEST_METHOD) != null) {
            response.putHeader(HttpHeaders.ACCESS_CONTROL_ALLOW_METHODS, "GET, POST, OPTIONS")
                    .putHeader(HttpHeaders.ACCESS_CONTROL_ALLOW_HEADERS, allowedOf(rc.request().getHeader(HttpHeaders.ACCESS_CONTROL_REQUEST_HEADERS)))
                    .putHeader(HttpHeaders.ACCESS_CONTROL_MAX_AGE, "600")
                    .setStatusCode(204).end();
            return;
        }
        response.putHeader(HttpHeaders.ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED);
        rc.next();
    }

    /** The requested headers this API accepts from a page (the SDKs' {@code x-stainless-*} among them); the rest left out, so the browser refuses them. */
    static String allowedOf(String requested) {
        if (requested == null || requested.length() > 2048) {
            return "authorization, content-type";
        }
        List<String> out = new ArrayList<>();
        for (String h : requested.split(",")) {
            String name = h.strip().toLowerCase(Locale.ROOT);
            if (HEADERS.contains(name) || name.startsWith("x-stainless-") && name.length() <= 64 && name.chars().allMatch(c -> c == '-' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9')) {
                out.add(name);
            }
        }
        return out.isEmpty() ? "authorization, content-type" : String.join(", ", out);
    }
}
