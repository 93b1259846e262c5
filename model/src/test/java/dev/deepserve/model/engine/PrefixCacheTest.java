package dev.deepserve.model.engine;

import dev.deepserve.model.engine.ops.CpuOps;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Path;
import java.util.Arrays;
import java.util.stream.IntStream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The prefix cache serves exactly the whole blocks a prompt shares with a stored one, never its last token, and the
 * logits after a hit match a full prefill's. It evicts least recently used blocks under its byte budget, and attached
 * to a pool it shares the sequences' own blocks instead of copies and gives them back when the pool runs out.
 */
class PrefixCacheTest {

    @TempDir
    static Path tmp;

    @Test
    void aSharedPrefixIsServedInWholeBlocksAndGivesTheSameLogits() throws Exception {
        Path dir = TestCheckpoints.write(tmp.resolve("m"), TestCheckpoints.ODD_V3, 3, 1);
        try (Transformer m = Transformer.load(dir, CpuOps.best())) {
            PrefixCache cache = new PrefixCache(4, 1 << 24);
            int[] first = IntStream.range(0, 11).map(i -> 10 + i).toArray();
            KvCache a = m.newCache(16);
            m.forward(first, a);
            cache.store(first, a);
            assertEquals(2, cache.blocks(), "11 tokens hold two full blocks of 4");

            // same 9-token prefix, different tail: two blocks (8 tokens) come from the cache
            int[] second = Arrays.copyOf(first, 13);
            second[9] = 500;
            second[10] = 501;
            second[11] = 502;
            second[12] = 503;
            KvCache b = m.newCache(16);
            int served = cache.load(second, b);
            assertEquals(8, served);
            float[] cached = m.logits(m.forward(Arrays.copyOfRange(second, served, second.length), b), 12 - served, 1);
            float[] full = m.logits(m.forward(second, m.newCache(16)), 12, 1);
            for (int i = 0; i < full.length; i++) {
                assertEquals(full[i], cached[i], 1e-4 * Math.max(1, Math.abs(full[i])));
            }

            // a prompt that differs inside the first block gets nothing
            int[] third = first.clone();
            third[2] = 999;
            assertEquals(0, cache.load(third, m.newCache(16)));
            // the last token is always computed: a prompt of exactly two blocks gets one
            assertEquals(4, cache.load(Arrays.copyOf(first, 8), m.newCache(16)));
        }
    }

    @Test
    void hitCountsAreExactWholeBlocksForSharedPrefixesOfEveryLength() throws Exception {
        Path dir = TestCheckpoints.write(tmp.resolve("lengths"), TestCheckpoints.ODD_V3, 3, 1);
        try (Transformer m = Transformer.load(dir, CpuOps.best())) {
            int block = 4;
            int[] stored = IntStream.range(0, 17).map(i -> 40 + i).toArray();
            PrefixCache cache = new PrefixCache(block, 1 << 24);
            KvCache kv = m.newCache(32);
            m.forward(stored, kv);
            cache.store(stored, kv);
            for (int shared = 0; shared <= stored.length; shared++) {
                for (int tail : new int[] {0, 1, 5}) {
                    int[] prompt = new int[shared + tail];
                    System.arraycopy(stored, 0, prompt, 0, shared);
                    for (int i = shared; i < prompt.length; i++) {
                        prompt[i] = 900 + i;
                    }
                    if (prompt.length == 0) {
                        continue;
                    }
                    // whole shared blocks, never the prompt's last token (it must be computed for the logits)
                    int expected = Math.min(shared / block, (prompt.length - 1) / block) * block;
                    assertEquals(expected, cache.load(prompt, m.newCache(32)), "shared " + shared + ", tail " + tail);
                }
            }
        }
    }

