package dev.deepserve.gateway.api;

import dev.deepserve.gateway.OpenAiError;
import io.vertx.core.http.HttpServerResponse;
import io.vertx.core.json.JsonObject;
import io.vertx.ext.web.RoutingContext;
import org.jboss.logging.Logger;

/** How every route reads a JSON body and answers a failure: in DeepSeek's error shape, or by ending a stream already begun. */
public final class Http {

    private static final Logger LOG = Logger.getLogger(Http.class);

    private Http() {
    }

    /** Answers a failure in DeepSeek's error shape (or just ends a response whose head is already out). */
    public static void fail(RoutingContext rc, Throwable t) {
        HttpServerResponse r = rc.response();
        if (r.headWritten()) {
            if (!r.ended()) {
                r.end();
            }
            return;
        }
        OpenAiError e = t instanceof OpenAiError o ? o : null;
        if (e == null) {
            LOG.errorf("request failed: %s", t.toString());
            e = new OpenAiError(500, "server_error", null, "internal_error", "internal error", 0);
        }
        r.setStatusCode(e.status).putHeader("Content-Type", "application/json");
        if (e.retryAfterSeconds > 0) {
            r.putHeader("Retry-After", String.valueOf(e.retryAfterSeconds));
        }
        r.end(e.body().encode());
    }

    /** A request's body as a JSON object, or a 400 in the API's error shape. */
    public static JsonObject jsonBody(RoutingContext rc) {
        JsonObject body;
        try {
            body = rc.body().asJsonObject();
        } catch (RuntimeException e) {
            body = null;
        }
        if (body == null) {
            throw OpenAiError.invalid(null, "request body must be a JSON object");
        }
        return body;
    }
}
