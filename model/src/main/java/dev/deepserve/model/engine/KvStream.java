package dev.deepserve.model.engine;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.zip.CRC32;

/**
 * The wire form of a prompt's latent KV travelling from a prefill instance to a decode instance while it is being
 * computed (DeepSeek-V3 §3.4 prefill/decode disaggregation). The prefill side sends, as soon as each prompt chunk's
 * forward is done, that chunk's latents layer by layer; the decode side writes each section into its paged pool as it
 * arrives. Neither side ever holds the whole prompt's KV outside its pool.
 *
 * <pre>
 * header:  magic "DSKV", version 3, metadata length, metadata (JSON), CRC-32
 * layout:  main layers, MTP layers (0: none), kv_lora_rank, rope dim, value bytes (2 BF16 | 4 float32), prompt tokens, CRC-32
 * frames:  1 SECTION: cache (0 main | 1 MTP), layer, from, count, count × (kv_lora_rank + rope) values little-endian, CRC-32
 *          2 END:     trailer length, trailer (JSON: first token, draft, cached tokens), CRC-32 — and nothing after it
 * </pre>
 *
 * Each (cache, layer) is sent in order without gaps: a section starts where that layer's previous one ended, and no
 * section is larger than {@link #MAX_SECTION_BYTES}, so a reader buffers at most one section. A stream that stops
 * before its END frame is cut: the receiver lets go of everything it took for it.
 */
public final class KvStream {

    static final int MAGIC = 0x44534B56; // "DSKV"
    static final int VERSION = 3;
    private static final byte SECTION = 1;
    private static final byte END = 2;
    /** The largest section a reader accepts; writers cut sections at a quarter of it. */
    public static final int MAX_SECTION_BYTES = 4 << 20;
    private static final int SEND_SECTION_BYTES = MAX_SECTION_BYTES / 4;
    /** A generate request is at most 8 MiB of JSON (the routes' body limit), and the metadata wraps one. */
    private static final int MAX_METADATA_BYTES = 9 << 20;
    private static final int MAX_TRAILER_BYTES = 64 << 10;

    private KvStream() {
    }

    /** The caches a stream carries: the main model's and, when {@code mtpLayers > 0}, the MTP module's, over {@code tokens} prompt tokens. */
    public record Layout(int layers, int mtpLayers, int kvLoraRank, int ropeDim, KvPrecision precision, int tokens) {

        public int stride() {
            return kvLoraRank + ropeDim;
        }

        /** Bytes of one section's values. */
        public long sectionBytes(int count) {
            return (long) count * stride() * precision.bytes();
        }

        int layersOf(int cache) {
            return cache == 0 ? layers : mtpLayers;
        }
    }

    /**
     * The caches a receiver can take: its model's layer count (main, and the MTP module's), latent widths and longest
     * context. A stream of another shape is refused from its layout, before anything is allocated.
     */
    public record Shape(int layers, int mtpLayers, int kvLoraRank, int ropeDim, int maxTokens) {
    }

    /**
     * The sending side, driven by the prefill instance's engine thread: {@link #header} once, {@link #next} after each
     * step that computed more of the prompt (the new tokens of every layer, cut into sections), {@link #end} when the
     * prompt is done. A cache that shrank (the sequence was preempted and is being recomputed) sends nothing until it
     * grows past what was already sent: recomputation gives the same values.
     */
    public static final class Sender {

        private final Layout layout;
        private final byte[] metadata;
        private final int[] sent = new int[2];
        private long bytes;

        /** A stream of the prompt whose caches are {@code main} and {@code mtp} (null: no MTP part), {@code tokens} long. */
        public Sender(String metadata, KvCache main, KvCache mtp, int tokens) {
            if (mtp != null && (mtp.precision() != main.precision() || mtp.stride() != main.stride())) {
                throw new IllegalArgumentException("the MTP cache must have the main cache's precision and widths");
            }
            this.metadata = metadata.getBytes(StandardCharsets.UTF_8);
            this.layout = new Layout(main.layers(), mtp == null ? 0 : mtp.layers(), main.kvLoraRank(), main.stride() - main.kvLoraRank(),
                    main.precision(), tokens);
        }

