package dev.deepserve.model.engine;

import org.junit.jupiter.api.Test;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The KV stream: a prompt's KV sent chunk by chunk as it grows arrives bit for bit, float32 and BF16 (half the
 * bytes), with and without the MTP part, in whatever pieces the network delivers it, with sections cut below the
 * reader's bound; the reader holds at most one frame. Another format, an earlier release's whole snapshot, another
 * model's shape, a corrupt, truncated, out-of-order, oversized or over-long stream is refused with the reason.
 */
class KvStreamTest {

    static KvCache filled(int layers, int length, long seed) {
        return fill(new KvCache(layers, 8, 4, 2), length, seed);
    }

    /** {@code c} with {@code length} more tokens of seeded Gaussian latents in every layer. */
    static KvCache fill(KvCache c, int length, long seed) {
        int at = c.length();
        c.reserve(length);
        SplittableRandom r = new SplittableRandom(seed);
        for (int l = 0; l < c.layers(); l++) {
            float[] values = new float[length * c.stride()];
            for (int i = 0; i < values.length; i++) {
                values[i] = (float) r.nextGaussian();
            }
            c.write(l, at, values, 0, length);
        }
        c.advance(length);
        return c;
    }

    static float[] tokens(KvCache c, int layer) {
        float[] out = new float[c.length() * c.stride()];
        c.read(layer, 0, out, 0, c.length());
        return out;
    }

    private static final KvStream.Shape SHAPE = new KvStream.Shape(3, 1, 8, 4, 64);

    /** A listener that takes whatever the reader checked. */
    private static final KvStream.Listener IGNORE = new KvStream.Listener() {
        @Override
        public void header(String metadata, KvStream.Layout layout) {
        }

        @Override
        public void section(int cache, int layer, int from, int count, byte[] values) {
        }

        @Override
        public void end(String trailer) {
        }
    };

    static void assertSame(KvCache expected, KvCache actual) {
        assertEquals(expected.length(), actual.length());
        assertEquals(expected.precision(), actual.precision());
        for (int l = 0; l < expected.layers(); l++) {
            assertArrayEquals(tokens(expected, l), tokens(actual, l), "layer " + l);
        }
    }

    @Test
    void aPromptSentChunkByChunkArrivesBitExactInAnyPieces() {
        for (KvPrecision precision : KvPrecision.values()) {
            KvBlockPool pool = KvBlockPool.forTokens(3, 8, 4, 16, 256, precision);
            KvBlockPool mtpPool = KvBlockPool.forTokens(1, 8, 4, 16, 256, precision);
            KvCache main = new KvCache(pool);
            KvCache mtp = new KvCache(mtpPool);
            KvStream.Sender sender = new KvStream.Sender("{\"request_id\":\"r1\"}", main, mtp, 50);
            ByteArrayOutputStream wire = new ByteArrayOutputStream();
            wire.writeBytes(sender.header());
            for (int chunk = 0; chunk < 50; chunk += 7) {
                int n = Math.min(7, 50 - chunk);
                fill(main, n, chunk);
                fill(mtp, main.length() - (chunk + n == 50 ? 0 : 1) - mtp.length(), 100 + chunk); // the MTP part trails by a token until the end
                wire.writeBytes(sender.next(main, mtp));
            }
            wire.writeBytes(sender.end(main, mtp, "{\"first_token\":5}"));
            byte[] bytes = wire.toByteArray();
            assertEquals(sender.bytes(), bytes.length);
            KvStream.Contents whole = KvStream.decode(bytes, SHAPE);
            assertEquals("{\"request_id\":\"r1\"}", whole.metadata());
            assertEquals("{\"first_token\":5}", whole.trailer());
            assertSame(main, whole.main());
            assertSame(mtp, whole.mtp());
            // the network's pieces: one byte at a time, and random runs
            KvCache[] got = new KvCache[2];
            KvStream.Reader reader = reader(got);
            for (byte b : bytes) {
                reader.feed(new byte[] {b});
            }
            reader.finish();
            assertSame(main, got[0]);
            SplittableRandom r = new SplittableRandom(precision.ordinal());
            KvStream.Reader pieces = reader(got);
            for (int at = 0; at < bytes.length; ) {
                int n = Math.min(bytes.length - at, 1 + r.nextInt(300));
                pieces.feed(bytes, at, n);
                at += n;
            }
            pieces.finish();
            assertSame(mtp, got[1]);
        }
    }

    /** A reader writing into fresh heap caches, as a decode engine writes into its pool. */
    private static KvStream.Reader reader(KvCache[] into) {
        return new KvStream.Reader(SHAPE, new KvStream.Listener() {
            @Override
            public void header(String metadata, KvStream.Layout layout) {
                into[0] = new KvCache(layout.layers(), layout.kvLoraRank(), layout.ropeDim(), 1, layout.precision());
                into[1] = new KvCache(layout.mtpLayers(), layout.kvLoraRank(), layout.ropeDim(), 1, layout.precision());
            }

            @Override
            public void section(int cache, int layer, int from, int count, byte[] values) {
                KvStream.write(into[cache], into[cache].precision(), layer, from, count, values);
            }

            @Override
            public void end(String trailer) {
            }
        });
    }

