package dev.deepserve.gateway.auth;

import java.time.Instant;
import java.util.List;

/**
 * A verified API key with its account and limits (the secret itself is never held past the lookup); {@code browser}
 * is set when the key is a browser token, and says what binds it.
 */
public record ApiKey(String id, String accountId, String currency, List<String> models, Integer rpm, Integer tpm, java.math.BigDecimal spendCap,
                     Browser browser) {

    public ApiKey(String id, String accountId, String currency, List<String> models, Integer rpm, Integer tpm, java.math.BigDecimal spendCap) {
        this(id, accountId, currency, models, rpm, tpm, spendCap, null);
    }

    /**
     * What a browser token was minted with: the key that minted it, when it expires, the exact origins that may use
     * it, and the most output tokens one request may ask for (null: the gateway's own bound).
     */
    public record Browser(String parentKeyId, Instant expiresAt, List<String> origins, Integer maxTokens) {
        public boolean expired(Instant now) {
            return !now.isBefore(expiresAt);
        }
    }

    public boolean allows(String model) {
        return models == null || models.contains(model);
    }

    /** Whether requests on this key are counted against per-minute limits. */
    public boolean rateLimited() {
        return rpm != null || tpm != null;
    }

    public boolean browserToken() {
        return browser != null;
    }

    /**
     * Whose rate limits and concurrent-stream slots this key's requests count against: a browser token shares the
     * key that minted it (minting many tokens must not multiply that key's limits).
     */
    public String limitId() {
        return browser != null ? browser.parentKeyId() : id;
    }
}
