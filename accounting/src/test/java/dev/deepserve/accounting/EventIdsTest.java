package dev.deepserve.accounting;

import org.junit.jupiter.api.Test;

import java.util.HashSet;
import java.util.Set;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Usage event ids are version-7 UUIDs with the Unix time in milliseconds in their first 48 bits, so a later id sorts
 * after an earlier one in PostgreSQL's uuid order; a million ids are distinct.
 */
class EventIdsTest {

    @Test
    void versionSevenWithTheTimeInFrontSoLaterIdsSortLater() {
        long t = 1_795_500_000_123L;
        UUID id = EventIds.at(t);
        assertEquals(7, id.version());
        assertEquals(2, id.variant());
        assertEquals(t, id.getMostSignificantBits() >>> 16, "the first 48 bits are the Unix time in ms");
        assertEquals(String.format("%012x", t), id.toString().replace("-", "").substring(0, 12));
        // PostgreSQL's uuid order is the byte order, i.e. the string order
        for (int i = 0; i < 1000; i++) {
            assertTrue(EventIds.at(t).toString().compareTo(EventIds.at(t + 1).toString()) < 0);
        }
    }

    @Test
    void aMillionIdsAreDistinct() {
        Set<UUID> seen = new HashSet<>();
        for (int i = 0; i < 1_000_000; i++) {
            assertTrue(seen.add(EventIds.next()));
        }
    }
}
