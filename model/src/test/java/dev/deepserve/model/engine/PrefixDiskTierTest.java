package dev.deepserve.model.engine;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.IntStream;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The prefix cache's disk tier: blocks evicted from memory (over the byte budget, or reclaimed by a full pool) are
 * written to disk and served again — bit for bit, counted as hits — by a fresh cache over the same directory (a
 * restarted engine), readable by the owner only; a damaged file is dropped and never served; the tier stays within its
 * byte budget.
 */
class PrefixDiskTierTest {

    static KvCache filled(KvBlockPool pool, int tokens, int seed) {
        KvCache c = new KvCache(pool);
        c.reserve(tokens);
        java.util.SplittableRandom r = new java.util.SplittableRandom(seed);
        for (int l = 0; l < pool.layers(); l++) {
            float[] values = new float[tokens * pool.stride()];
            for (int i = 0; i < values.length; i++) {
                values[i] = (float) r.nextGaussian();
            }
            c.write(l, 0, values, 0, tokens);
        }
        c.advance(tokens);
        return c;
    }

    static float[] layer(KvCache c, int layer, int tokens) {
        float[] out = new float[tokens * c.stride()];
        c.read(layer, 0, out, 0, tokens);
        return out;
    }

    @Test
    void blocksReclaimedFromAFullPoolComeBackFromDiskAfterARestartBitForBit(@TempDir Path dir) throws Exception {
        int[] prompt = IntStream.range(0, 13).toArray();
        KvBlockPool pool = new KvBlockPool(2, 4, 2, 4, 6, KvPrecision.BF16, null);
        PrefixCache memory = new PrefixCache(4, 1 << 20);
        memory.attach(pool, null);
        PrefixDiskTier tier = new PrefixDiskTier(dir, 1 << 20, 4);
        memory.spillTo(tier);
        KvCache first = filled(pool, 13, 1);
        float[] expected = layer(first, 1, 12);
        memory.store(prompt, first);
        first.release();
        KvCache hog = new KvCache(pool);
        hog.reserve(6 * 4); // the whole pool: the cache gives back its three blocks, which go to disk
        assertEquals(0, memory.blocks());
        hog.release();
        tier.flush();
        assertEquals(3, tier.blocks());
        try (Stream<Path> files = Files.list(dir)) {
            for (Path f : files.toList()) { // they carry prompts' token ids
                assertEquals("rw-------", java.nio.file.attribute.PosixFilePermissions.toString(Files.getPosixFilePermissions(f)), f.toString());
            }
        }
        assertEquals("rwx------", java.nio.file.attribute.PosixFilePermissions.toString(Files.getPosixFilePermissions(dir)));
        tier.close();

        // a restarted engine: new pool, new memory tier, the same directory
        KvBlockPool fresh = new KvBlockPool(2, 4, 2, 4, 6, KvPrecision.BF16, null);
        PrefixCache restarted = new PrefixCache(4, 1 << 20);
        restarted.attach(fresh, null);
        try (PrefixDiskTier again = new PrefixDiskTier(dir, 1 << 20, 4)) {
            restarted.spillTo(again);
            assertEquals(3, again.blocks(), "the files on disk are the tier's contents after a restart");
            KvCache second = new KvCache(fresh);
            assertEquals(12, restarted.load(prompt, second), "every full block but the last token's is served from disk");
            assertEquals(3, restarted.diskHits());
            assertArrayEquals(expected, layer(second, 1, 12));
            int[] other = IntStream.range(100, 113).toArray();
            assertEquals(0, restarted.load(other, new KvCache(fresh)), "another prefix finds nothing");
        }
    }

    @Test
    void aDamagedFileIsDroppedAndItsTokensComputedAgain(@TempDir Path dir) throws Exception {
        int[] prompt = IntStream.range(0, 9).toArray();
        PrefixCache memory = new PrefixCache(4, 300); // room for one copied block: storing the second spills the first
        try (PrefixDiskTier tier = new PrefixDiskTier(dir, 1 << 20, 4)) {
            memory.spillTo(tier);
            KvCache own = new KvCache(2, 4, 2, 16);
            KvCache filled = filled(own.pool(), 9, 2);
            memory.store(prompt, filled);
            tier.flush();
            assertEquals(1, tier.blocks());
            Path victim;
            try (Stream<Path> s = Files.list(dir)) {
                victim = s.sorted().findFirst().orElseThrow();
            }
            byte[] bytes = Files.readAllBytes(victim);
            bytes[bytes.length / 2] ^= 0x10;
            Files.write(victim, bytes);
            assertEquals(0, memory.load(prompt, new KvCache(2, 4, 2, 16)), "the damaged first block and everything after it are computed again");
            assertEquals(1, tier.dropped());
            assertTrue(Files.notExists(victim), "the damaged file is deleted");
        }
    }

    @Test
    void theTierStaysWithinItsByteBudget(@TempDir Path dir) throws Exception {
        PrefixCache memory = new PrefixCache(4, 300);
        try (PrefixDiskTier tier = new PrefixDiskTier(dir, 1000, 4)) {
            memory.spillTo(tier);
            for (int p = 0; p < 10; p++) {
                int[] prompt = IntStream.range(p * 100, p * 100 + 5).toArray();
                memory.store(prompt, filled(new KvCache(2, 4, 2, 8).pool(), 5, p));
            }
            tier.flush();
            assertTrue(tier.usedBytes() <= 1000, "used " + tier.usedBytes());
            long onDisk;
            try (Stream<Path> s = Files.list(dir)) {
                onDisk = s.mapToLong(f -> f.toFile().length()).sum();
            }
            assertEquals(tier.usedBytes(), onDisk);
            assertTrue(tier.blocks() >= 1 && tier.blocks() < 10);
        }
    }
}
