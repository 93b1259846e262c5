package dev.deepserve.tokenize.api;

import jakarta.ws.rs.WebApplicationException;
import jakarta.ws.rs.core.MediaType;
import jakarta.ws.rs.core.Response;

import java.util.LinkedHashMap;
import java.util.Map;

/** An error answered as {@code {"error": {"message", "type", "param", "code"}}}, the shape the public API uses too. */
public final class ApiError extends WebApplicationException {

    public ApiError(int status, String type, String param, String message) {
        super(message, Response.status(status).type(MediaType.APPLICATION_JSON).entity(body(message, type, param)).build());
    }

    public static ApiError badRequest(String param, String message) {
        return new ApiError(400, "invalid_request_error", param, message);
    }

    static Map<String, Object> body(String message, String type, String param) {
        Map<String, Object> error = new LinkedHashMap<>();
        error.put("message", message);
        error.put("type", type);
        error.put("param", param);
        error.put("code", null);
        return Map.of("error", error);
    }
}
