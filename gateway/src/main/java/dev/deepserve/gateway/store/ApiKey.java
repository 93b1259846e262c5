package dev.deepserve.gateway.store;

import java.util.List;

/** A verified API key with its account and limits (the secret itself is never held past the lookup). */
public record ApiKey(String id, String accountId, String currency, List<String> models, Integer rpm, Integer tpm, java.math.BigDecimal spendCap) {

    public boolean allows(String model) {
        return models == null || models.contains(model);
    }

    /** Whether requests on this key are counted against per-minute limits. */
    public boolean rateLimited() {
        return rpm != null || tpm != null;
    }
}
