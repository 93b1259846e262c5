package dev.deepserve.model.engine;

import org.junit.jupiter.api.Test;

import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * KV snapshots round-trip bit for bit, with and without the MTP cache, float32 and BF16 (half the bytes), and version
 * 1 transfers are still read; a transfer whose values are neither width, or that is corrupted (the checksum names
 * its section), truncated, not a snapshot, of another model's cache shape, or whose header claims more than the
 * transfer holds is refused with the reason.
 */
class KvSnapshotTest {

    static KvCache filled(int layers, int length, long seed) {
        return fill(new KvCache(layers, 8, 4, 2), length, seed);
    }

    /** {@code c} with {@code length} tokens of seeded Gaussian latents in every layer. */
    static KvCache fill(KvCache c, int length, long seed) {
        c.reserve(length);
        SplittableRandom r = new SplittableRandom(seed);
        for (int l = 0; l < c.layers(); l++) {
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
        // 38 bytes whose main cache claims 1024 layers × 10,000 tokens × (512 + 64) floats: 23.6 GB, each layer under
        // the per-layer bound, so only the transfer's own size can refuse it before the cache is allocated
        java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(38);
        byte[] meta = new byte[2];
        java.util.zip.CRC32 crc = new java.util.zip.CRC32();
        crc.update(meta);
        b.putInt(0).putInt(0).putInt(meta.length).put(meta).putInt((int) crc.getValue()).putInt(1024).putInt(512).putInt(64).putInt(10_000).putInt(4);
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

    @Test
    void aBf16CacheTravelsAsBf16InHalfTheBytesAndArrivesBitExact() {
        KvCache floats = filled(3, 40, 4);
        KvCache bf16 = floats.copyTo(KvBlockPool.forTokens(3, 8, 4, 64, 64, KvPrecision.BF16));
        byte[] wide = KvSnapshot.encode("{}", floats, null);
        byte[] narrow = KvSnapshot.encode("{}", bf16, null);
        int header = wide.length - 3 * (40 * 12 * 4 + 4);
        assertEquals(1, java.nio.ByteBuffer.wrap(wide).getInt(4), "float32 snapshots keep version 1's bytes (older engines take them)");
        assertEquals(2, java.nio.ByteBuffer.wrap(narrow).getInt(4));
        assertEquals(header + 4 + 3 * (40 * 12 * 2 + 4), narrow.length, "a width field, then two bytes per value");
        KvSnapshot.Contents back = KvSnapshot.decode(narrow, new KvSnapshot.Shape(3, 1, 8, 4, 64));
        assertEquals(KvPrecision.BF16, back.main().precision());
        for (int l = 0; l < 3; l++) {
            assertArrayEquals(tokens(bf16, l), tokens(back.main(), l));
        }
    }

    @Test
    void aVersionOneTransferOfFloatsIsStillRead() throws Exception {
        KvCache main = filled(2, 3, 5);
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        java.io.DataOutputStream d = new java.io.DataOutputStream(out);
        d.writeInt(0x44534B56);
        d.writeInt(1);
        d.writeInt(2);
        d.write(new byte[] {'{', '}'});
        d.writeInt(crc(new byte[] {'{', '}'}));
        d.writeInt(2);
        d.writeInt(8);
        d.writeInt(4);
        d.writeInt(3);
        for (int l = 0; l < 2; l++) {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(3 * 12 * 4).order(java.nio.ByteOrder.LITTLE_ENDIAN);
            b.asFloatBuffer().put(tokens(main, l));
            d.write(b.array());
            d.writeInt(crc(b.array()));
        }
        d.writeInt(0);
        KvSnapshot.Contents back = KvSnapshot.decode(out.toByteArray());
        assertEquals(KvPrecision.FLOAT32, back.main().precision());
        assertArrayEquals(tokens(main, 1), tokens(back.main(), 1));
    }

    @Test
    void valuesOfAnUnknownWidthAreRefusedByName() {
        byte[] bytes = KvSnapshot.encode("{}", filled(1, 2, 6).copyTo(KvBlockPool.forTokens(1, 8, 4, 64, 64, KvPrecision.BF16)), null);
        int widthAt = 8 + 4 + 2 + 4 + 16; // magic, version, metadata length, "{}", its CRC, four shape ints
        java.nio.ByteBuffer.wrap(bytes).putInt(widthAt, 3);
        var e = assertThrows(IllegalArgumentException.class, () -> KvSnapshot.decode(bytes));
        assertEquals("KV transfer: main cache values of 3 bytes are neither float32 nor BF16", e.getMessage());
    }

    private static int crc(byte[] b) {
        java.util.zip.CRC32 c = new java.util.zip.CRC32();
        c.update(b);
        return (int) c.getValue();
    }

    /** The header as the writer makes it: the real magic and version (2, with the width field). */
    private static byte[] withMagic(byte[] body) {
        byte[] real = KvSnapshot.encode("{}", new KvCache(1, 4, 2, 1, KvPrecision.BF16), null);
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