    @Test
    void aStreamIsWrittenIntoAPoolOfTheOtherPrecisionConverted() {
        KvCache floats = filled(3, 20, 8);
        KvCache bf16 = floats.copyTo(KvBlockPool.forTokens(3, 8, 4, 64, 64, KvPrecision.BF16));
        for (KvCache sent : new KvCache[] {floats, bf16}) {
            KvPrecision other = sent.precision() == KvPrecision.BF16 ? KvPrecision.FLOAT32 : KvPrecision.BF16;
            KvCache into = new KvCache(3, 8, 4, 1, other);
            KvStream.Reader reader = new KvStream.Reader(SHAPE, new KvStream.Listener() {
                @Override
                public void header(String metadata, KvStream.Layout layout) {
                    assertEquals(sent.precision(), layout.precision());
                }

                @Override
                public void section(int cache, int layer, int from, int count, byte[] values) {
                    KvStream.write(into, sent.precision(), layer, from, count, values);
                }

                @Override
                public void end(String trailer) {
                }
            });
            reader.feed(KvStream.encode("{}", sent, null, "{}"));
            reader.finish();
            // BF16 widens exactly into float32; float32 rounds once into BF16: either way, the BF16 values
            for (int l = 0; l < 3; l++) {
                assertArrayEquals(tokens(bf16, l), tokens(into, l), sent.precision() + " into " + other + ", layer " + l);
            }
        }
    }

    @Test
    void aBf16CacheTravelsInHalfTheBytes() {
        KvCache floats = filled(3, 40, 4);
        KvCache bf16 = floats.copyTo(KvBlockPool.forTokens(3, 8, 4, 64, 64, KvPrecision.BF16));
        byte[] wide = KvStream.encode("{}", floats, null, "{}");
        byte[] narrow = KvStream.encode("{}", bf16, null, "{}");
        int values = 3 * 40 * 12;
        assertEquals(values * 2, wide.length - narrow.length, "two bytes less per value");
        assertSame(bf16, KvStream.decode(narrow, SHAPE).main());
        assertNull(KvStream.decode(narrow, SHAPE).mtp());
    }

    @Test
    void largePromptsAreCutIntoSectionsTheReaderBoundsAndItHoldsOneFrameAtMost() {
        KvCache wide = fill(new KvCache(2, 4096, 64, 16), 300, 7); // 16 KiB a token: 4.7 MiB a layer
        byte[] bytes = KvStream.encode("{}", wide, null, "{}");
        List<Integer> sections = new ArrayList<>();
        KvStream.Reader reader = new KvStream.Reader(null, new KvStream.Listener() {
            @Override
            public void header(String metadata, KvStream.Layout layout) {
            }

            @Override
            public void section(int cache, int layer, int from, int count, byte[] values) {
                assertTrue(values.length <= KvStream.MAX_SECTION_BYTES);
                sections.add(count);
            }

            @Override
            public void end(String trailer) {
            }
        });
        for (int at = 0; at < bytes.length; at += 65536) {
            reader.feed(bytes, at, Math.min(65536, bytes.length - at));
        }
        reader.finish();
        assertEquals(10, sections.size(), "each layer in five sections of at most a quarter of the bound: " + sections);
        assertTrue(reader.bufferedMost() < KvStream.MAX_SECTION_BYTES / 4 + 2 * 65536, "one frame and a network read: " + reader.bufferedMost());
    }

