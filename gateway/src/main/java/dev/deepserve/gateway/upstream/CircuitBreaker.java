package dev.deepserve.gateway.upstream;

/**
 * Consecutive-failure circuit breaker for one upstream: after {@code threshold} failures in a row it opens and
 * refuses requests for {@code openNanos}; then it lets exactly one trial request through (half-open), whose success
 * closes it and whose failure opens it again. Thread-safe; the clock is passed in so tests control time.
 */
public final class CircuitBreaker {

    public enum State { CLOSED, OPEN, HALF_OPEN }

    private final int threshold;
    private final long openNanos;
    private int failures;
    private long openedAt;
    private State state = State.CLOSED;
    private boolean trialOut;

    public CircuitBreaker(int threshold, long openNanos) {
        this.threshold = Math.max(1, threshold);
        this.openNanos = openNanos;
    }

    /** Whether a request may go to the upstream now; in half-open state only the first caller gets a yes. */
    public synchronized boolean tryAcquire(long now) {
        switch (state) {
            case CLOSED -> {
                return true;
            }
            case OPEN -> {
                if (now - openedAt < openNanos) {
                    return false;
                }
                state = State.HALF_OPEN;
                trialOut = true;
                return true;
            }
            default -> {
                if (trialOut) {
                    return false;
                }
                trialOut = true;
                return true;
            }
        }
    }

    public synchronized void success() {
        failures = 0;
        trialOut = false;
        state = State.CLOSED;
    }

    public synchronized void failure(long now) {
        failures++;
        trialOut = false;
        if (state == State.HALF_OPEN || failures >= threshold) {
            state = State.OPEN;
            openedAt = now;
        }
    }

    public synchronized State state(long now) {
        return state == State.OPEN && now - openedAt >= openNanos ? State.HALF_OPEN : state;
    }
}
