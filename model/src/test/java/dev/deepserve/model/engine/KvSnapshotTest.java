package dev.deepserve.model.engine;

import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class KvSnapshotTest {

    static KvCache filled(int layers, int length, long seed) {
        KvCache c = new KvCache(layers, 8, 4, 2);
        c.reserve(length);
        SplittableRandom r = new SplittableRandom(seed);
        for (int l = 0; l < layers; l++) {
            for (int i = 0; i < length * c.stride(); i++) {
                c.layer(l)[i] = (float) r.nextGaussian();
            }
        }
        c.advance(length);
        return c;
    }

    @Test
    void roundTripsBitExactlyWithAndWithoutTheMtpCache() {
        KvCache main = filled(3, 17, 1);
        KvCache mtp = filled(1, 17, 2);
        KvSnapshot.Contents back = KvSnapshot.decode(KvSnapshot.encode("{\"request_id\":\"r1\"}", main, mtp));
        assertEquals("{\"request_id\":\"r1\"}", back.metadata());
        assertEquals(17, back.main().length());
        for (int l = 0; l < 3; l++) {
            assertArrayEquals(java.util.Arrays.copyOf(main.layer(l), 17 * 12), java.util.Arrays.copyOf(back.main().layer(l), 17 * 12));
        }
        assertArrayEquals(java.util.Arrays.copyOf(mtp.layer(0), 17 * 12), java.util.Arrays.copyOf(back.mtp().layer(0), 17 * 12));
        assertNull(KvSnapshot.decode(KvSnapshot.encode("{}", main, null)).mtp());
    }

    @Test
    void corruptionAndTruncationAreRefusedNamingTheSection() {
        byte[] bytes = KvSnapshot.encode("{}", filled(2, 5, 3), null);
        byte[] flipped = bytes.clone();
        flipped[bytes.length - 30] ^= 1;
        var e = assertThrows(IllegalArgumentException.class, () -> KvSnapshot.decode(flipped));
        assertTrue(e.getMessage().contains("checksum mismatch in main layer 1"), e.getMessage());
        byte[] cut = java.util.Arrays.copyOf(bytes, bytes.length - 100);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> KvSnapshot.decode(cut)).getMessage().startsWith("KV transfer: truncated"));
        byte[] junk = "hello, world".getBytes();
        assertEquals("KV transfer: not a KV snapshot (bad magic)", assertThrows(IllegalArgumentException.class, () -> KvSnapshot.decode(junk)).getMessage());
    }
}
