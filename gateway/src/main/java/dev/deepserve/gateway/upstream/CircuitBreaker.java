package dev.deepserve.gateway.upstream;

/**
 * Consecutive-failure circuit breaker for one upstream: after {@code threshold} failures in a row it opens and
 * refuses requests for {@code openNanos}; then it lets exactly one trial request through (half-open), whose success
 * closes it and whose failure opens it again.
 *
 * <p>A trial whose outcome never comes — its client left before the upstream answered — must not hold the breaker
 * half-open for ever: its holder gives the permit back with {@link #abandon}, and a trial out for longer than
 * {@code openNanos} is presumed lost, so another request may try. Permits are numbered so that a late abandon or
 * outcome of an old trial cannot end a newer one, and outcomes of requests admitted while it was closed cannot
 * reopen or close it once it has opened. Thread-safe; the clock is passed in so tests control time.
 *
 * <p>Hand-written rather than SmallRye Fault Tolerance's guard: an upstream stream that breaks after its 200 must
 * count as a failure, which happens after a guarded call has returned (bench/results/2026-12-04-resilience.txt).
 */
public final class CircuitBreaker {

    public enum State { CLOSED, OPEN, HALF_OPEN }

    /** {@link #tryAcquire}'s answer when the circuit refuses the request. */
    public static final long DENIED = -1;
    /** {@link #tryAcquire}'s answer for an ordinary request through a closed circuit. */
    public static final long PASS = 0;

    private final int threshold;
    private final long openNanos;
    private int failures;
    private long openedAt;
    private State state = State.CLOSED;
    private long trial;
    private long trialSince;
    private long trials;

    public CircuitBreaker(int threshold, long openNanos) {
        this.threshold = Math.max(1, threshold);
        this.openNanos = openNanos;
    }

    /**
     * Whether a request may go to the upstream now: {@link #DENIED}, {@link #PASS}, or the number of the half-open
     * trial it carries (positive), which its holder reports with {@link #success}/{@link #failure} or gives back
     * with {@link #abandon}.
     */
    public synchronized long tryAcquire(long now) {
        switch (state) {
            case CLOSED -> {
                return PASS;
            }
            case OPEN -> {
                if (now - openedAt < openNanos) {
                    return DENIED;
                }
                state = State.HALF_OPEN;
                return newTrial(now);
            }
            default -> {
                if (trial != 0 && now - trialSince < openNanos) {
                    return DENIED;
                }
                return newTrial(now);
            }
        }
    }

    private long newTrial(long now) {
        trial = ++trials;
        trialSince = now;
        return trial;
    }

    /**
     * A request that went through answered well. While closed, that resets the failure count; while half-open, only
     * the current trial's success closes the circuit — a late answer of a request admitted before it opened, or of a
     * trial presumed lost, says nothing about the upstream now.
     */
    public synchronized void success(long permit) {
        if (state == State.CLOSED) {
            failures = 0;
        } else if (state == State.HALF_OPEN && permit > 0 && permit == trial) {
            failures = 0;
            trial = 0;
            state = State.CLOSED;
        }
    }

    /** A request that went through failed: counted while closed; while half-open, the current trial's failure reopens it. */
    public synchronized void failure(long now, long permit) {
        if (state == State.CLOSED) {
            if (++failures >= threshold) {
                state = State.OPEN;
                openedAt = now;
            }
        } else if (state == State.HALF_OPEN && permit > 0 && permit == trial) {
            trial = 0;
            state = State.OPEN;
            openedAt = now;
        }
    }

    /** Closes it whatever its state (an administrator's reset, tests). */
    public synchronized void reset() {
        failures = 0;
        trial = 0;
        state = State.CLOSED;
    }

    /** The holder of {@code permit} leaves without an outcome; if it was the current trial, the next request may try. */
    public synchronized void abandon(long permit) {
        if (permit > 0 && permit == trial) {
            trial = 0;
        }
    }

    public synchronized State state(long now) {
        return state == State.OPEN && now - openedAt >= openNanos ? State.HALF_OPEN : state;
    }
}
