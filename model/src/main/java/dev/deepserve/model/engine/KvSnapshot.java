package dev.deepserve.model.engine;

import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.zip.CRC32;

/**
 * The wire form of a prefilled sequence's latent KV, for handing it from a prefill instance to a decode instance
 * (DeepSeek-V3 §3.4 prefill/decode disaggregation): a header (magic, version, JSON metadata, cache shape and value
 * width) and then, per layer, its {@code tokens × (kv_lora_rank + rope)} values little-endian — float32, or BF16 when
 * the sender's cache keeps BF16 (half the bytes, nothing lost: the values are BF16 already) — each section followed by
 * its CRC-32, so a truncated or corrupted transfer is refused with the section named instead of decoding into wrong
 * attention. Version 1 (float32 only, no width field) is still read.
 */
public final class KvSnapshot {

    private static final int MAGIC = 0x44534B56; // "DSKV"
    private static final int VERSION = 2;

    /** What travels: metadata the receiver needs (request, first token, …) as JSON text, the main cache, the MTP cache or null. */
    public record Contents(String metadata, KvCache main, KvCache mtp) {
    }

    /**
     * The caches a receiver can take: its model's layer count (main, and the MTP module's, which is 1), latent widths and
     * longest context. A snapshot of another shape is refused from its header, before anything is allocated.
     */
    public record Shape(int layers, int mtpLayers, int kvLoraRank, int ropeDim, int maxTokens) {
    }

    private KvSnapshot() {
    }