    @Test
    void aStreamOfAnotherModelsShapeIsRefusedFromItsLayoutBeforeAnySection() {
        KvCache main = filled(2, 3, 1);
        byte[] bytes = KvStream.encode("{}", main, null, "{}");
        assertEquals(3, KvStream.decode(bytes, new KvStream.Shape(2, 1, 8, 4, 16)).main().length());
        for (KvStream.Shape other : List.of(new KvStream.Shape(3, 1, 8, 4, 16), new KvStream.Shape(2, 1, 16, 4, 16),
                new KvStream.Shape(2, 1, 8, 8, 16), new KvStream.Shape(2, 1, 8, 4, 2))) {
            IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> KvStream.decode(bytes, other));
            assertTrue(e.getMessage().contains("does not fit this model"), e.getMessage());
        }
    }

    @Test
    void anEarlierReleasesWholeSnapshotAndOtherBytesAreRefusedByName() {
        byte[] v2 = ByteBuffer.allocate(16).putInt(KvStream.MAGIC).putInt(2).putInt(0).putInt(0).array();
        var e = assertThrows(IllegalArgumentException.class, () -> KvStream.decode(v2, SHAPE));
        assertTrue(e.getMessage().contains("earlier release") && e.getMessage().contains("same release"), e.getMessage());
        assertEquals("KV transfer: not a KV stream (bad magic)",
                assertThrows(IllegalArgumentException.class, () -> KvStream.decode("hello, world".getBytes(), SHAPE)).getMessage());
        byte[] odd = KvStream.encode("{}", filled(1, 2, 6), null, "{}");
        int widthAt = 12 + 2 + 4 + 16; // preamble, "{}", its CRC, four layout ints
        ByteBuffer.wrap(odd).putInt(widthAt, 3);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> KvStream.decode(odd, null)).getMessage().contains("checksum mismatch in layout"));
    }

    @Test
    void corruptionTruncationAndTrailingBytesAreRefusedNamingTheSection() {
        byte[] bytes = KvStream.encode("{}", filled(3, 5, 3), null, "{\"first_token\":1}");
        byte[] flipped = bytes.clone();
        flipped[bytes.length - 60] ^= 1;
        var e = assertThrows(IllegalArgumentException.class, () -> KvStream.decode(flipped, SHAPE));
        assertTrue(e.getMessage().contains("checksum mismatch in main layer 2 tokens 0..5"), e.getMessage());
        byte[] cut = java.util.Arrays.copyOf(bytes, bytes.length - 100);
        assertTrue(assertThrows(IllegalArgumentException.class, () -> KvStream.decode(cut, null)).getMessage().startsWith("KV transfer: truncated"));
        byte[] longer = java.util.Arrays.copyOf(bytes, bytes.length + 1);
        assertEquals("KV transfer: bytes after the end of the stream", assertThrows(IllegalArgumentException.class, () -> KvStream.decode(longer, null)).getMessage());
    }

    /** A layout for a 2-layer, 10-token prompt of (8+4) BF16 values, then the given raw frames. */
    private static byte[] handMade(ByteBuffer frames) {
        ByteBuffer b = ByteBuffer.allocate(18 + 28 + frames.position());
        b.putInt(KvStream.MAGIC).putInt(KvStream.VERSION).putInt(2).put((byte) '{').put((byte) '}');
        java.util.zip.CRC32 crc = new java.util.zip.CRC32();
        crc.update(new byte[] {'{', '}'});
        b.putInt((int) crc.getValue());
        int at = b.position();
        b.putInt(2).putInt(0).putInt(8).putInt(4).putInt(2).putInt(10);
        crc.reset();
        crc.update(b.array(), at, 24);
        b.putInt((int) crc.getValue());
        b.put(frames.array(), 0, frames.position());
        return b.array();
    }

    private static String refusal(ByteBuffer frames) {
        KvStream.Reader reader = new KvStream.Reader(new KvStream.Shape(2, 1, 8, 4, 64), IGNORE);
        return assertThrows(IllegalArgumentException.class, () -> {
            reader.feed(handMade(frames));
            reader.finish();
        }).getMessage();
    }

    @Test
    void sectionsOutOfOrderPastThePromptOrOverTheBoundAreRefusedFromTheirHead() {
        // layer 1 before layer 0
        assertTrue(refusal(ByteBuffer.allocate(17).put((byte) 1).putInt(0).putInt(1).putInt(0).putInt(4)).contains("before layer 0"));
        // a gap in layer 0
        assertTrue(refusal(ByteBuffer.allocate(17).put((byte) 1).putInt(0).putInt(0).putInt(3).putInt(4)).contains("starts at token 3, expected 0"));
        // past the prompt's 10 tokens, an MTP part the layout does not carry, an unknown frame
        assertTrue(refusal(ByteBuffer.allocate(17).put((byte) 1).putInt(0).putInt(0).putInt(0).putInt(11)).contains("does not fit the prompt"));
        assertTrue(refusal(ByteBuffer.allocate(17).put((byte) 1).putInt(1).putInt(0).putInt(0).putInt(1)).contains("does not carry"));
        assertTrue(refusal(ByteBuffer.allocate(1).put((byte) 9)).contains("unknown frame kind 9"));
        // the END before every main layer holds the prompt
        assertTrue(refusal(ByteBuffer.allocate(9).put((byte) 2).putInt(0).putInt(0)).contains("ended with main layer 0 at token 0 of 10"));
    }

    @Test
    void anOversizedSectionIsRefusedBeforeItIsBuffered() {
        KvCache wide = new KvCache(1, 60_000, 4, 1);
        byte[] header = new KvStream.Sender("{}", wide, null, 100).header();
        ByteBuffer head = ByteBuffer.allocate(header.length + 17).put(header).put((byte) 1).putInt(0).putInt(0).putInt(0).putInt(100);
        KvStream.Reader reader = new KvStream.Reader(null, IGNORE);
        var e = assertThrows(IllegalArgumentException.class, () -> reader.feed(head.array()));
        assertTrue(e.getMessage().contains("section of 24001600 bytes is larger than 4194304"), e.getMessage());
    }
}
