package dev.deepserve.model.engine;

import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * KV snapshots round-trip bit for bit, with and without the MTP cache; a transfer that is corrupted (the checksum names
 * its section), truncated, not a snapshot, of another model's cache shape, or whose header claims more than the
 * transfer holds is refused with the reason.
 */
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
    void aHeaderClaimingMoreThanTheTransferHoldsIsRefusedBeforeAnyAllocation() {
        // 34 bytes whose main cache claims 1024 layers × 10,000 tokens × (512 + 64) floats: 23.6 GB, each layer under
        // the per-layer bound, so only the transfer's own size can refuse it before the cache is allocated
        java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(34);
        byte[] meta = new byte[2];
        java.util.zip.CRC32 crc = new java.util.zip.CRC32();
        crc.update(meta);
        b.putInt(0).putInt(0).putInt(meta.length).put(meta).putInt((int) crc.getValue()).putInt(1024).putInt(512).putInt(64).putInt(10_000);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> KvSnapshot.decode(withMagic(b.array())));
        assertTrue(e.getMessage().contains("more than the transfer holds"), e.getMessage());
    }

    @Test
    void aCacheOfAnotherModelsShapeIsRefusedFromItsHeader() {
        KvCache main = new KvCache(2, 4, 2, 8);
        main.reserve(3);
        main.advance(3);
        byte[] snapshot = KvSnapshot.encode("{}", main, null);
        assertEquals(3, KvSnapshot.decode(snapshot, new KvSnapshot.Shape(2, 1, 4, 2, 16)).main().length());
        for (KvSnapshot.Shape other : java.util.List.of(new KvSnapshot.Shape(3, 1, 4, 2, 16), new KvSnapshot.Shape(2, 1, 8, 2, 16),
                new KvSnapshot.Shape(2, 1, 4, 4, 16), new KvSnapshot.Shape(2, 1, 4, 2, 2))) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> KvSnapshot.decode(snapshot, other));
            assertTrue(e.getMessage().contains("does not fit this model"), e.getMessage());
        }
    }

    /** The header as the writer makes it: the real magic and version. */
    private static byte[] withMagic(byte[] body) {
        byte[] real = KvSnapshot.encode("{}", new KvCache(1, 4, 2, 1), null);
        System.arraycopy(real, 0, body, 0, 8);
        return body;
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
