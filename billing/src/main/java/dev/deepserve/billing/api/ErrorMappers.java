package dev.deepserve.billing.api;

import com.fasterxml.jackson.core.JsonProcessingException;
import jakarta.ws.rs.WebApplicationException;
import jakarta.ws.rs.core.Response;
import org.jboss.logging.Logger;
import org.jboss.resteasy.reactive.server.ServerExceptionMapper;

/** Every failure of the admin API becomes one JSON error body; no stack traces, no secrets. */
public class ErrorMappers {

    private static final Logger LOG = Logger.getLogger(ErrorMappers.class);

    @ServerExceptionMapper
    public Response web(WebApplicationException e) {
        if (e.getResponse().hasEntity()) {
            return e.getResponse();
        }
        int status = e.getResponse().getStatus();
        String message = e.getCause() instanceof JsonProcessingException j ? "request body is not valid JSON: " + j.getOriginalMessage()
                : status == 404 ? "no such endpoint" : status == 405 ? "method not allowed" : status == 415 ? "send Content-Type: application/json"
                : status == 400 ? "request body is not valid JSON" : e.getMessage();
        return ApiError.response(status, status >= 500 ? "server_error" : "invalid_request_error", message);
    }

    @ServerExceptionMapper
    public Response badJson(JsonProcessingException e) {
        return ApiError.response(400, "invalid_request_error", "request body is not valid JSON: " + e.getOriginalMessage());
    }

    @ServerExceptionMapper
    public Response unexpected(RuntimeException e) {
        if (e instanceof WebApplicationException w) {
            return web(w);
        }
        LOG.error("unexpected failure", e);
        return ApiError.response(500, "server_error", "internal error");
    }
}
