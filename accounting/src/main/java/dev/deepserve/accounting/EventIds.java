package dev.deepserve.accounting;

import java.util.UUID;
import java.util.concurrent.ThreadLocalRandom;

/**
 * Usage event ids: version 7 UUIDs (RFC 9562) — the creation time in milliseconds, then 74 random bits. Ids made
 * one after another sort one after another, so the outbox's and the ledger's primary-key indexes grow at their
 * right edge instead of touching a random page per insert. Uniqueness rests on the random bits (a collision needs two
 * events in the same millisecond drawing the same 74 bits); the ids are not secrets, so a fast generator is used.
 */
public final class EventIds {

    private EventIds() {
    }

    public static UUID next() {
        return at(System.currentTimeMillis());
    }

    static UUID at(long millis) {
        ThreadLocalRandom random = ThreadLocalRandom.current();
        long high = (millis & 0xFFFF_FFFF_FFFFL) << 16 | 0x7000L | random.nextLong() & 0x0FFFL;
        long low = random.nextLong() & 0x3FFF_FFFF_FFFF_FFFFL | 0x8000_0000_0000_0000L;
        return new UUID(high, low);
    }
}
