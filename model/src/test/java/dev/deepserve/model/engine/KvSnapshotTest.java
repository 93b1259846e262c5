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
            float[] values = new float[length * c.stride()];
            for (int i = 0; i < values.length; i++) {
                values[i] = (float) r.nextGaussian();
            }
            c.write(l, 0, values, 0, length);
        }
        c.advance(length);
        return c;
    }

    static float[] tokens(KvCache c, int layer) {
        float[] out = new float[c.length() * c.stride()];
        c.read(layer, 0, out, 0, c.length());
        return out;
    }

    @Test
    void roundTripsBitExactlyWithAndWithoutTheMtpCache() {
        KvCache main = filled(3, 17, 1);
        KvCache mtp = filled(1, 17, 2);
        KvSnapshot.Contents back = KvSnapshot.decode(KvSnapshot.encode("{\"request_id\":\"r1\"}", main, mtp));
        assertEquals("{\"request_id\":\"r1\"}", back.metadata());
        assertEquals(17, back.main().length());
        for (int l = 0; l < 3; l++) {
            assertArrayEquals(tokens(main, l), tokens(back.main(), l));
        }
        assertArrayEquals(tokens(mtp, 0), tokens(back.mtp(), 0));
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
