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
        return KvStreamTest.fill(new KvCache(pool), tokens, seed);
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

    /** An engine that stops writes its memory tier to disk (spillAll), so the next start finds those prefixes too. */
    @Test
    void whatMemoryHeldAtStopIsFoundOnDiskAfterTheRestart(@TempDir Path dir) throws Exception {
        int[] prompt = IntStream.range(0, 9).toArray();
        KvBlockPool pool = new KvBlockPool(2, 4, 2, 4, 8, KvPrecision.BF16, null);
        PrefixCache memory = new PrefixCache(4, 1 << 20);
        memory.attach(pool, null);
        float[] expected;
        try (PrefixDiskTier tier = new PrefixDiskTier(dir, 1 << 20, 4)) {
            memory.spillTo(tier);
            KvCache first = filled(pool, 9, 3);
            expected = layer(first, 0, 8);
            memory.store(prompt, first);
            assertEquals(0, tier.blocks(), "nothing evicted: nothing on disk yet");
            assertEquals(2, memory.spillAll());
        } // close() waits for the writer
        PrefixCache restarted = new PrefixCache(4, 1 << 20);
        try (PrefixDiskTier again = new PrefixDiskTier(dir, 1 << 20, 4)) {
            restarted.spillTo(again);
            KvCache second = new KvCache(2, 4, 2, 16, KvPrecision.BF16);
            assertEquals(8, restarted.load(prompt, second));
            assertArrayEquals(expected, layer(second, 0, 8));
        }
    }

    /**
     * A block written with its MTP part serves a sequence that does not speculate (the part is skipped, the file kept);
     * a file of the wrong size or not a regular file is dropped without being read; a memory block stored without MTP
     * gains it when a speculating sequence stores the same prefix.
     */
    @Test
    void mtpPartsPlainReadersAndFilesOfTheWrongSize(@TempDir Path dir) throws Exception {
        int[] prompt = IntStream.range(0, 5).toArray();
        try (PrefixDiskTier tier = new PrefixDiskTier(dir, 1 << 20, 4)) {
            PrefixCache memory = new PrefixCache(4, 1); // everything straight to disk
            memory.spillTo(tier);
            KvCache main = filled(new KvCache(2, 4, 2, 8).pool(), 5, 4);
            KvCache mtp = filled(new KvCache(1, 4, 2, 8).pool(), 5, 5);
            memory.store(prompt, main, mtp);
            tier.flush();
            assertEquals(1, tier.blocks());
            PrefixCache reader = new PrefixCache(4, 1);
            reader.spillTo(tier);
            assertEquals(4, reader.load(prompt, new KvCache(2, 4, 2, 8), null), "a plain reader is served the main part");
            assertEquals(0, tier.dropped());
            assertEquals(1, tier.blocks(), "and the file stays for speculating readers");
            KvCache mtpBack = new KvCache(1, 4, 2, 8);
            assertEquals(4, reader.load(prompt, new KvCache(2, 4, 2, 8), mtpBack));
            assertArrayEquals(layer(mtp, 0, 4), layer(mtpBack, 0, 4));

            Path file;
            try (Stream<Path> s = Files.list(dir)) {
                file = s.filter(f -> f.toString().endsWith(".kvb")).findFirst().orElseThrow();
            }
            Files.write(file, new byte[1 << 20]); // a file of another size: dropped unread
            assertEquals(0, reader.load(prompt, new KvCache(2, 4, 2, 8), null));
            assertEquals(1, tier.dropped());
            assertTrue(Files.notExists(file));

            memory.store(prompt, main, mtp); // written again, then replaced by a link to a file outside the tier
            tier.flush();
            Path outside = Files.write(Files.createDirectories(dir.resolve("elsewhere")).resolve("block"), Files.readAllBytes(file));
            Files.delete(file);
            Files.createSymbolicLink(file, outside);
            assertEquals(0, reader.load(prompt, new KvCache(2, 4, 2, 8), null), "a link is not followed, even to a valid block");
            assertEquals(2, tier.dropped());
            assertTrue(Files.notExists(file, java.nio.file.LinkOption.NOFOLLOW_LINKS), "the link is deleted");
            assertTrue(Files.exists(outside), "what it pointed to is not");
        }

        KvBlockPool pool = new KvBlockPool(2, 4, 2, 4, 8, KvPrecision.BF16, null);
        KvBlockPool mtpPool = new KvBlockPool(1, 4, 2, 4, 8, KvPrecision.BF16, null);
        PrefixCache memory = new PrefixCache(4, 1 << 20);
        memory.attach(pool, mtpPool);
        memory.store(prompt, filled(pool, 5, 6)); // a plain sequence: main only
        assertEquals(0, memory.load(prompt, new KvCache(pool), new KvCache(mtpPool)), "a speculating reader needs the MTP part");
        memory.store(prompt, filled(pool, 5, 6), filled(mtpPool, 5, 7)); // a speculating one stores the same prefix
        assertEquals(4, memory.load(prompt, new KvCache(pool), new KvCache(mtpPool)), "now it has both parts");
    }
}
