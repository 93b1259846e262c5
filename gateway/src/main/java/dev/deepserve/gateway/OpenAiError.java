package dev.deepserve.gateway;

import io.vertx.core.json.JsonObject;

/**
 * A failure answered in DeepSeek's error shape {@code {"error": {"message", "type", "param", "code"}}}. Messages
 * never contain a key or any part of one.
 */
public final class OpenAiError extends RuntimeException {

    public final int status;
    public final String type;
    public final String param;
    public final String code;
    public final long retryAfterSeconds;

    public OpenAiError(int status, String type, String param, String code, String message, long retryAfterSeconds) {
        super(message, null, false, false);
        this.status = status;
        this.type = type;
        this.param = param;
        this.code = code;
        this.retryAfterSeconds = retryAfterSeconds;
    }

    public static OpenAiError invalid(String param, String message) {
        return new OpenAiError(400, "invalid_request_error", param, "invalid_request_error", message, 0);
    }

    public static OpenAiError unprocessable(String param, String message) {
        return new OpenAiError(422, "invalid_request_error", param, "invalid_parameter", message, 0);
    }

    public static OpenAiError unauthorized(String message) {
        return new OpenAiError(401, "authentication_error", null, "invalid_api_key", message, 0);
    }

    public static OpenAiError modelNotAllowed(String model) {
        return new OpenAiError(403, "permission_error", "model", "model_not_allowed", "this API key may not use model " + model, 0);
    }

    public static OpenAiError insufficientBalance() {
        return new OpenAiError(402, "insufficient_balance", null, "insufficient_balance", "Insufficient Balance", 0);
    }

    public static OpenAiError rateLimited(String message, long retryAfter) {
        return new OpenAiError(429, "rate_limit_error", null, "rate_limit_exceeded", message, retryAfter);
    }

    public static OpenAiError unavailable(String message) {
        return new OpenAiError(503, "service_unavailable", null, "service_unavailable", message, 0);
    }

    public JsonObject body() {
        return new JsonObject().put("error", new JsonObject().put("message", getMessage()).put("type", type).put("param", param).put("code", code));
    }
}
