package dev.deepserve.internal;

import io.vertx.core.Handler;
import io.vertx.core.http.RequestOptions;
import io.vertx.ext.web.RoutingContext;

import java.util.Optional;

/**
 * The first handler of an internal service's router: every route but the health and metrics probes ({@code /q/...},
 * for the kubelet and Prometheus) needs the service credential. A refused call gets its status and a one-line error in
 * the OpenAI shape before its body is read.
 */
public final class InternalGuard implements Handler<RoutingContext> {

    /** The first order there is: before every other route, Quarkus' own body handler (MIN_VALUE + 1) included. */
    public static final int ORDER = Integer.MIN_VALUE;

    private final Optional<InternalToken> token;

    public InternalGuard(Optional<InternalToken> token) {
        this.token = token;
    }

    /** A guard over the token configured as {@code deepserve.internal-token} (refused at start when unfit). */
    public static InternalGuard configured(Optional<String> value) {
        return new InternalGuard(InternalToken.configured(value.orElse(null)));
    }

    /** An internal call's request options carrying the configured token (unchanged when none is configured). */
    public static RequestOptions withCredential(RequestOptions request, Optional<String> token) {
        token.filter(t -> !t.isBlank()).ifPresent(t -> request.putHeader(InternalToken.HEADER, t.strip()));
        return request;
    }

    @Override
    public void handle(RoutingContext rc) {
        if (rc.normalizedPath().startsWith("/q/")) {
            rc.next();
            return;
        }
        InternalToken.Refusal refusal = InternalToken.check(token, rc.request().getHeader(InternalToken.HEADER));
        if (refusal == null) {
            rc.next();
            return;
        }
        String type = switch (refusal.status()) {
            case 401 -> "authentication_error";
            case 403 -> "permission_error";
            default -> "service_unavailable";
        };
        rc.response().setStatusCode(refusal.status()).putHeader("Content-Type", "application/json")
                .end("{\"error\":{\"message\":\"" + refusal.message() + "\",\"type\":\"" + type + "\",\"code\":null}}");
    }
}
