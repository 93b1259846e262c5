package dev.deepserve.gateway.upstream;

import dev.deepserve.gateway.config.GatewayConfig;
import io.quarkus.runtime.StartupEvent;
import io.quarkus.scheduler.Scheduled;
import io.smallrye.mutiny.Uni;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import io.vertx.core.http.HttpClient;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpMethod;
import io.vertx.core.http.RequestOptions;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import org.eclipse.microprofile.config.ConfigProvider;
import org.jboss.logging.Logger;

import java.net.URI;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.function.Function;
import java.util.regex.Pattern;

/**
 * The upstream providers the gateway routes to: those named in {@code DEEPSERVE_UPSTREAMS} and those added through
 * the admin API (kept in {@code gateway.upstreams}, so every replica and every restart sees them). Each upstream's
 * model list is re-read periodically; a model {@code name/model} routes to upstream {@code name} even when the list
 * is stale (the upstream itself then answers for an unknown model).
 */
@ApplicationScoped
public class UpstreamRegistry {

    private static final Logger LOG = Logger.getLogger(UpstreamRegistry.class);
    private static final Pattern NAME = Pattern.compile("[A-Za-z0-9][A-Za-z0-9_.-]{0,62}");

    /** Where one request goes: an upstream and the model name it knows. */
    public record Route(Upstream upstream, String model) {
        public String id() {
            return upstream.name() + "/" + model;
        }
    }

    private final GatewayConfig config;
    private final Pool pool;
    private final HttpClientOptions httpOptions;
    private final HttpClient http;
    private final Map<Thread, HttpClient> perLoop = new java.util.concurrent.ConcurrentHashMap<>();
    private final Function<String, String> env;
    private final Vertx vertx;
    private final Map<String, Upstream> upstreams = new ConcurrentSkipListMap<>();
    private final Map<String, String> fallbacks;

    UpstreamRegistry(GatewayConfig config, Pool pool, Vertx vertx) {
        this.config = config;
        this.pool = pool;
        this.vertx = vertx;
        // env vars through MicroProfile Config, so DEEPSERVE_UPSTREAM_X_API_KEY may also come from any config source
        this.env = name -> ConfigProvider.getConfig().getOptionalValue(name, String.class).orElse(null);
        GatewayConfig.Proxy p = config.proxy();
        // each event loop has its own pool (see http()), with its share of the connections
        int loops = 0;
        for (var loop : ((io.vertx.core.impl.VertxInternal) vertx).getEventLoopGroup()) {
            loops++;
        }
        int perLoopConnections = Math.max(1, (p.maxConnections() + loops - 1) / Math.max(1, loops));
        // no trace context (or a client's baggage) leaves for a third party: these calls are not traced by Vert.x
        this.httpOptions = new HttpClientOptions().setMaxPoolSize(perLoopConnections).setKeepAlive(true)
                .setConnectTimeout((int) p.connectTimeout().toMillis()).setTcpNoDelay(true).setTryUseCompression(false)
                .setTracingPolicy(io.vertx.core.tracing.TracingPolicy.IGNORE);
        this.http = vertx.createHttpClient(httpOptions);
        for (Map.Entry<String, URI> e : parse(config.upstreams().orElse("")).entrySet()) {
            upstreams.put(e.getKey(), create(e.getKey(), e.getValue(), env.apply(keyEnv(e.getKey())), "config"));
        }
        this.fallbacks = parseFallbacks(config.upstreamFallbacks().orElse(""));
    }

    /**
     * The client for upstream calls made on this thread. Each event loop has a client of its own, whose connections
     * live on that loop, so a request's upstream exchange runs on the loop that serves its client. One shared pool
     * lends the most recently used connection, whichever loop it lives on: the exchange then hops between threads
     * both ways.
     */
    public HttpClient http() {
        io.vertx.core.Context context = Vertx.currentContext();
        if (context == null || !context.isEventLoopContext()) {
            return http;
        }
        return perLoop.computeIfAbsent(Thread.currentThread(), t -> vertx.createHttpClient(httpOptions));
    }

