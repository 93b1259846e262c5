package dev.deepserve.gateway.api;

import dev.deepserve.gateway.OpenAiError;
import dev.deepserve.gateway.auth.BrowserTokens;
import dev.deepserve.gateway.config.GatewayConfig;
import dev.deepserve.gateway.metering.Metering;
import dev.deepserve.accounting.Money;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import io.vertx.ext.web.Router;
import io.vertx.ext.web.RoutingContext;
import io.vertx.ext.web.handler.BodyHandler;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;

/**
 * {@code POST /v1/client_tokens} (and without {@code /v1}): a backend, with its own API key, mints a short-lived
 * browser token for a web page — bound to origins, models, a per-request output bound and a spend limit, billed to
 * the key's account, revoked with the key. A browser token cannot mint another, and this path has no CORS: a page
 * never holds the key that mints.
 */
@ApplicationScoped
public class ClientTokenRoutes {

    private final Metering metering;
    private final Authentication authentication;
    private final BrowserTokens tokens;
    private final Cors cors;
    private final GatewayConfig config;

    ClientTokenRoutes(Metering metering, Authentication authentication, BrowserTokens tokens, Cors cors, GatewayConfig config) {
        this.metering = metering;
        this.authentication = authentication;
        this.tokens = tokens;
        this.cors = cors;
        this.config = config;
    }

    void routes(@Observes Router router) {
        BodyHandler body = BodyHandler.create(false).setBodyLimit(64 << 10);
        for (String prefix : new String[] {"", "/v1"}) {
            router.post(prefix + "/client_tokens").handler(body).handler(this::mint);
        }
    }

    /** The key first (a browser token is refused), then the body, then one insert. */
    private void mint(RoutingContext rc) {
        authentication.authenticate(rc, parent -> {
            if (parent.browserToken()) {
                throw new OpenAiError(403, "permission_error", null, "browser_token_cannot_mint", "a browser token cannot mint another token", 0);
            }
            if (parent.spendCap() != null) {
                throw OpenAiError.invalid(null, "this API key has a spend cap; mint browser tokens with a key without one "
                        + "(each token's spend_limit bounds what it may spend)");
            }
            ClientTokenRequest ask = ClientTokenRequest.parse(Http.jsonBody(rc), cors, parent, config.maxMaxTokens());
            // a mint counts as a request against the key's rate limit
            metering.admit(parent, 0).chain(() -> tokens.mint(parent, ask.origins(), ask.models(), ask.maxTokens(), ask.spendLimit(), ask.expiresIn()))
                    .subscribe().with(outcome -> {
                if (outcome instanceof BrowserTokens.Refused refused) {
                    Http.fail(rc, refused.revoked() ? OpenAiError.unauthorized("Authentication Fails: the API key is invalid or revoked")
                            : OpenAiError.rateLimited("this API key already has " + BrowserTokens.MAX_LIVE_PER_KEY
                                    + " unexpired browser tokens; mint more as they expire", 60));
                    return;
                }
                BrowserTokens.Minted m = (BrowserTokens.Minted) outcome;
                JsonObject out = new JsonObject().put("object", "client_token").put("id", m.id()).put("client_token", m.secret())
                        .put("expires_at", m.expiresAt().getEpochSecond()).put("origins", new JsonArray(ask.origins()))
                        .put("models", ask.models() == null ? null : new JsonArray(ask.models())).put("max_tokens", ask.maxTokens())
                        .put("spend_limit", Money.plain(ask.spendLimit()));
                rc.response().setStatusCode(200).putHeader("Content-Type", "application/json").putHeader("Cache-Control", "no-store").end(out.encode());
            }, t -> Http.fail(rc, t instanceof OpenAiError e ? e : OpenAiError.unavailable("key store unavailable")));
        });
    }
}
