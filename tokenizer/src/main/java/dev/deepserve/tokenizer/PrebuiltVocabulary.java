package dev.deepserve.tokenizer;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32C;

/**
 * The tokenizer's vocabulary, merges and settings in a binary file next to {@code tokenizer.json}
 * ({@value #FILE}), so a cold start reads arrays instead of parsing 8 MB of JSON into a tree (1.43 s → 0.8 s on a
 * 2-core box; {@code bench/results/2026-12-05-tokenizer-load-2core.txt}).
 *
 * <p>The file holds the lengths and checksums of the JSON files it was built from and a CRC-32C of its own body; it is used only
 * when both match, so an edited {@code tokenizer.json} or a torn, truncated or tampered file falls back to the JSON
 * (and is rewritten). Every length is checked against the bytes left before anything is allocated from it. Written to
 * a temporary file and moved into place, so concurrent starts never see half a file; a read-only model directory just
 * parses the JSON every time.
 */
final class PrebuiltVocabulary {

    static final String FILE = "tokenizer.deepserve.bin";
    private static final long MAGIC = 0x44535f544f4b454eL; // "DS_TOKEN"
    private static final int VERSION = 1;
    private static final int DIGEST = 4 + 2 * 16;
    /** The largest prebuilt file read: DeepSeek's is 4.3 MB; anything far larger is not one. */
    private static final long MAX_BYTES = 256L << 20;
    private static final int HEADER = 8 + 4 + DIGEST + 4 + 8; // magic, version, source digest, body CRC, body length
    private static final System.Logger LOG = System.getLogger(PrebuiltVocabulary.class.getName());

    private PrebuiltVocabulary() {
    }

    /**
     * The vocabulary of the tokenizer in {@code modelDir}, from the prebuilt file when it is current. The JSON files
     * are read once: their checksums and, when needed, the parse come from the same bytes, so a file swapped during a
     * start can never be stored under the other one's checksum.
     */
    static Vocabulary load(Path modelDir) {
        Sources src = Sources.read(modelDir);
        Path file = modelDir.resolve(FILE);
        Vocabulary v = read(file, src.digest());
        if (v != null) {
            return v;
        }
        v = src.parse();
        write(file, src.digest(), v);
        return v;
    }

    /** tokenizer.json and tokenizer_config.json (null when absent) as read once. */
    record Sources(Path dir, byte[] tokenizer, byte[] config) {
        static Sources read(Path modelDir) {
            Path json = modelDir.resolve("tokenizer.json");
            Path config = modelDir.resolve("tokenizer_config.json");
            if (!Files.isRegularFile(json)) {
                throw new TokenizerFormatException(modelDir + " has no tokenizer.json");
            }
            try {
                return new Sources(modelDir, Files.readAllBytes(json), Files.isRegularFile(config) ? Files.readAllBytes(config) : null);
            } catch (IOException e) {
                throw new TokenizerFormatException("cannot read the tokenizer files in " + modelDir + ": " + e.getMessage());
            }
        }

        Vocabulary parse() {
            return Tokenizer.parseJson(dir, tokenizer, config);
        }

        byte[] digest() {
            ByteBuffer d = ByteBuffer.allocate(DIGEST);
            d.putInt(Tokenizer.PARSER_VERSION);
            for (byte[] bytes : new byte[][] {tokenizer, config}) {
                CRC32C c = new CRC32C();
                java.util.zip.CRC32 c2 = new java.util.zip.CRC32();
                if (bytes != null) {
                    c.update(bytes);
                    c2.update(bytes);
                }
                d.putLong(bytes == null ? -1 : bytes.length).putInt((int) c.getValue()).putInt((int) c2.getValue());
            }
            return d.array();
        }
    }

    /**
     * What identifies the JSON files the prebuilt form was made from, and the parser that made it: the parser's version
     * ({@link Tokenizer#PARSER_VERSION}), each file's length, CRC-32C and CRC-32 (both hardware-accelerated, ~5 ms for
     * DeepSeek's 8 MB where SHA-256 took ~90 ms of a cold start). It detects an edited or replaced file, not an
     * adversary — whoever can write the cache can write tokenizer.json.
     */
    static byte[] digest(Path modelDir) {
        return Sources.read(modelDir).digest();
    }

