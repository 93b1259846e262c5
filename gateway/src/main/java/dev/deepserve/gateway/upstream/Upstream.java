package dev.deepserve.gateway.upstream;

import java.net.URI;
import java.util.List;

/**
 * One upstream provider: its base URL (the part before {@code /chat/completions}), its API key (held only here,
 * never printed: {@link #toString} leaves it out), the models it last listed, and its circuit breaker.
 */
public final class Upstream {

    private final String name;
    private final URI base;
    private final String apiKey;
    private final String source;
    private final CircuitBreaker breaker;
    private final String pathPrefix;
    private final String authorization;
    private volatile List<String> models = List.of();
    private volatile String listError;

    Upstream(String name, URI base, String apiKey, String source, CircuitBreaker breaker) {
        this.name = name;
        this.base = base;
        this.apiKey = apiKey == null || apiKey.isBlank() ? null : apiKey;
        this.source = source;
        this.breaker = breaker;
        String p = base.getRawPath();
        int end = p == null ? 0 : p.length();
        while (end > 0 && p.charAt(end - 1) == '/') {
            end--;
        }
        this.pathPrefix = end == 0 ? "" : p.substring(0, end);
        this.authorization = this.apiKey == null ? null : "Bearer " + this.apiKey;
    }

    public String name() {
        return name;
    }

    public URI base() {
        return base;
    }

    /** Where it was defined: {@code config} (DEEPSERVE_UPSTREAMS) or {@code admin} (the admin API). */
    public String source() {
        return source;
    }

    public CircuitBreaker breaker() {
        return breaker;
    }

    public boolean hasKey() {
        return apiKey != null;
    }

    /** The Authorization header value for this upstream, or null when it needs none. */
    String authorization() {
        return authorization;
    }

    public List<String> models() {
        return models;
    }

    void models(List<String> listed, String error) {
        if (listed != null) {
            models = List.copyOf(listed);
        }
        listError = error;
    }

    /** Why the last model listing failed, or null. */
    public String listError() {
        return listError;
    }

    /** Path prefix of the base URL without a trailing slash ("" or e.g. "/v1"). */
    String pathPrefix() {
        return pathPrefix;
    }

    int port() {
        return base.getPort() > 0 ? base.getPort() : "https".equalsIgnoreCase(base.getScheme()) ? 443 : 80;
    }

    boolean tls() {
        return "https".equalsIgnoreCase(base.getScheme());
    }

    /** The text with this upstream's own key, wherever it appears, replaced (whatever shape the key has). */
    public String redact(String text) {
        return text == null || apiKey == null || apiKey.length() < 4 ? text : text.replace(apiKey, "[redacted]");
    }

    @Override
    public String toString() {
        return name + "=" + base + (apiKey != null ? " (with API key)" : "");
    }
}