    /** {@code name=url,name=url} → names in order with their base URLs; a malformed entry fails with a one-line message. */
    static Map<String, URI> parse(String spec) {
        Map<String, URI> out = new LinkedHashMap<>();
        for (String part : spec.split(",")) {
            String entry = part.trim();
            if (entry.isEmpty()) {
                continue;
            }
            int eq = entry.indexOf('=');
            if (eq <= 0) {
                throw new IllegalArgumentException("DEEPSERVE_UPSTREAMS: '" + entry + "' is not name=url");
            }
            String name = entry.substring(0, eq).trim();
            out.put(checkName(name), checkUrl(name, entry.substring(eq + 1).trim()));
        }
        return out;
    }

    static String checkName(String name) {
        if (!NAME.matcher(name).matches()) {
            throw new IllegalArgumentException("upstream name '" + name + "' must be letters, digits, '_', '.' or '-' (at most 63, no '/')");
        }
        return name;
    }

    static URI checkUrl(String name, String url) {
        URI uri;
        try {
            uri = URI.create(url);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("upstream " + name + ": '" + url + "' is not a URL");
        }
        if (!("http".equalsIgnoreCase(uri.getScheme()) || "https".equalsIgnoreCase(uri.getScheme())) || uri.getHost() == null
                || uri.getUserInfo() != null || uri.getQuery() != null) {
            throw new IllegalArgumentException("upstream " + name + ": '" + url + "' must be an http(s) base URL without credentials or query");
        }
        return uri;
    }

    private java.util.Set<String> allowedHttpHosts() {
        java.util.Set<String> hosts = new java.util.HashSet<>();
        for (String h : config.upstreamAllowHttpHosts().orElse("").split(",")) {
            if (!h.isBlank()) {
                hosts.add(h.strip().toLowerCase(Locale.ROOT));
            }
        }
        return hosts;
    }

    /** Refuses a host that is, or resolves to, a link-local or unspecified address (169.254.169.254 and the like). */
    static void refuseLinkLocal(String name, String host) {
        java.net.InetAddress[] addresses;
        try {
            addresses = java.net.InetAddress.getAllByName(host.startsWith("[") ? host.substring(1, host.length() - 1) : host);
        } catch (java.net.UnknownHostException e) {
            throw new IllegalArgumentException("upstream " + name + ": host " + host + " does not resolve");
        }
        for (java.net.InetAddress a : addresses) {
            if (a.isLinkLocalAddress() || a.isAnyLocalAddress() || a.isMulticastAddress()) {
                throw new IllegalArgumentException("upstream " + name + ": " + host + " is a link-local or unspecified address (" + a.getHostAddress()
                        + "); upstreams may not point there");
            }
        }
    }

    static Map<String, String> parseFallbacks(String spec) {
        Map<String, String> out = new LinkedHashMap<>();
        for (String part : spec.split(",")) {
            String entry = part.trim();
            if (entry.isEmpty()) {
                continue;
            }
            int eq = entry.indexOf('=');
            if (eq <= 0 || eq == entry.length() - 1) {
                throw new IllegalArgumentException("DEEPSERVE_UPSTREAM_FALLBACKS: '" + entry + "' is not from=to");
            }
            String from = entry.substring(0, eq).trim();
            String to = entry.substring(eq + 1).trim();
            if (from.contains("/") != to.contains("/")) {
                throw new IllegalArgumentException("DEEPSERVE_UPSTREAM_FALLBACKS: '" + entry + "' must map an upstream to an upstream or a model to a model");
            }
            out.put(from, to);
        }
        return out;
    }

    /** The env var holding an upstream's API key: {@code DEEPSERVE_UPSTREAM_<NAME>_API_KEY}. */
    public static String keyEnv(String name) {
        return "DEEPSERVE_UPSTREAM_" + name.toUpperCase(Locale.ROOT).replaceAll("[^A-Z0-9]", "_") + "_API_KEY";
    }

