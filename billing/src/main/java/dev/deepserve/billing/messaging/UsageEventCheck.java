package dev.deepserve.billing.messaging;

import dev.deepserve.accounting.StoredText;

import java.math.BigDecimal;

/**
 * What a usage event must be before it may touch the ledger: every text field bounded and storable (no control
 * characters, no unpaired surrogates — PostgreSQL's text and jsonb refuse a NUL), token counts and cost not
 * negative, cost within the ledger's NUMERIC(30,12), the completion time a plausible one. The gateway checks the
 * same at its edge; this is the last line.
 */
final class UsageEventCheck {

    static final int MAX_ID = 128;
    static final int MAX_MODEL = 256;

    private UsageEventCheck() {
    }

    /** Why the event cannot be applied, or null when it can. */
    static String problem(UsageEvent e) {
        if (e.eventId() == null) {
            return "event_id is missing";
        }
        String bad = firstBad("request_id", e.requestId(), MAX_ID, true);
        bad = bad != null ? bad : firstBad("account_id", e.accountId(), MAX_ID, true);
        bad = bad != null ? bad : firstBad("api_key_id", e.apiKeyId(), MAX_ID, false);
        bad = bad != null ? bad : firstBad("model", e.model(), MAX_MODEL, true);
        bad = bad != null ? bad : firstBad("finish_reason", e.finishReason(), 64, false);
        if (bad != null) {
            return bad;
        }
        if (e.currency() == null || !e.currency().matches("[A-Z]{3}")) {
            return "currency must be three capital letters";
        }
        if (e.promptCacheHitTokens() < 0 || e.promptCacheMissTokens() < 0 || e.completionTokens() < 0) {
            return "negative token count";
        }
        BigDecimal cost = e.cost();
        if (cost == null || cost.signum() < 0 || cost.precision() - cost.scale() > 18) {
            return "cost must be a non-negative amount below 10^18 (the ledger's NUMERIC(30,12))";
        }
        if (cost.stripTrailingZeros().scale() > 12) {
            return "cost has more than 12 decimals (the ledger's NUMERIC(30,12) would round it)";
        }
        if (e.completedAt() == null || e.completedAt().getYear() < 2000 || e.completedAt().getYear() > 9999) {
            return "completed_at must be a time between the years 2000 and 9999";
        }
        return null;
    }

    private static String firstBad(String field, String value, int max, boolean required) {
        if (value == null) {
            return required ? field + " is missing" : null;
        }
        if (value.isEmpty() && required || value.length() > max) {
            return field + " must have 1 to " + max + " characters";
        }
        String flaw = StoredText.flaw(value);
        return flaw == null ? null : field + " contains " + flaw;
    }
}
