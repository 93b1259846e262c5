package dev.deepserve.billing.api;

import com.fasterxml.jackson.databind.JsonNode;
import dev.deepserve.accounting.StoredText;

import java.math.BigDecimal;

/**
 * Reading the admin API's JSON bodies, hostile ones included: strings are bounded and free of control characters
 * and unpaired surrogates (PostgreSQL refuses a NUL byte, and half a character cannot be stored), money is read
 * exactly (never through a double). Every refusal is a 400 naming the field.
 */
final class AdminInput {

    static final int MAX_TEXT = 200;

    private AdminInput() {
    }

    static JsonNode object(JsonNode body) {
        if (body == null || !body.isObject()) {
            throw ApiError.badRequest("request body must be a JSON object");
        }
        return body;
    }

    static String text(JsonNode body, String field, boolean required) {
        JsonNode v = object(body).get(field);
        if (v == null || v.isNull()) {
            if (required) {
                throw ApiError.badRequest(field + " is required");
            }
            return null;
        }
        if (!v.isTextual() || v.asText().isBlank() || v.asText().length() > MAX_TEXT) {
            throw ApiError.badRequest(field + " must be a non-empty string of at most " + MAX_TEXT + " characters");
        }
        String s = v.asText();
        if (!printable(s)) {
            throw ApiError.badRequest(field + " must not contain control characters or unpaired surrogates");
        }
        return s;
    }

    /** No C0/C1 control characters and every surrogate paired. */
    static boolean printable(String s) {
        return StoredText.flaw(s) == null;
    }

    /** Money in requests: a decimal string ("10.50") or a JSON number, read exactly. */
    static BigDecimal amount(JsonNode v, String field) {
        if (v == null || v.isNull()) {
            throw ApiError.badRequest(field + " is required");
        }
        try {
            if (v.isTextual() && v.asText().length() <= 64) {
                return new BigDecimal(v.asText().trim());
            }
            if (v.isNumber()) {
                return v.decimalValue();
            }
        } catch (NumberFormatException e) {
            // fall through
        }
        throw ApiError.badRequest(field + " must be a decimal amount such as \"10.00\"");
    }

    /** The currencies accounts and prices may be in. */
    static final java.util.Set<String> CURRENCIES = java.util.Set.of("USD", "CNY", "EUR");

    /** The body's {@code currency} (USD when absent), one of {@link #CURRENCIES}, else a 400. */
    static String currency(JsonNode body) {
        String currency = body.hasNonNull("currency") ? text(body, "currency", true) : "USD";
        if (!CURRENCIES.contains(currency)) {
            throw ApiError.badRequest("currency must be one of " + CURRENCIES.stream().sorted().toList());
        }
        return currency;
    }
}
