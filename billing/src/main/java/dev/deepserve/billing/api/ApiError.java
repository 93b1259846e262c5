package dev.deepserve.billing.api;

import jakarta.ws.rs.WebApplicationException;
import jakarta.ws.rs.core.MediaType;
import jakarta.ws.rs.core.Response;

import java.util.LinkedHashMap;
import java.util.Map;

/** An error answered as {@code {"error": {"message", "type", "param", "code"}}}. */
public final class ApiError extends WebApplicationException {

    public ApiError(int status, String type, String message) {
        super(message, response(status, type, message));
    }

    public static ApiError badRequest(String message) {
        return new ApiError(400, "invalid_request_error", message);
    }

    public static ApiError notFound(String message) {
        return new ApiError(404, "invalid_request_error", message);
    }

    static Response response(int status, String type, String message) {
        Map<String, Object> error = new LinkedHashMap<>();
        error.put("message", message);
        error.put("type", type);
        error.put("param", null);
        error.put("code", null);
        return Response.status(status).type(MediaType.APPLICATION_JSON).entity(Map.of("error", error)).build();
    }
}