        /** Bytes produced so far. */
        public long bytes() {
            return bytes;
        }

        public byte[] header() {
            ByteBuffer b = ByteBuffer.allocate(12 + metadata.length + 4 + 28);
            b.putInt(MAGIC).putInt(VERSION).putInt(metadata.length).put(metadata).putInt(crc(metadata, 0, metadata.length));
            int at = b.position();
            b.putInt(layout.layers).putInt(layout.mtpLayers).putInt(layout.kvLoraRank).putInt(layout.ropeDim).putInt(layout.precision.bytes())
                    .putInt(layout.tokens);
            b.putInt(crc(b.array(), at, 24));
            bytes += b.capacity();
            return b.array();
        }

        /** Sections for what the caches hold beyond what was sent (none: an empty array). {@code mtp} may be null. */
        public byte[] next(KvCache main, KvCache mtp) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            sections(out, 0, main);
            if (layout.mtpLayers > 0 && mtp != null) {
                sections(out, 1, mtp);
            }
            bytes += out.size();
            return out.toByteArray();
        }

        /** The last sections and the END frame carrying {@code trailer}. */
        public byte[] end(KvCache main, KvCache mtp, String trailer) {
            byte[] rest = next(main, mtp);
            byte[] t = trailer.getBytes(StandardCharsets.UTF_8);
            ByteBuffer b = ByteBuffer.allocate(rest.length + 1 + 4 + t.length + 4);
            b.put(rest).put(END).putInt(t.length).put(t).putInt(crc(t, 0, t.length));
            bytes += b.capacity() - rest.length;
            return b.array();
        }