    private Upstream create(String name, URI base, String key, String source) {
        GatewayConfig.Proxy p = config.proxy();
        return new Upstream(name, base, key, source, new CircuitBreaker(p.breakerFailures(), p.breakerOpen().toNanos()));
    }

    void start(@Observes StartupEvent ev) {
        if (!upstreams.isEmpty()) {
            LOG.infof("upstream providers: %s", upstreams.values());
        }
        // on a Vert.x context: client requests made from the main thread can stall (see DecodePicker)
        vertx.runOnContext(v -> refresh().subscribe().with(x -> { }, e -> LOG.warnf("upstream refresh failed: %s", e.getMessage())));
    }

    public List<Upstream> all() {
        return List.copyOf(upstreams.values());
    }

    public Optional<Upstream> get(String name) {
        return Optional.ofNullable(upstreams.get(name));
    }

    /** The route for a model name of the form {@code upstream/model}, when that upstream exists. */
    public Optional<Route> route(String model) {
        int slash = model.indexOf('/');
        if (slash <= 0 || slash == model.length() - 1) {
            return Optional.empty();
        }
        Upstream u = upstreams.get(model.substring(0, slash));
        return u == null ? Optional.empty() : Optional.of(new Route(u, model.substring(slash + 1)));
    }

    /** The route for a model followed by its fallbacks, in order (no cycles). */
    public List<Route> chain(String model) {
        List<Route> out = new ArrayList<>();
        String current = model;
        while (current != null && out.size() < 8) {
            Optional<Route> r = route(current);
            if (r.isEmpty() || out.contains(r.get())) {
                break;
            }
            out.add(r.get());
            String next = fallbacks.get(current);
            if (next == null) {
                String byUpstream = fallbacks.get(r.get().upstream().name());
                next = byUpstream == null ? null : byUpstream + "/" + r.get().model();
            }
            current = next;
        }
        return out;
    }

    /**
     * Adds (or replaces) an admin-defined upstream. The admin key must not be a way to the provider keys: an upstream's
     * key can only come from its own variable, {@code DEEPSERVE_UPSTREAM_<NAME>_API_KEY} (so a key cannot be paired
     * with a URL of the admin's choosing under another name), its URL must be https unless the operator allowed the
     * host for http, and it must not point at a link-local address (cloud metadata services live there).
     * Redirects are never followed, so a key never travels to where a redirect points.
     */
    public Uni<Upstream> add(String name, String url, String keyEnv) {
        checkName(name);
        Upstream existing = upstreams.get(name);
        if (existing != null && existing.source().equals("config")) {
            throw new IllegalStateException("upstream " + name + " is defined by DEEPSERVE_UPSTREAMS; change it there");
        }
        URI base = checkUrl(name, url);
        if (keyEnv != null && !keyEnv.equals(keyEnv(name))) {
            throw new IllegalArgumentException("api_key_env of upstream " + name + " can only be " + keyEnv(name) + " (each key is bound to its upstream)");
        }
        if (!"https".equalsIgnoreCase(base.getScheme()) && !allowedHttpHosts().contains(base.getHost().toLowerCase(Locale.ROOT))) {
            throw new IllegalArgumentException("upstream " + name + ": base_url must be https (or its host listed in DEEPSERVE_UPSTREAM_ALLOW_HTTP_HOSTS)");
        }
        refuseLinkLocal(name, base.getHost());
        return pool.preparedQuery("""
                        INSERT INTO gateway.upstreams (name, base_url, api_key_env) VALUES ($1, $2, $3)
                        ON CONFLICT (name) DO UPDATE SET base_url = EXCLUDED.base_url, api_key_env = EXCLUDED.api_key_env""")
                .execute(Tuple.of(name, base.toString(), keyEnv))
                .chain(() -> {
                    Upstream u = create(name, base, keyEnv == null ? null : env.apply(keyEnv), "admin");
                    upstreams.put(name, u);
                    return listModels(u).replaceWith(u);
                });
    }

