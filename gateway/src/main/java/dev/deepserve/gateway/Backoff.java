package dev.deepserve.gateway;

import java.util.concurrent.ThreadLocalRandom;

/**
 * The schedule of the gateway's own retries: exponential from {@code baseMillis}, doubling per attempt, never above
 * {@code maxMillis}. Used where the gateway waits and tries again by hand — a settlement PostgreSQL refused, a
 * usage-event batch it could not write, an engine not yet serving, an upstream that failed. (The wait for a
 * restarting tokenizer is a Mutiny {@code retry().withBackOff} on its call.)
 */
public record Backoff(long baseMillis, long maxMillis) {

    public Backoff {
        if (baseMillis <= 0 || maxMillis < baseMillis) {
            throw new IllegalArgumentException("backoff needs 0 < base <= max, not " + baseMillis + " and " + maxMillis);
        }
    }

    /** The wait before retry {@code attempt} (0 before the first retry): base × 2^attempt, capped at the maximum. */
    public long millis(int attempt) {
        return Math.min(maxMillis, baseMillis << Math.min(Math.max(attempt, 0), 20));
    }

    /**
     * {@link #millis} with "equal jitter": half of it fixed, the other half random, so replicas retrying the same
     * outage spread out instead of arriving together.
     */
    public long jittered(int attempt) {
        long ceiling = millis(attempt);
        long half = ceiling / 2;
        return half + ThreadLocalRandom.current().nextLong(ceiling - half + 1);
    }
}
