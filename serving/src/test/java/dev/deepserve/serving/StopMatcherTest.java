package dev.deepserve.serving;

import org.junit.jupiter.api.Test;

import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Stop strings over streamed text: one split across deltas is caught and none of it is sent, held text is released once
 * it can no longer start a stop, the earliest of several stops wins, surrogate pairs are never split, and without stops
 * everything passes through.
 */
class StopMatcherTest {

    static String feed(StopMatcher m, String... deltas) {
        StringBuilder out = new StringBuilder();
        for (String d : deltas) {
            out.append(m.accept(d));
        }
        return out.append(m.flush()).toString();
    }

    @Test
    void aStopStringSplitAcrossDeltasIsCaughtAndNeverSent() {
        StopMatcher m = new StopMatcher(List.of("END"));
        assertEquals("Hello ", m.accept("Hello E"));
        assertEquals("", m.accept("N"));
        assertEquals("", m.accept("D and more"));
        assertTrue(m.stopped());
        assertEquals("", m.flush());
    }

    @Test
    void heldTextIsReleasedWhenItStopsLookingLikeAStop() {
        StopMatcher m = new StopMatcher(List.of("\n\n", "STOP"));
        assertEquals("a", m.accept("a\n"));
        assertEquals("\nb", m.accept("b"));
        assertEquals("xST", feed(m, "xST"));
    }

    @Test
    void earliestOfSeveralStopsWins() {
        StopMatcher m = new StopMatcher(List.of("cd", "b"));
        assertEquals("a", m.accept("abcd"));
    }

    @Test
    void surrogatePairsAreNeverSplit() {
        StopMatcher m = new StopMatcher(List.of("\uDE00x"));
        String out = m.accept("ok😀");
        assertTrue(out.isEmpty() || !Character.isHighSurrogate(out.charAt(out.length() - 1)));
        assertEquals("ok😀", out + m.flush());
    }

    @Test
    void withoutStopsEverythingPassesThrough() {
        assertEquals("abc", feed(new StopMatcher(List.of()), "a", "b", "c"));
    }
}