        private void sections(ByteArrayOutputStream out, int cache, KvCache c) {
            int upTo = Math.min(c.length(), layout.tokens);
            if (upTo <= sent[cache]) {
                return;
            }
            int perSection = (int) Math.max(1, SEND_SECTION_BYTES / layout.sectionBytes(1));
            for (int l = 0; l < c.layers(); l++) {
                for (int from = sent[cache]; from < upTo; from += perSection) {
                    int count = Math.min(perSection, upTo - from);
                    float[] values = new float[count * layout.stride()];
                    c.read(l, from, values, 0, count);
                    ByteBuffer b = ByteBuffer.allocate(1 + 16 + (int) layout.sectionBytes(count) + 4).order(ByteOrder.LITTLE_ENDIAN);
                    b.put(SECTION);
                    b.order(ByteOrder.BIG_ENDIAN).putInt(cache).putInt(l).putInt(from).putInt(count).order(ByteOrder.LITTLE_ENDIAN);
                    layout.precision.put(b, values); // exact: the cache holds these values at this precision
                    int crc = crc(b.array(), 1, b.position() - 1);
                    b.order(ByteOrder.BIG_ENDIAN).putInt(crc);
                    out.write(b.array(), 0, b.capacity());
                }
            }
            sent[cache] = upTo;
        }
    }

    /** What a reader hands on, in stream order. Exceptions thrown here stop the stream (as a refusal, with their message). */
    public interface Listener {

        /** The metadata and layout, before any section: the receiver checks them and takes its blocks. */
        void header(String metadata, Layout layout);

        /** {@code count} tokens of one layer from {@code from} on, at the layout's precision, little-endian; the array is the listener's. */
        void section(int cache, int layer, int from, int count, byte[] values);

        /** The END frame: every main layer holds the whole prompt. */
        void end(String trailer);
    }

    /**
     * The receiving side: bytes are pushed in as they arrive ({@link #feed}), in any pieces, and handed to a
     * {@link Listener} frame by frame once each frame's checksum holds. Anything wrong — another format or version, a
     * shape this model cannot take, a section out of order, too large or past the prompt, a bad checksum, bytes after
     * the END frame, a stream that stops short ({@link #finish}) — throws {@link IllegalArgumentException} naming it.
     * Buffers at most one frame.
     */
    public static final class Reader {

        private enum State { PREAMBLE, METADATA, LAYOUT, KIND, SECTION_HEAD, SECTION_BODY, TRAILER_LENGTH, TRAILER, DONE }

        private final Shape expected;
        private final Listener listener;
        private State state = State.PREAMBLE;
        private int need = 12;
        private byte[] buf = new byte[64];
        private int have;
        private Layout layout;
        private int[][] written;
        private int cache;
        private int layer;
        private int from;
        private int count;
        private long bufferedMost;

        /** A reader for a receiver of {@code expected}'s shape (null: any plausible shape). */
        public Reader(Shape expected, Listener listener) {
            this.expected = expected;
            this.listener = listener;
        }

        /** The most bytes this reader held at once (one frame and what came with it). */
        public long bufferedMost() {
            return bufferedMost;
        }

        public boolean done() {
            return state == State.DONE;
        }

        public void feed(byte[] data) {
            feed(data, 0, data.length);
        }

        public void feed(byte[] data, int off, int len) {
            if (state == State.DONE && len > 0) {
                throw new IllegalArgumentException("KV transfer: bytes after the end of the stream");
            }
            if (have + len > buf.length) {
                buf = Arrays.copyOf(buf, Math.max(have + len, 2 * buf.length));
            }
            System.arraycopy(data, off, buf, have, len);
            have += len;
            bufferedMost = Math.max(bufferedMost, have);
            int at = 0;
            while (state != State.DONE && have - at >= need) {
                int n = need;
                step(ByteBuffer.wrap(buf, at, n));
                at += n;
            }
            if (state == State.DONE && have > at) {
                throw new IllegalArgumentException("KV transfer: bytes after the end of the stream");
            }
            System.arraycopy(buf, at, buf, 0, have - at);
            have -= at;
            if (buf.length > 4 * Math.max(need, 1 << 16)) {
                buf = Arrays.copyOf(buf, Math.max(64, Math.max(have, need))); // a large frame passed: do not keep its buffer
            }
        }

        /** The sender says it is done: a stream that has not reached its END frame is truncated. */
        public void finish() {
            if (state != State.DONE) {
                throw new IllegalArgumentException("KV transfer: truncated" + (layout == null ? "" : " at " + progress()));
            }
        }

        private String progress() {
            return "main layer 0 token " + written[0][0] + " of " + layout.tokens;
        }

        private void step(ByteBuffer b) {
            switch (state) {
                case PREAMBLE -> {
                    if (b.getInt() != MAGIC) {
                        throw new IllegalArgumentException("KV transfer: not a KV stream (bad magic)");
                    }
                    int version = b.getInt();
                    if (version == 1 || version == 2) {
                        throw new IllegalArgumentException("KV transfer: version " + version + " is a whole-snapshot transfer of an earlier release;"
                                + " run prefill and decode instances of the same release");
                    }
                    if (version != VERSION) {
                        throw new IllegalArgumentException("KV transfer: unsupported version " + version);
                    }
                    int length = b.getInt();
                    if (length < 0 || length > MAX_METADATA_BYTES) {
                        throw new IllegalArgumentException("KV transfer: metadata length " + length + " is not plausible");
                    }
                    next(State.METADATA, length + 4);
                }
                case METADATA -> {
                    byte[] meta = checked(b, need - 4, "metadata");
                    metadata = new String(meta, StandardCharsets.UTF_8);
                    next(State.LAYOUT, 28);
                }
                case LAYOUT -> {
                    int crc = crc(b.array(), b.position(), 24);
                    int layers = b.getInt();
                    int mtpLayers = b.getInt();
                    int kvLora = b.getInt();
                    int rope = b.getInt();
                    int width = b.getInt();
                    int tokens = b.getInt();
                    if (b.getInt() != crc) {
                        throw new IllegalArgumentException("KV transfer: checksum mismatch in layout");
                    }
                    layout = layout(layers, mtpLayers, kvLora, rope, width, tokens);
                    written = new int[][] {new int[layers], new int[mtpLayers]};
                    listener.header(metadata, layout);
                    metadata = null;
                    next(State.KIND, 1);
                }
                case KIND -> {
                    byte kind = b.get();
                    if (kind == SECTION) {
                        next(State.SECTION_HEAD, 16);
                    } else if (kind == END) {
                        next(State.TRAILER_LENGTH, 4);
                    } else {
                        throw new IllegalArgumentException("KV transfer: unknown frame kind " + kind);
                    }
                }
                case SECTION_HEAD -> {
                    cache = b.getInt();
                    layer = b.getInt();
                    from = b.getInt();
                    count = b.getInt();
                    String name = (cache == 1 ? "mtp" : "main") + " layer " + layer;
                    if (cache < 0 || cache > 1 || layer < 0 || layer >= layout.layersOf(cache)) {
                        throw new IllegalArgumentException("KV transfer: a section for cache " + cache + " layer " + layer + ", which this stream does not carry");
                    }
                    if (from != written[cache][layer]) {
                        throw new IllegalArgumentException("KV transfer: " + name + " section starts at token " + from + ", expected " + written[cache][layer]);
                    }
                    if (layer > 0 && (long) from + count > written[cache][layer - 1]) {
                        // layers fill in order, so a receiver takes blocks as layer 0 arrives and its length follows the last layer
                        throw new IllegalArgumentException("KV transfer: " + name + " section reaches token " + ((long) from + count) + " before layer "
                                + (layer - 1) + " (at " + written[cache][layer - 1] + ")");
                    }
                    if (count <= 0 || count > layout.tokens - from) {
                        throw new IllegalArgumentException("KV transfer: " + name + " section of " + count + " tokens from " + from
                                + " does not fit the prompt's " + layout.tokens);
                    }
                    long bytes = layout.sectionBytes(count);
                    if (bytes > MAX_SECTION_BYTES) {
                        throw new IllegalArgumentException("KV transfer: " + name + " section of " + bytes + " bytes is larger than " + MAX_SECTION_BYTES);
                    }
                    headCrc.reset();
                    headCrc.update(b.array(), b.position() - 16, 16);
                    next(State.SECTION_BODY, (int) bytes + 4);
                }
                case SECTION_BODY -> {
                    int n = need - 4;
                    headCrc.update(b.array(), b.position(), n);
                    byte[] values = new byte[n];
                    b.get(values);
                    if (b.getInt() != (int) headCrc.getValue()) {
                        throw new IllegalArgumentException("KV transfer: checksum mismatch in " + (cache == 1 ? "mtp" : "main") + " layer " + layer
                                + " tokens " + from + ".." + (from + count));
                    }
                    written[cache][layer] = from + count;
                    listener.section(cache, layer, from, count, values);
                    next(State.KIND, 1);
                }
                case TRAILER_LENGTH -> {
                    int length = b.getInt();
                    if (length < 0 || length > MAX_TRAILER_BYTES) {
                        throw new IllegalArgumentException("KV transfer: trailer length " + length + " is not plausible");
                    }
                    next(State.TRAILER, length + 4);
                }
                case TRAILER -> {
                    byte[] trailer = checked(b, need - 4, "trailer");
                    for (int l = 0; l < layout.layers; l++) {
                        if (written[0][l] != layout.tokens) {
                            throw new IllegalArgumentException("KV transfer: ended with main layer " + l + " at token " + written[0][l] + " of " + layout.tokens);
                        }
                    }
                    state = State.DONE;
                    need = 0;
                    listener.end(new String(trailer, StandardCharsets.UTF_8));
                }
                case DONE -> throw new IllegalStateException();
            }
        }

        private final CRC32 headCrc = new CRC32();
        private String metadata;

        private void next(State s, int bytes) {
            state = s;
            need = bytes;
        }

        private static byte[] checked(ByteBuffer b, int n, String section) {
            byte[] data = new byte[n];
            b.get(data);
            if (b.getInt() != crc(data, 0, n)) {
                throw new IllegalArgumentException("KV transfer: checksum mismatch in " + section);
            }
            return data;
        }

        private Layout layout(int layers, int mtpLayers, int kvLora, int rope, int width, int tokens) {
            KvPrecision precision = KvPrecision.ofBytes(width);
            if (precision == null) {
                throw new IllegalArgumentException("KV transfer: values of " + width + " bytes are neither float32 nor BF16");
            }
            String shape = layers + (mtpLayers > 0 ? "+" + mtpLayers : "") + " layers × " + tokens + " tokens × (" + kvLora + "+" + rope + ")";
            if (expected != null && (layers != expected.layers() || (mtpLayers != 0 && mtpLayers != expected.mtpLayers())
                    || kvLora != expected.kvLoraRank() || rope != expected.ropeDim() || tokens <= 0 || tokens > expected.maxTokens())) {
                throw new IllegalArgumentException("KV transfer: cache shape " + shape + " does not fit this model (" + expected.layers() + " layers × at most "
                        + expected.maxTokens() + " tokens × (" + expected.kvLoraRank() + "+" + expected.ropeDim() + "))");
            }
            if (layers <= 0 || layers > 1024 || mtpLayers < 0 || mtpLayers > 16 || kvLora <= 0 || kvLora > 1 << 16 || rope < 0 || rope > 1 << 16
                    || tokens <= 0 || tokens > 1 << 24 || (long) (kvLora + rope) * width > MAX_SECTION_BYTES) {
                throw new IllegalArgumentException("KV transfer: cache shape " + shape + " is not plausible");
            }
            return new Layout(layers, mtpLayers, kvLora, rope, precision, tokens);
        }
    }

    /** A whole stream read into heap caches (tests, benchmarks): metadata, trailer, main cache, MTP cache or null. */
    public record Contents(String metadata, String trailer, KvCache main, KvCache mtp) {
    }

    /** One stream in one array: the header, every section, the END frame (tests and benchmarks). */
    public static byte[] encode(String metadata, KvCache main, KvCache mtp, String trailer) {
        Sender s = new Sender(metadata, main, mtp, main.length());
        byte[] header = s.header();
        byte[] rest = s.end(main, mtp, trailer);
        byte[] all = Arrays.copyOf(header, header.length + rest.length);
        System.arraycopy(rest, 0, all, header.length, rest.length);
        return all;
    }

    /** Reads a whole stream into heap caches, as a receiver of {@code expected}'s shape would (null: any plausible shape). */
    public static Contents decode(byte[] bytes, Shape expected) {
        KvCache[] caches = new KvCache[2];
        String[] text = new String[2];
        Reader reader = new Reader(expected, new Listener() {
            @Override
            public void header(String metadata, Layout layout) {
                text[0] = metadata;
                caches[0] = new KvCache(layout.layers(), layout.kvLoraRank(), layout.ropeDim(), 1, layout.precision());
                caches[1] = layout.mtpLayers() == 0 ? null : new KvCache(layout.mtpLayers(), layout.kvLoraRank(), layout.ropeDim(), 1, layout.precision());
            }

            @Override
            public void section(int cache, int layer, int from, int count, byte[] values) {
                write(caches[cache], caches[cache].precision(), layer, from, count, values);
            }

            @Override
            public void end(String trailer) {
                text[1] = trailer;
            }
        });
        reader.feed(bytes);
        reader.finish();
        KvCache mtp = caches[1] != null && caches[1].length() == caches[0].length() ? caches[1] : null;
        return new Contents(text[0], text[1], caches[0], mtp);
    }

    /**
     * Writes one received section, whose values are at {@code wire} precision (the stream's), into {@code cache} (at its
     * own precision: BF16 widens exactly, float32 rounds once). Its layers fill in order: blocks are taken as the first
     * layer reaches new tokens, and the cache's length is where its last layer has reached.
     */
    public static void write(KvCache cache, KvPrecision wire, int layer, int from, int count, byte[] values) {
        if (values.length != count * cache.stride() * wire.bytes()) {
            throw new IllegalArgumentException("a section of " + count + " tokens has " + values.length + " bytes");
        }
        if (layer == 0 && from + count > cache.length()) {
            cache.reserve(from + count - cache.length());
        }
        float[] floats = new float[count * cache.stride()];
        wire.get(ByteBuffer.wrap(values).order(ByteOrder.LITTLE_ENDIAN), floats);
        cache.write(layer, from, floats, 0, count);
        if (layer == cache.layers() - 1) {
            cache.advance(from + count - cache.length());
        }
    }

    private static int crc(byte[] b, int off, int n) {
        CRC32 c = new CRC32();
        c.update(b, off, n);
        return (int) c.getValue();
    }
}
