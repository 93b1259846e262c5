package dev.deepserve.tokenize.api;

import com.fasterxml.jackson.core.JsonProcessingException;
import dev.deepserve.tokenize.domain.TokenizerHolder;
import jakarta.ws.rs.NotAllowedException;
import jakarta.ws.rs.NotFoundException;
import jakarta.ws.rs.NotSupportedException;
import jakarta.ws.rs.core.MediaType;
import jakarta.ws.rs.core.Response;
import org.jboss.logging.Logger;
import org.jboss.resteasy.reactive.server.ServerExceptionMapper;

/** Every failure becomes one JSON error body; nothing leaks a stack trace. */
public class ErrorMappers {

    private static final Logger LOG = Logger.getLogger(ErrorMappers.class);

    static Response error(int status, String type, String message) {
        return Response.status(status).type(MediaType.APPLICATION_JSON).entity(ApiError.body(message, type, null)).build();
    }

    @ServerExceptionMapper
    public Response unavailable(TokenizerHolder.Unavailable e) {
        return error(503, "service_unavailable", "tokenizer not available: " + e.getMessage());
    }

    @ServerExceptionMapper
    public Response badJson(JsonProcessingException e) {
        return error(400, "invalid_request_error", "request body is not valid JSON: " + e.getOriginalMessage());
    }

    @ServerExceptionMapper
    public Response notFound(NotFoundException e) {
        return error(404, "invalid_request_error", "no such endpoint");
    }

    @ServerExceptionMapper
    public Response notAllowed(NotAllowedException e) {
        return error(405, "invalid_request_error", "method not allowed");
    }

    @ServerExceptionMapper
    public Response unsupported(NotSupportedException e) {
        return error(415, "invalid_request_error", "send Content-Type: application/json");
    }

    @ServerExceptionMapper
    public Response unexpected(RuntimeException e) {
        if (e instanceof jakarta.ws.rs.WebApplicationException w) {
            if (w.getResponse().hasEntity()) {
                return w.getResponse();
            }
            int status = w.getResponse().getStatus();
            Throwable cause = w.getCause();
            String message = cause instanceof JsonProcessingException j ? "request body is not valid JSON: " + j.getOriginalMessage()
                    : status == 400 ? "request body is not valid JSON" : w.getMessage();
            return error(status, status >= 500 ? "server_error" : "invalid_request_error", message);
        }
        LOG.error("unexpected failure", e);
        return error(500, "server_error", "internal error");
    }
}
