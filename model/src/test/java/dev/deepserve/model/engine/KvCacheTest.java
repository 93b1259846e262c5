package dev.deepserve.model.engine;

import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Paged KV caches: reads and writes cross block boundaries correctly while two caches interleave their blocks in one
 * pool; truncate and (idempotent) release give blocks back, a full pool refuses, a pool's memory grows on demand up to
 * its capacity, and copyTo moves a private cache into a pool unchanged.
 */
class KvCacheTest {

    private static float[] random(int n, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = (float) r.nextGaussian();
        }
        return v;
    }

    @Test
    void readsAndWritesAcrossBlockBoundariesWhileAnotherCacheInterleavesItsBlocks() {
        KvBlockPool pool = new KvBlockPool(2, 6, 2, 4, 100);
        KvCache a = new KvCache(pool);
        KvCache b = new KvCache(pool);
        float[] va = random(23 * 8, 1);
        float[] vb = random(23 * 8, 2);
        for (int t = 0; t < 23; t++) { // one token at a time, alternating: the block tables interleave
            for (KvCache c : new KvCache[] {a, b}) {
                c.reserve(1);
                for (int l = 0; l < 2; l++) {
                    c.write(l, t, c == a ? va : vb, t * 8, 1);
                }
                c.advance(1);
            }
        }
        assertEquals(6, a.blocks());
        assertEquals(12, pool.used());
        float[] out = new float[23 * 8];
        a.read(1, 0, out, 0, 23);
        assertArrayEquals(va, out);
        b.read(0, 0, out, 0, 23);
        assertArrayEquals(vb, out);
        float[] middle = new float[9 * 8];
        a.read(0, 3, middle, 0, 9); // starts mid-block, spans three blocks
        assertArrayEquals(java.util.Arrays.copyOfRange(va, 3 * 8, 12 * 8), middle);
        assertEquals(a.offset(5) + 8, a.offset(6), "tokens of one block are adjacent");
    }

    @Test
    void truncateAndReleaseGiveBlocksBackAndAFullPoolRefuses() {
        KvBlockPool pool = new KvBlockPool(1, 4, 0, 8, 3);
        KvCache a = new KvCache(pool);
        a.reserve(17);
        a.advance(17);
        assertEquals(3, pool.used());
        KvCache b = new KvCache(pool);
        IllegalStateException full = assertThrows(IllegalStateException.class, () -> b.reserve(1));
        assertTrue(full.getMessage().contains("KV cache is full"), full.getMessage());
        a.truncate(16);
        assertEquals(2, pool.used(), "the emptied third block went back");
        b.reserve(8);
        assertEquals(3, pool.used());
        a.release();
        a.release();
        assertEquals(1, pool.used(), "release is idempotent");
        assertThrows(IllegalStateException.class, () -> a.reserve(1));
        assertThrows(IllegalStateException.class, () -> b.advance(9), "advance past the reserved blocks");
    }

    @Test
    void aPoolGrowsItsMemoryOnDemandUpToItsCapacity() {
        KvBlockPool pool = KvBlockPool.forTokens(3, 8, 4, 16, 16 * 1000, KvPrecision.FLOAT32);
        assertEquals(1000, pool.capacity());
        assertEquals(0, pool.bytes(), "nothing allocated before the first block");
        KvCache c = new KvCache(pool);
        c.reserve(100);
        assertTrue(pool.bytes() >= 7L * 16 * 12 * 4 * 3 && pool.bytes() < 1000L * 16 * 12 * 4 * 3, "grew to what is used: " + pool.bytes());
        assertThrows(IllegalArgumentException.class, () -> new KvBlockPool(1, 4, 0, 6, 3), "block size must be a power of two");
    }

    @Test
    void copyToMovesAPrivateCacheIntoAPool() {
        KvCache own = KvStreamTest.filled(2, 70, 9);
        KvBlockPool pool = new KvBlockPool(2, 8, 4, 16, 10);
        KvCache copy = own.copyTo(pool);
        assertEquals(70, copy.length());
        assertEquals(5, pool.used());
        for (int l = 0; l < 2; l++) {
            assertArrayEquals(KvStreamTest.tokens(own, l), KvStreamTest.tokens(copy, l));
        }
        assertThrows(IllegalArgumentException.class, () -> own.copyTo(new KvBlockPool(1, 8, 4, 16, 10)));
    }
}