    @Test
    void leastRecentlyUsedBlocksGoFirstUnderTheBudget() {
        KvCache kv = new KvCache(1, 2, 2, 64);
        kv.reserve(12);
        kv.advance(12);
        int[] p1 = IntStream.range(0, 12).toArray();
        int[] p2 = IntStream.range(100, 112).toArray();
        long blockBytes = 4 * 4 * 4 + 4 * 4 + 64;
        PrefixCache cache = new PrefixCache(4, 4 * blockBytes);
        cache.store(p1, kv);
        cache.store(p2, kv);
        assertTrue(cache.usedBytes() <= 4 * blockBytes);
        assertEquals(4, cache.blocks());
        assertEquals(0, cache.load(Arrays.copyOf(p1, 5), new KvCache(1, 2, 2, 8)), "p1's first blocks were evicted");
        assertEquals(8, cache.load(Arrays.copyOf(p2, 12), new KvCache(1, 2, 2, 8)));
        assertArrayEquals(new long[] {1, 2}, cache.hitsAndLookups());
    }

    /**
     * Attached to a pool, the cache keeps the sequence's own blocks instead of copies, a hit shares them into the new
     * sequence's table, and when the pool runs out it reclaims the least recently used blocks only it still holds.
     */
    @Test
    void attachedToAPoolItSharesBlocksAndGivesThemBackWhenThePoolRunsOut() {
        KvBlockPool pool = new KvBlockPool(2, 4, 2, 4, 6);
        PrefixCache cache = new PrefixCache(4, 1 << 20);
        cache.attach(pool, null);
        int[] prompt = IntStream.range(0, 13).toArray();
        KvCache first = new KvCache(pool);
        first.reserve(13);
        float[] values = new float[13 * 6];
        for (int i = 0; i < values.length; i++) {
            values[i] = i;
        }
        for (int l = 0; l < 2; l++) {
            first.write(l, 0, values, 0, 13);
        }
        first.advance(13);
        cache.store(prompt, first);
        assertEquals(4, pool.used(), "no copies: the cache holds the sequence's 3 full blocks, nothing more");
        assertEquals(2, pool.holders(first.blockAt(0)));

        KvCache second = new KvCache(pool);
        assertEquals(12, cache.load(prompt, second));
        assertEquals(first.blockAt(2), second.blockAt(2), "the hit is the very same block");
        assertEquals(3, pool.holders(first.blockAt(0)));
        float[] back = new float[12 * 6];
        second.read(1, 0, back, 0, 12);
        assertArrayEquals(Arrays.copyOf(values, 12 * 6), back);

        first.release();
        second.release();
        assertEquals(3, pool.used(), "the cache alone keeps the prefix");
        assertEquals(6, pool.available(), "...and admission may count those blocks as free");
        KvCache other = new KvCache(pool);
        other.reserve(6 * 4); // the whole pool: the cache gives its blocks back, least recently used first
        assertEquals(6, pool.used());
        assertEquals(0, cache.blocks(), "every cached block was reclaimed");
        other.release();
        assertEquals(0, pool.used());
    }

    /** Attached to new pools, the cache gives the old ones their blocks back and never serves their numbers in the new. */
    @Test
    void reattachedToAnotherPoolItGivesTheOldBlocksBackAndServesNoneOfThem() {
        KvBlockPool old = new KvBlockPool(2, 4, 2, 4, 6);
        PrefixCache cache = new PrefixCache(4, 1 << 20);
        cache.attach(old, null);
        int[] prompt = IntStream.range(0, 9).toArray();
        KvCache first = new KvCache(old);
        first.reserve(9);
        first.write(0, 0, new float[9 * 6], 0, 9);
        first.write(1, 0, new float[9 * 6], 0, 9);
        first.advance(9);
        cache.store(prompt, first);
        first.release();
        assertEquals(2, old.used(), "the cache holds the prompt's two full blocks");

        KvBlockPool fresh = new KvBlockPool(2, 4, 2, 4, 6);
        cache.attach(fresh, null);
        assertEquals(0, old.used(), "the old pool got its blocks back");
        assertEquals(0, cache.blocks());
        KvCache second = new KvCache(fresh);
        assertEquals(0, cache.load(prompt, second), "no block number from the old pool is served in the new one");
        second.release();
    }
}