    public static byte[] encode(String metadata, KvCache main, KvCache mtp) {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        try {
            write(bytes, metadata, main, mtp);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
        return bytes.toByteArray();
    }

    public static void write(OutputStream out, String metadata, KvCache main, KvCache mtp) throws IOException {
        DataOutputStream d = new DataOutputStream(out);
        byte[] meta = metadata.getBytes(StandardCharsets.UTF_8);
        // all-float32 snapshots keep version 1's bytes, so an engine of the previous release still takes them
        int version = main.precision() == KvPrecision.FLOAT32 && (mtp == null || mtp.precision() == KvPrecision.FLOAT32) ? 1 : VERSION;
        d.writeInt(MAGIC);
        d.writeInt(version);
        d.writeInt(meta.length);
        d.write(meta);
        d.writeInt(crc(meta, 0, meta.length));
        for (KvCache c : new KvCache[] {main, mtp}) {
            if (c == null) {
                d.writeInt(0);
                continue;
            }
            d.writeInt(c.layers());
            d.writeInt(c.kvLoraRank());
            d.writeInt(c.stride() - c.kvLoraRank());
            d.writeInt(c.length());
            KvPrecision precision = c.precision();
            if (version != 1) {
                d.writeInt(precision.bytes());
            }
            int values = c.length() * c.stride();
            ByteBuffer buf = ByteBuffer.allocate(values * precision.bytes()).order(ByteOrder.LITTLE_ENDIAN);
            float[] layer = new float[values];
            for (int l = 0; l < c.layers(); l++) {
                buf.clear();
                c.read(l, 0, layer, 0, c.length());
                precision.put(buf, layer); // exact: the cache held these values at this precision
                d.write(buf.array(), 0, buf.capacity());
                d.writeInt(crc(buf.array(), 0, buf.capacity()));
            }
        }
        d.flush();
    }

    public static Contents decode(byte[] bytes) {
        return decode(bytes, null);
    }

    /** As {@link #decode(byte[])}, refusing caches that do not fit {@code expected} (null: any plausible shape). */
    public static Contents decode(byte[] bytes, Shape expected) {
        try {
            return read(new java.io.ByteArrayInputStream(bytes), bytes.length, expected);
        } catch (IOException e) {
            throw new IllegalArgumentException("KV transfer: " + e.getMessage());
        }
    }

    /** Reads and verifies a snapshot; throws {@link IllegalArgumentException} naming the bad or missing section. */
    public static Contents read(InputStream in) throws IOException {
        return read(in, Long.MAX_VALUE, null);
    }

    /**
     * As {@link #read(InputStream)}, for a transfer of at most {@code size} bytes: a cache whose declared shape needs
     * more bytes than that is refused before anything is allocated for it (a 34-byte header may claim terabytes).
     */
    public static Contents read(InputStream in, long size, Shape expected) throws IOException {
        DataInputStream d = new DataInputStream(in);
        long[] left = {size};
        try {
            if (d.readInt() != MAGIC) {
                throw new IllegalArgumentException("KV transfer: not a KV snapshot (bad magic)");
            }
            int version = d.readInt();
            if (version != VERSION && version != 1) {
                throw new IllegalArgumentException("KV transfer: unsupported version " + version);
            }
            int metaLength = d.readInt();
            if (metaLength < 0 || metaLength > (1 << 24)) {
                throw new IllegalArgumentException("KV transfer: metadata length " + metaLength + " is not plausible");
            }
            byte[] meta = d.readNBytes(metaLength);
            check(d, meta, meta.length, "metadata");
            left[0] -= 12L + metaLength + 4;
            // after the main cache there is at least the MTP cache's layer count
            KvCache main = readCache(d, version, "main", left, 4, expected == null ? -1 : expected.layers(), expected);
            KvCache mtp = readCache(d, version, "mtp", left, 0, expected == null ? -1 : expected.mtpLayers(), expected);
            if (main == null) {
                throw new IllegalArgumentException("KV transfer: no main cache");
            }
            return new Contents(new String(meta, StandardCharsets.UTF_8), main, mtp);
        } catch (java.io.EOFException e) {
            throw new IllegalArgumentException("KV transfer: truncated");
        }
    }

    private static KvCache readCache(DataInputStream d, int version, String name, long[] left, int after, int expectedLayers, Shape expected)
            throws IOException {
        int layers = d.readInt();
        if (layers == 0) {
            return null;
        }
        int kvLora = d.readInt();
        int rope = d.readInt();
        int length = d.readInt();
        int width = version == 1 ? Float.BYTES : d.readInt();
        KvPrecision precision = KvPrecision.ofBytes(width);
        if (precision == null) {
            throw new IllegalArgumentException("KV transfer: " + name + " cache values of " + width + " bytes are neither float32 nor BF16");
        }
        if (expected != null && (layers != expectedLayers || kvLora != expected.kvLoraRank() || rope != expected.ropeDim()
                || length < 0 || length > expected.maxTokens())) {
            throw new IllegalArgumentException("KV transfer: " + name + " cache shape " + layers + "×" + length + "×(" + kvLora + "+" + rope
                    + ") does not fit this model (" + expectedLayers + " layers × at most " + expected.maxTokens() + " tokens × ("
                    + expected.kvLoraRank() + "+" + expected.ropeDim() + "))");
        }
        // each field bounded on its own first, so the products below cannot overflow (a fuzzer found one that did)
        if (layers < 0 || layers > 1024 || kvLora <= 0 || kvLora > 1 << 16 || rope < 0 || rope > 1 << 16 || length < 0 || length > 1 << 24
                || (long) length * (kvLora + rope) * Float.BYTES > Integer.MAX_VALUE) {
            throw new IllegalArgumentException("KV transfer: " + name + " cache shape " + layers + "×" + length + "×(" + kvLora + "+" + rope + ") is not plausible");
        }
        long needed = (version == 1 ? 16L : 20L) + layers * ((long) length * (kvLora + rope) * width + 4);
        if (needed > left[0] - after) {
            throw new IllegalArgumentException("KV transfer: truncated: " + name + " cache shape " + layers + "×" + length + "×(" + kvLora + "+" + rope
                    + ") needs " + needed + " bytes, more than the transfer holds");
        }
        left[0] -= needed;
        // blocks only for tokens the transfer carries: an empty cache of absurd width allocates nothing
        KvCache cache = new KvCache(layers, kvLora, rope, length, precision);
        cache.reserve(length);
        int bytes = length * (kvLora + rope) * width;
        float[] layer = new float[length * (kvLora + rope)];
        for (int l = 0; l < layers; l++) {
            byte[] data = d.readNBytes(bytes);
            if (data.length != bytes) {
                throw new IllegalArgumentException("KV transfer: truncated in " + name + " layer " + l);
            }
            check(d, data, bytes, name + " layer " + l);
            precision.get(ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN), layer);
            cache.write(l, 0, layer, 0, length);
        }
        cache.advance(length);
        return cache;
    }

    private static void check(DataInputStream d, byte[] data, int n, String section) throws IOException {
        if (d.readInt() != crc(data, 0, n)) {
            throw new IllegalArgumentException("KV transfer: checksum mismatch in " + section);
        }
    }

    private static int crc(byte[] b, int off, int n) {
        CRC32 c = new CRC32();
        c.update(b, off, n);
        return (int) c.getValue();
    }
}