    /** The vocabulary in {@code file} if it exists, is whole and was built from files with {@code digest}; else null. */
    static Vocabulary read(Path file, byte[] digest) {
        if (!Files.isRegularFile(file)) {
            return null;
        }
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < HEADER || size > MAX_BYTES) {
                return stale(file, "its size is " + size + " bytes");
            }
            ByteBuffer head = ByteBuffer.allocate(HEADER);
            while (head.hasRemaining() && ch.read(head) >= 0) {
                // the header first: nothing larger is allocated for a file that is not ours
            }
            head.flip();
            if (head.remaining() != HEADER || head.getLong() != MAGIC || head.getInt() != VERSION) {
                return stale(file, "it is not a version-" + VERSION + " prebuilt vocabulary");
            }
            byte[] source = new byte[DIGEST];
            head.get(source);
            if (!Arrays.equals(source, digest)) {
                return stale(file, "tokenizer.json, tokenizer_config.json or the parser changed since it was built");
            }
            int crc = head.getInt();
            long length = head.getLong();
            if (length != size - HEADER) {
                return stale(file, "its body is " + (size - HEADER) + " bytes, its header says " + length);
            }
            ByteBuffer buf = ByteBuffer.allocate((int) length);
            while (buf.hasRemaining() && ch.read(buf) >= 0) {
                // read it whole
            }
            buf.flip();
            if (buf.remaining() != length) {
                return stale(file, "it was cut short while read");
            }
            CRC32C check = new CRC32C();
            check.update(buf.duplicate());
            if ((int) check.getValue() != crc) {
                return stale(file, "its checksum does not match");
            }
            return body(buf);
        } catch (IOException | RuntimeException e) {
            return stale(file, e.toString());
        }
    }

    private static Vocabulary stale(Path file, String why) {
        LOG.log(System.Logger.Level.INFO, "not using " + file + ": " + why + "; reading tokenizer.json");
        return null;
    }

    private static Vocabulary body(ByteBuffer in) {
        String normalizer = string(in);
        String pre = string(in);
        int words = count(in, 8);
        int[] ids = ints(in, words);
        String[] tokens = strings(in, words);
        Map<String, Integer> vocab = new HashMap<>(words * 2);
        for (int i = 0; i < words; i++) {
            vocab.put(tokens[i], ids[i]);
        }
        int addedCount = count(in, 8);
        List<AddedVocabulary.Token> added = new ArrayList<>(addedCount);
        for (int i = 0; i < addedCount; i++) {
            int id = in.getInt();
            byte flags = in.get();
            added.add(new AddedVocabulary.Token(id, string(in), (flags & 1) != 0, (flags & 2) != 0, (flags & 4) != 0, (flags & 8) != 0));
        }
        int mergeCount = count(in, 12);
        long[] pairs = new long[mergeCount];
        in.asLongBuffer().get(pairs);
        in.position(in.position() + 8 * mergeCount);
        int[] merged = ints(in, mergeCount);
        long[][] merges = new long[mergeCount][];
        for (int r = 0; r < mergeCount; r++) {
            merges[r] = new long[] {pairs[r], merged[r]};
        }
        boolean ignoreMerges = in.get() != 0;
        String config = string(in);
        if (in.hasRemaining()) {
            throw new IllegalStateException(in.remaining() + " bytes after the last field");
        }
        return new Vocabulary(normalizer.isEmpty() ? null : normalizer, pre, vocab, added, merges, ignoreMerges, config);
    }

    private static int[] ints(ByteBuffer in, int n) {
        if (4L * n > in.remaining()) {
            throw new IllegalStateException(n + " ints with " + in.remaining() + " bytes left");
        }
        int[] out = new int[n];
        in.asIntBuffer().get(out);
        in.position(in.position() + 4 * n);
        return out;
    }

    /** n strings stored as their lengths, then all their UTF-16 code units in one run. */
    private static String[] strings(ByteBuffer in, int n) {
        int[] lengths = ints(in, n);
        long total = 0;
        for (int len : lengths) {
            if (len < 0) {
                throw new IllegalStateException("a negative string length");
            }
            total += len;
        }
        if (2 * total > in.remaining()) {
            throw new IllegalStateException(total + " characters with " + in.remaining() + " bytes left");
        }
        char[] all = new char[(int) total];
        in.asCharBuffer().get(all);
        in.position(in.position() + 2 * all.length);
        String[] out = new String[n];
        for (int i = 0, at = 0; i < n; at += lengths[i], i++) {
            out[i] = new String(all, at, lengths[i]);
        }
        return out;
    }

    /** A count of records of at least {@code minBytes} each, refused when the bytes left cannot hold them. */
    private static int count(ByteBuffer in, int minBytes) {
        int n = in.getInt();
        if (n < 0 || (long) n * minBytes > in.remaining()) {
            throw new IllegalStateException("a count of " + n + " with " + in.remaining() + " bytes left");
        }
        return n;
    }

    /** UTF-16 code units, so any Java string (lone surrogates included) comes back exactly. */
    private static String string(ByteBuffer in) {
        int n = count(in, 2);
        char[] c = new char[n];
        in.asCharBuffer().get(c);
        in.position(in.position() + 2 * n);
        return new String(c);
    }

    /** Writes the prebuilt file; a directory that cannot be written to only costs the next start the JSON parse. */
    static void write(Path file, byte[] digest, Vocabulary v) {
        if (!Files.isWritable(file.getParent())) {
            return; // e.g. a read-only image layer: parse the JSON each start, quietly
        }
        Path tmp = null;
        try {
            ByteBuffer body = encode(v);
            CRC32C crc = new CRC32C();
            crc.update(body.duplicate());
            ByteBuffer head = ByteBuffer.allocate(HEADER);
            head.putLong(MAGIC).putInt(VERSION).put(digest).putInt((int) crc.getValue()).putLong(body.remaining()).flip();
            removeAbandoned(file.getParent());
            tmp = Files.createTempFile(file.getParent(), FILE, ".partial");
            try {
                // readable like tokenizer.json beside it: services running as other users share one prebuilt file
                Files.setPosixFilePermissions(tmp, java.nio.file.attribute.PosixFilePermissions.fromString("rw-r--r--"));
            } catch (UnsupportedOperationException e) {
                // not a POSIX file system: its default permissions apply
            }
            try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE)) {
                while (head.hasRemaining()) {
                    ch.write(head);
                }
                while (body.hasRemaining()) {
                    ch.write(body);
                }
                ch.force(true);
            }
            try {
                Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING);
            }
            tmp = null;
        } catch (IOException | RuntimeException e) {
            LOG.log(System.Logger.Level.INFO, "could not write " + file + " (" + e + "); the next start reads tokenizer.json again");
        } finally {
            if (tmp != null) {
                try {
                    Files.deleteIfExists(tmp);
                } catch (IOException ignored) {
                    // a leftover .partial file is never read
                }
            }
        }
    }

    /** How old a temporary file must be before it counts as left by a writer that was killed. */
    private static final java.time.Duration ABANDONED = java.time.Duration.ofHours(1);

    /** Deletes temporary files of this cache that a killed start left behind (a live writer's are minutes old at most). */
    private static void removeAbandoned(Path dir) {
        java.time.Instant before = java.time.Instant.now().minus(ABANDONED);
        try (var files = Files.newDirectoryStream(dir, FILE + "*.partial")) {
            for (Path f : files) {
                try {
                    if (Files.getLastModifiedTime(f).toInstant().isBefore(before)) {
                        Files.deleteIfExists(f);
                    }
                } catch (IOException e) {
                    // another start removed it, or it cannot be: it is never read either way
                }
            }
        } catch (IOException e) {
            // nothing to clean here
        }
    }

    private static ByteBuffer encode(Vocabulary v) {
        long size = 64 + 2L * (v.preTokenizerJson().length() + v.configJson().length() + 16);
        for (String w : v.vocab().keySet()) {
            size += 8 + 2L * w.length();
        }
        for (AddedVocabulary.Token t : v.added()) {
            size += 9 + 2L * t.content().length();
        }
        size += 12L * v.merges().length;
        ByteBuffer out = ByteBuffer.allocate(Math.toIntExact(size));
        put(out, v.normalizer() == null ? "" : v.normalizer());
        put(out, v.preTokenizerJson());
        out.putInt(v.vocab().size());
        List<Map.Entry<String, Integer>> words = new ArrayList<>(v.vocab().entrySet());
        words.forEach(e -> out.putInt(e.getValue()));
        words.forEach(e -> out.putInt(e.getKey().length()));
        words.forEach(e -> {
            for (int i = 0; i < e.getKey().length(); i++) {
                out.putChar(e.getKey().charAt(i));
            }
        });
        out.putInt(v.added().size());
        for (AddedVocabulary.Token t : v.added()) {
            out.putInt(t.id());
            out.put((byte) ((t.special() ? 1 : 0) | (t.lstrip() ? 2 : 0) | (t.rstrip() ? 4 : 0) | (t.normalized() ? 8 : 0)));
            put(out, t.content());
        }
        out.putInt(v.merges().length);
        for (long[] m : v.merges()) {
            out.putLong(m[0]);
        }
        for (long[] m : v.merges()) {
            out.putInt((int) m[1]);
        }
        out.put((byte) (v.ignoreMerges() ? 1 : 0));
        put(out, v.configJson());
        return out.flip();
    }

    private static void put(ByteBuffer out, String s) {
        out.putInt(s.length());
        for (int i = 0; i < s.length(); i++) {
            out.putChar(s.charAt(i));
        }
    }
}
