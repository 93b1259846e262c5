package dev.deepserve.gateway.api;

import dev.deepserve.gateway.OpenAiError;
import dev.deepserve.gateway.auth.ApiKey;
import dev.deepserve.gateway.auth.KeyStore;
import io.smallrye.mutiny.Uni;
import io.vertx.ext.web.RoutingContext;
import jakarta.enterprise.context.ApplicationScoped;

import java.time.Instant;
import java.util.function.Consumer;

/**
 * Who is calling: the {@code Authorization: Bearer} key of a request, checked against the key store (from its cache
 * when it can be, without a round trip), and a browser token's expiry and origins. A missing, invalid, revoked or
 * misplaced credential is answered 401 in the API's error shape.
 */
@ApplicationScoped
public class Authentication {

    private final KeyStore keys;

    Authentication(KeyStore keys) {
        this.keys = keys;
    }


    public Uni<ApiKey> authenticate(RoutingContext rc) {
        String header = rc.request().getHeader("Authorization");
        if (header == null || !header.regionMatches(true, 0, "Bearer ", 0, 7)) {
            return Uni.createFrom().failure(OpenAiError.unauthorized("Authentication Fails: send your API key as Authorization: Bearer <key>"));
        }
        return keys.find(header.substring(7).trim())
                .onFailure().transform(e -> OpenAiError.unavailable("key store unavailable"))
                .map(k -> k.orElseThrow(() -> OpenAiError.unauthorized("Authentication Fails: the API key is invalid or revoked")))
                .invoke(key -> fromItsOrigin(rc, key));
    }

    /**
     * A browser token is good only until it expires and only from the origins it was minted for: the request must
     * carry one of them as its {@code Origin} (a browser always sends it on a cross-origin fetch and a page cannot
     * forge it), so another site's page cannot use it. A non-browser client can send any Origin: what bounds a
     * token copied out of a page is its expiry, spend limit, models and output bound.
     */
    static void fromItsOrigin(RoutingContext rc, ApiKey key) {
        if (!key.browserToken()) {
            return;
        }
        if (key.browser().expired(Instant.now())) {
            throw OpenAiError.unauthorized("Authentication Fails: this browser token has expired");
        }
        String origin = rc.request().getHeader("Origin");
        if (origin == null || !key.browser().origins().contains(origin)) {
            throw OpenAiError.unauthorized("Authentication Fails: this browser token is not valid from "
                    + (origin == null ? "a request without an Origin" : "this origin"));
        }
    }

    /**
     * The API key of this request, handed to {@code then} — at once when the key is cached, else after reading it;
     * a missing, invalid or revoked key is answered with 401 here. A failure thrown by {@code then} is answered too.
     */
    public void authenticate(RoutingContext rc, Consumer<ApiKey> then) {
        String header = rc.request().getHeader("Authorization");
        ApiKey cached = header != null && header.regionMatches(true, 0, "Bearer ", 0, 7) ? keys.cached(header.substring(7).trim()) : null;
        if (cached != null) {
            try {
                fromItsOrigin(rc, cached);
            } catch (OpenAiError e) {
                Http.fail(rc, e);
                return;
            }
            run(rc, then, cached);
            return;
        }
        authenticate(rc).subscribe().with(key -> run(rc, then, key), t -> Http.fail(rc, t));
    }

    private static <T> void run(RoutingContext rc, Consumer<T> then, T value) {
        try {
            then.accept(value);
        } catch (RuntimeException e) {
            Http.fail(rc, e);
        }
    }
}
