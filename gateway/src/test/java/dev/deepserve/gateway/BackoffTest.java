package dev.deepserve.gateway;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The gateway's one retry schedule: doubling from its base, capped, never overflowing, jitter within [half, full]. */
class BackoffTest {

    @Test
    void doublesFromTheBaseUpToTheCap() {
        Backoff settle = new Backoff(250, 8000);
        long[] expected = {250, 500, 1000, 2000, 4000, 8000, 8000};
        for (int attempt = 0; attempt < expected.length; attempt++) {
            assertEquals(expected[attempt], settle.millis(attempt), "attempt " + attempt);
        }
        assertEquals(5000, new Backoff(250, 5000).millis(1_000_000), "a huge attempt count neither overflows nor passes the cap");
        assertEquals(250, new Backoff(250, 5000).millis(-3), "a negative attempt is the first");
    }

    @Test
    void jitterStaysBetweenHalfAndTheWholeWait() {
        Backoff b = new Backoff(100, 30_000);
        for (int attempt = 0; attempt < 12; attempt++) {
            for (int i = 0; i < 200; i++) {
                long w = b.jittered(attempt);
                assertTrue(w >= b.millis(attempt) / 2 && w <= b.millis(attempt), "attempt " + attempt + ": " + w);
            }
        }
    }

    @Test
    void refusesANonsenseSchedule() {
        assertThrows(IllegalArgumentException.class, () -> new Backoff(0, 10));
        assertThrows(IllegalArgumentException.class, () -> new Backoff(100, 10));
    }
}