    /** Removes an admin-defined upstream; false when there is none of that name. */
    public Uni<Boolean> remove(String name) {
        Upstream existing = upstreams.get(name);
        if (existing != null && existing.source().equals("config")) {
            throw new IllegalStateException("upstream " + name + " is defined by DEEPSERVE_UPSTREAMS; change it there");
        }
        return pool.preparedQuery("DELETE FROM gateway.upstreams WHERE name = $1").execute(Tuple.of(name))
                .map(rows -> {
                    upstreams.remove(name);
                    return rows.rowCount() > 0 || existing != null;
                });
    }

    /** Re-reads the admin-defined upstreams and every upstream's model list. */
    @Scheduled(every = "${deepserve.proxy.refresh:60s}", delayed = "${deepserve.proxy.refresh:60s}",
            concurrentExecution = Scheduled.ConcurrentExecution.SKIP)
    Uni<Void> refresh() {
        return pool.query("SELECT name, base_url, api_key_env FROM gateway.upstreams").execute()
                .invoke(rows -> {
                    Map<String, Row> stored = new LinkedHashMap<>();
                    rows.forEach(r -> stored.put(r.getString("name"), r));
                    upstreams.values().removeIf(u -> u.source().equals("admin") && !stored.containsKey(u.name()));
                    for (Row r : stored.values()) {
                        Upstream u = upstreams.get(r.getString("name"));
                        if (u != null && u.source().equals("config")) {
                            continue;
                        }
                        // a stored variable other than the upstream's own (an older row) gives it no key
                        String keyEnv = keyEnv(r.getString("name")).equals(r.getString("api_key_env")) ? r.getString("api_key_env") : null;
                        URI base = URI.create(r.getString("base_url"));
                        if (u == null || !u.base().equals(base)) {
                            upstreams.put(r.getString("name"), create(r.getString("name"), base, keyEnv == null ? null : env.apply(keyEnv), "admin"));
                        }
                    }
                })
                .onFailure().invoke(e -> LOG.warnf("could not read admin-defined upstreams: %s", e.getMessage()))
                .onFailure().recoverWithNull()
                .chain(() -> {
                    List<Uni<Void>> listings = upstreams.values().stream().map(this::listModels).toList();
                    return listings.isEmpty() ? Uni.createFrom().voidItem() : Uni.join().all(listings).andFailFast().replaceWithVoid();
                });
    }

    private Uni<Void> listModels(Upstream u) {
        RequestOptions get = new RequestOptions().setMethod(HttpMethod.GET).setHost(u.base().getHost()).setPort(u.port()).setSsl(u.tls())
                .setURI(u.pathPrefix() + "/models").setIdleTimeout(config.proxy().connectTimeout().toMillis() * 2);
        if (u.authorization() != null) {
            get.putHeader("Authorization", u.authorization());
        }
        Future<List<String>> listed = http.request(get).compose(req -> req.send()).compose(resp -> resp.body().map(body -> {
            if (resp.statusCode() != 200) {
                throw new IllegalStateException("GET /models answered " + resp.statusCode());
            }
            List<String> ids = new ArrayList<>();
            JsonArray data = new JsonObject(body).getJsonArray("data", new JsonArray());
            for (int i = 0; i < data.size(); i++) {
                // a name our clients could not send, or the ledger should not hold, is not offered
                if (data.getValue(i) instanceof JsonObject m && m.getValue("id") instanceof String id
                        && dev.deepserve.gateway.api.ModelNames.valid(u.name() + "/" + id)) {
                    ids.add(id);
                }
            }
            return ids;
        }));
        return Uni.createFrom().completionStage(listed.toCompletionStage())
                .invoke(ids -> u.models(ids, null))
                .onFailure().invoke(e -> {
                    u.models(null, e.getMessage());
                    LOG.warnf("upstream %s: could not list models (%s)", u.name(), e.getMessage());
                })
                .onFailure().recoverWithNull()
                .replaceWithVoid();
    }
}
