package dev.deepserve.gateway.upstream;

import dev.deepserve.gateway.Backoff;
import java.time.Duration;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.time.format.DateTimeParseException;

/**
 * How long to wait before retrying an upstream: what its {@code Retry-After} asks (seconds or an HTTP date), else an
 * exponential backoff from 100 ms with "equal jitter" (half fixed, half random, so that replicas retrying the same
 * outage spread out), never more than the configured maximum. A {@code Retry-After} beyond the maximum means this
 * upstream should not be retried for this request.
 */
public final class RetryDelay {

    /** {@link #millis}'s answer when the upstream asked for a longer pause than a request may wait. */
    public static final long DO_NOT_RETRY = -1;
    static final long BASE_MILLIS = 100;

    private RetryDelay() {
    }

    /**
     * @param attempt    retries already made (0 before the first)
     * @param retryAfter the upstream's {@code Retry-After} header, or null
     * @param max        the longest wait a request accepts
     */
    public static long millis(int attempt, String retryAfter, Duration max, long nowEpochMillis) {
        long maxMillis = max.toMillis();
        long asked = retryAfterMillis(retryAfter, nowEpochMillis);
        if (asked >= 0) {
            return asked > maxMillis ? DO_NOT_RETRY : asked;
        }
        return new Backoff(Math.min(BASE_MILLIS, Math.max(1, maxMillis)), Math.max(1, maxMillis)).jittered(attempt);
    }

    /** The wait a {@code Retry-After} value asks for in milliseconds, or -1 when there is none or it cannot be read. */
    static long retryAfterMillis(String value, long nowEpochMillis) {
        if (value == null || value.isBlank() || value.length() > 64) {
            return -1;
        }
        String v = value.strip();
        if (v.chars().allMatch(Character::isDigit)) {
            try {
                return Math.multiplyExact(Long.parseLong(v), 1000L);
            } catch (ArithmeticException | NumberFormatException tooBig) {
                return Long.MAX_VALUE;
            }
        }
        try {
            long at = ZonedDateTime.parse(v, DateTimeFormatter.RFC_1123_DATE_TIME).toInstant().toEpochMilli();
            return Math.max(0, at - nowEpochMillis);
        } catch (DateTimeParseException unreadable) {
            return -1;
        }
    }
}
