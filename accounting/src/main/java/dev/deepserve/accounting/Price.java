package dev.deepserve.accounting;

import java.math.BigDecimal;
import java.time.Instant;
import java.time.LocalTime;
import java.time.ZoneOffset;

/**
 * One row of the pricing catalog: a model's prices per 1M tokens for cache-hit input, cache-miss input and output,
 * in a currency, from {@code effectiveFrom} on; optionally only inside a daily UTC window [{@code windowStart},
 * {@code windowEnd}) that may wrap midnight (DeepSeek's off-peak 16:30–00:30).
 */
public record Price(String model, String currency, BigDecimal cacheHitPerMillion, BigDecimal cacheMissPerMillion,
                    BigDecimal outputPerMillion, Instant effectiveFrom, LocalTime windowStart, LocalTime windowEnd) {

    public Price {
        if (cacheHitPerMillion.signum() < 0 || cacheMissPerMillion.signum() < 0 || outputPerMillion.signum() < 0) {
            throw new IllegalArgumentException("prices of " + model + " must not be negative");
        }
        if (cacheHitPerMillion.compareTo(cacheMissPerMillion) > 0) {
            throw new IllegalArgumentException("the cache-hit price of " + model + " exceeds its cache-miss price");
        }
        if ((windowStart == null) != (windowEnd == null) || windowStart != null && windowStart.equals(windowEnd)) {
            throw new IllegalArgumentException("a price window of " + model + " needs a start and a different end");
        }
    }

    public boolean windowed() {
        return windowStart != null;
    }

    /** Whether a windowed price applies at this instant (UTC time of day). */
    public boolean covers(Instant when) {
        if (!windowed()) {
            return true;
        }
        LocalTime t = LocalTime.ofInstant(when, ZoneOffset.UTC);
        return windowStart.isBefore(windowEnd)
                ? !t.isBefore(windowStart) && t.isBefore(windowEnd)
                : !t.isBefore(windowStart) || t.isBefore(windowEnd);
    }

    /** The exact charge for a request's tokens, rounded once (see {@link Money}). */
    public BigDecimal cost(long cacheHitTokens, long cacheMissTokens, long outputTokens) {
        return Money.round(Money.tokens(cacheHitTokens, cacheHitPerMillion)
                .add(Money.tokens(cacheMissTokens, cacheMissPerMillion))
                .add(Money.tokens(outputTokens, outputPerMillion)));
    }
}
