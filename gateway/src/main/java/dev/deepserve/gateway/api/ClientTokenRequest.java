package dev.deepserve.gateway.api;

import dev.deepserve.gateway.OpenAiError;
import dev.deepserve.gateway.auth.ApiKey;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;

/**
 * What a backend asks for when it mints a browser token ({@code POST /v1/client_tokens}), checked field by field
 * with a 400 naming the field: {@code origins} (1–16 exact origins, each allowed by DEEPSERVE_CORS_ORIGINS, or the
 * browser could not read an answer), {@code spend_limit} (required: what every use of the token together may cost,
 * a decimal string or number, at most 8 decimals), {@code expires_in} (seconds, 60–3600, default 600),
 * {@code models} (a subset of what the minting key may use; default: the same) and {@code max_tokens} (the most
 * output one request may ask for).
 */
public record ClientTokenRequest(List<String> origins, List<String> models, Integer maxTokens, BigDecimal spendLimit, int expiresIn) {

    static final int MAX_ORIGINS = 16;
    static final int MAX_MODELS = 32;
    static final int DEFAULT_EXPIRES_IN = 600;
    static final int MAX_EXPIRES_IN = 3600;
    static final BigDecimal MAX_SPEND = new BigDecimal("1000000");

    static ClientTokenRequest parse(JsonObject body, Cors cors, ApiKey parent, int maxMaxTokens) {
        List<String> origins = origins(body.getValue("origins"), cors);
        List<String> models = models(body.getValue("models"), parent);
        Integer maxTokens = wholeNumber(body, "max_tokens", 1, maxMaxTokens, "max_tokens must be an integer from 1 to " + maxMaxTokens);
        BigDecimal spend = spend(body.getValue("spend_limit"));
        Integer asked = wholeNumber(body, "expires_in", 60, MAX_EXPIRES_IN, "expires_in must be a whole number of seconds from 60 to " + MAX_EXPIRES_IN);
        int expiresIn = asked == null ? DEFAULT_EXPIRES_IN : asked;
        return new ClientTokenRequest(origins, models, maxTokens, spend, expiresIn);
    }

    /** An optional whole number within [min, max] (a JSON number with no fraction), or a 400 naming the field. */
    private static Integer wholeNumber(JsonObject body, String field, long min, long max, String message) {
        Object value = body.getValue(field);
        if (value == null) {
            return null;
        }
        if (!(value instanceof Number n) || n.doubleValue() != Math.rint(n.doubleValue()) || n.longValue() < min || n.longValue() > max) {
            throw OpenAiError.invalid(field, message);
        }
        return n.intValue();
    }

    private static List<String> origins(Object value, Cors cors) {
        if (!(value instanceof JsonArray list) || list.isEmpty() || list.size() > MAX_ORIGINS) {
            throw OpenAiError.invalid("origins", "origins must be a list of 1 to " + MAX_ORIGINS + " web origins (e.g. [\"https://app.example.com\"])");
        }
        LinkedHashSet<String> out = new LinkedHashSet<>();
        for (Object o : list) {
            if (!(o instanceof String s) || s.length() > Cors.MAX_ORIGIN || !Cors.ORIGIN.matcher(s).matches()) {
                throw OpenAiError.invalid("origins", "each origin must be scheme://host[:port] in lower case, with no path (a token for every origin is not issued)");
            }
            if (!cors.allows(s)) {
                throw OpenAiError.invalid("origins", "origin " + s + " is not allowed to call this API (DEEPSERVE_CORS_ORIGINS): a page there could not read the answers");
            }
            out.add(s);
        }
        return List.copyOf(out);
    }

    private static List<String> models(Object value, ApiKey parent) {
        if (value == null) {
            return parent.models();
        }
        if (!(value instanceof JsonArray list) || list.isEmpty() || list.size() > MAX_MODELS) {
            throw OpenAiError.invalid("models", "models must be a list of 1 to " + MAX_MODELS + " model names");
        }
        List<String> out = new ArrayList<>();
        for (Object m : list) {
            if (!(m instanceof String name) || !ModelNames.valid(name)) {
                throw OpenAiError.invalid("models", "each model must be a name of 1-" + ModelNames.MAX_LENGTH + " characters from A-Z a-z 0-9 . _ - : / @ +");
            }
            if (!parent.allows(name)) {
                throw OpenAiError.invalid("models", "this API key may not use model " + name + ", so neither may a token it mints");
            }
            if (!out.contains(name)) {
                out.add(name);
            }
        }
        return List.copyOf(out);
    }

    private static BigDecimal spend(Object value) {
        BigDecimal spend;
        try {
            spend = value instanceof String s && s.length() <= 40 ? new BigDecimal(s)
                    : value instanceof Number n && !(value instanceof Double d && (d.isNaN() || d.isInfinite())) ? new BigDecimal(n.toString()) : null;
        } catch (NumberFormatException e) {
            spend = null;
        }
        if (spend == null || spend.signum() <= 0 || spend.compareTo(MAX_SPEND) > 0 || spend.stripTrailingZeros().scale() > 8) {
            throw OpenAiError.invalid("spend_limit", "spend_limit is required: what all uses of the token together may cost, greater than 0, "
                    + "at most " + MAX_SPEND.toPlainString() + ", with at most 8 decimals (e.g. \"0.05\")");
        }
        return spend;
    }
}
