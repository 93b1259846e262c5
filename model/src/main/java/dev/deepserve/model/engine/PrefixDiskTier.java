package dev.deepserve.model.engine;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.FileTime;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Pattern;
import java.util.zip.CRC32;

/**
 * The prefix cache's disk tier (DeepSeek's context cache lives on disk): blocks the memory tier evicts are written to
 * one file each under a directory of this model's own, named by the block's hash-chain key, and found again by the same
 * key when a later prompt shares the prefix — after a restart too, since the directory is read back at start. Files
 * are written off the step thread (one writer thread; a block still being written is served from its pending copy),
 * replaced atomically, kept under a byte budget least-recently-used first, and carry a CRC-32 over everything: a file
 * that is truncated, corrupted or of another shape is deleted and its tokens computed again, never served.
 *
 * <p>File layout (little-endian): magic "DSPB", version, block tokens, layers, stride, MTP stride (0: none), value width
 * (2: BF16, 4: float32), the block's token ids, then per layer (main, then MTP) its {@code tokens × stride} values,
 * then the CRC-32 of all bytes before it.
 */
public final class PrefixDiskTier implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(PrefixDiskTier.class.getName());
    private static final int MAGIC = 0x44535042; // "DSPB"
    private static final int VERSION = 1;
    private static final int HEADER = 7 * Integer.BYTES;
    private static final Pattern NAME = Pattern.compile("[0-9a-f]{32}\\.kvb");

    /** One block's KV as floats (already rounded to the cache's precision when it came from a BF16 cache). */
    public record Block(int[] tokens, float[][] layers, float[] mtp, KvPrecision precision) {
    }

    private final Path dir;
    private final long budgetBytes;
    private final int blockTokens;
    /** Files on disk by key, least recently used first, with their sizes. */
    private final LinkedHashMap<String, Long> files = new LinkedHashMap<>(256, 0.75f, true);
    /** Blocks handed to the writer and not on disk yet: served from here meanwhile. */
    private final Map<String, Block> pending = new HashMap<>();
    private final ExecutorService writer;
    private final AtomicLong hits = new AtomicLong();
    private final AtomicLong dropped = new AtomicLong();
    private final AtomicLong skipped = new AtomicLong();
    private long usedBytes;
    /** Bytes of blocks handed to the writer and not written yet: bounded, so a slow disk cannot fill the heap. */
    private long pendingBytes;
    private long lastSpaceWarning;

    /** Most bytes of blocks waiting for the writer; beyond it a spilled block is skipped (counted), never waited for. */
    static final long MAX_PENDING_BYTES = 256L << 20;
    /** Free space left on the file system for everything else (the usage journal lives there too). */
    static final long RESERVE_BYTES = 1L << 30;

    /**
     * A tier in {@code dir} (created if needed) holding at most {@code budgetBytes}; the files already there are its
     * contents, most recently modified last. {@code dir} must be this model's own: keys name token prefixes, not models.
     */
    public PrefixDiskTier(Path dir, long budgetBytes, int blockTokens) throws IOException {
        if (budgetBytes <= 0) {
            throw new IllegalArgumentException("the disk tier needs a positive byte budget");
        }
        this.dir = Files.createDirectories(dir);
        owned(dir, "rwx------"); // the blocks carry prompts' token ids: only this user reads them
        this.budgetBytes = budgetBytes;
        this.blockTokens = blockTokens;
        List<Path> found = new ArrayList<>();
        try (DirectoryStream<Path> s = Files.newDirectoryStream(dir)) {
            for (Path p : s) {
                String name = p.getFileName().toString();
                if (NAME.matcher(name).matches()) {
                    found.add(p);
                } else if (name.endsWith(".tmp")) {
                    Files.deleteIfExists(p); // a write the process did not finish
                }
            }
        }
        found.sort(Comparator.comparing(PrefixDiskTier::modified));
        for (Path p : found) {
            long size = Files.size(p);
            files.put(p.getFileName().toString().substring(0, 32), size);
            usedBytes += size;
        }
        this.writer = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "prefix-disk-writer");
            t.setDaemon(true);
            return t;
        });
        trim();
    }

    /** Narrows a path to its owner where the file system has POSIX permissions. */
    private static void owned(Path p, String permissions) throws IOException {
        if (Files.getFileStore(p).supportsFileAttributeView(java.nio.file.attribute.PosixFileAttributeView.class)) {
            Files.setPosixFilePermissions(p, java.nio.file.attribute.PosixFilePermissions.fromString(permissions));
        }
    }

    private static FileTime modified(Path p) {
        try {
            return Files.getLastModifiedTime(p);
        } catch (IOException e) {
            return FileTime.fromMillis(0);
        }
    }

    /** Whether a block is kept (or being written) under {@code key}: callers skip copying one out again. */
    public synchronized boolean has(String key) {
        return files.containsKey(key) || pending.containsKey(key);
    }

    /**
     * Keeps {@code block} under {@code key}, written by the writer thread. Skipped (and counted) when the writer is
     * {@link #MAX_PENDING_BYTES} behind or the tier is closed: a cache may lose a block, the step thread never waits.
     */
    public void spill(String key, Block block) {
        if (!NAME.matcher(key + ".kvb").matches() || block.tokens().length != blockTokens) {
            throw new IllegalArgumentException("not a prefix block key or a block of " + blockTokens + " tokens");
        }
        long size = heapBytes(block);
        synchronized (this) {
            if (files.containsKey(key) || pending.containsKey(key)) {
                return;
            }
            if (pendingBytes + size > MAX_PENDING_BYTES) {
                skipped.incrementAndGet();
                return;
            }
            pending.put(key, block);
            pendingBytes += size;
        }
        try {
            writer.execute(() -> write(key, block));
        } catch (java.util.concurrent.RejectedExecutionException e) { // closed
            unpend(key, size);
            skipped.incrementAndGet();
        }
    }

    /** The writer is done with a pending block (written, skipped or failed). */
    private synchronized void unpend(String key, long size) {
        pending.remove(key);
        pendingBytes -= size;
    }

    /** Forgets a file the index lists (deleted, or gone). */
    private synchronized void forget(String key) {
        Long size = files.remove(key);
        if (size != null) {
            usedBytes -= size;
        }
    }

    private static long heapBytes(Block b) {
        long values = b.mtp() == null ? 0 : b.mtp().length;
        for (float[] layer : b.layers()) {
            values += layer.length;
        }
        return 4 * values + 4L * b.tokens().length;
    }

    /** Whether the file system keeps {@link #RESERVE_BYTES} free after {@code bytes} more (warns at most once a minute). */
    private boolean roomFor(long bytes) {
        try {
            if (Files.getFileStore(dir).getUsableSpace() >= bytes + RESERVE_BYTES) {
                return true;
            }
        } catch (IOException e) {
            return false;
        }
        long now = System.nanoTime();
        if (now - lastSpaceWarning > 60_000_000_000L || lastSpaceWarning == 0) {
            lastSpaceWarning = now;
            LOG.log(System.Logger.Level.WARNING, "prefix cache: the disk under {0} has less than {1} MiB free; not writing blocks", dir,
                    RESERVE_BYTES >> 20);
        }
        return false;
    }

    private void write(String key, Block block) {
        byte[] bytes = encode(block);
        Path tmp = dir.resolve(key + ".tmp");
        Path file = dir.resolve(key + ".kvb");
        long size = heapBytes(block);
        if (!roomFor(bytes.length)) {
            unpend(key, size);
            skipped.incrementAndGet();
            return;
        }
        try {
            Files.write(tmp, bytes);
            owned(tmp, "rw-------");
            try {
                Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING);
            }
            synchronized (this) {
                unpend(key, size);
                files.put(key, (long) bytes.length);
                usedBytes += bytes.length;
                trim();
            }
        } catch (IOException | UncheckedIOException e) {
            unpend(key, size);
            LOG.log(System.Logger.Level.WARNING, "prefix cache: cannot write a block to {0}: {1}", dir, e.getMessage());
            try {
                Files.deleteIfExists(tmp);
            } catch (IOException ignored) {
                // the next start deletes it
            }
        }
    }

    /** Deletes least recently used files until the tier is within its budget. Holds the lock. */
    private void trim() {
        var it = files.entrySet().iterator();
        while (usedBytes > budgetBytes && it.hasNext()) {
            var e = it.next();
            it.remove();
            usedBytes -= e.getValue();
            delete(e.getKey());
        }
    }

    private void delete(String key) {
        try {
            Files.deleteIfExists(dir.resolve(key + ".kvb"));
        } catch (IOException e) {
            LOG.log(System.Logger.Level.WARNING, "prefix cache: cannot delete {0}: {1}", key, e.getMessage());
        }
    }

    /**
     * The block kept under {@code key} with this shape, or null: absent, or dropped now because its file is damaged or
     * of another shape (counted in {@link #dropped}). {@code mtpStride} 0: the caller needs no MTP part (a file's is
     * skipped); otherwise a block without one comes back with a null MTP part. Reads on the caller's thread, after
     * checking that the file is a regular file of exactly a block's size, so nothing in the directory makes it read
     * more than one block.
     */
    public Block read(String key, int layers, int stride, int mtpStride) {
        Block waiting;
        synchronized (this) {
            waiting = pending.get(key);
            if (waiting == null && files.get(key) == null) {
                return null;
            }
        }
        if (waiting != null) {
            hits.incrementAndGet();
            return waiting;
        }
        Path file = dir.resolve(key + ".kvb");
        try {
            var attributes = Files.readAttributes(file, java.nio.file.attribute.BasicFileAttributes.class, java.nio.file.LinkOption.NOFOLLOW_LINKS);
            if (!attributes.isRegularFile() || !plausibleSize(attributes.size(), layers, stride)) {
                throw new IllegalArgumentException("not a block file of this model's size (" + attributes.size() + " bytes)");
            }
            Block b = decode(Files.readAllBytes(file), layers, stride, mtpStride);
            hits.incrementAndGet();
            return b;
        } catch (java.nio.file.NoSuchFileException e) {
            forget(key); // deleted by a trim between the lookup and the read: a plain miss
            return null;
        } catch (IOException | IllegalArgumentException e) {
            LOG.log(System.Logger.Level.WARNING, "prefix cache: dropping disk block {0}: {1}", key, e.getMessage());
            synchronized (this) {
                forget(key);
                delete(key);
            }
            dropped.incrementAndGet();
            return null;
        }
    }

    /** Whether {@code size} is what a block of this model has, with or without an MTP part, in either value width. */
    private boolean plausibleSize(long size, int layers, int stride) {
        for (KvPrecision precision : KvPrecision.values()) {
            for (int mtp : new int[] {0, stride}) {
                if (size == fileBytes(layers, stride, mtp, precision.bytes())) {
                    return true;
                }
            }
        }
        return false;
    }

    /** A block file's size: header, token ids, every layer's values (and the MTP part's), the CRC. */
    private long fileBytes(int layers, int stride, int mtpStride, int width) {
        return HEADER + 4L * blockTokens + ((long) layers * stride + mtpStride) * blockTokens * width + 4;
    }

    private byte[] encode(Block b) {
        int width = b.precision().bytes();
        int stride = b.layers()[0].length / blockTokens;
        int mtpStride = b.mtp() == null ? 0 : b.mtp().length / blockTokens;
        ByteBuffer buf = ByteBuffer.allocate(Math.toIntExact(fileBytes(b.layers().length, stride, mtpStride, width))).order(ByteOrder.LITTLE_ENDIAN);
        buf.putInt(MAGIC).putInt(VERSION).putInt(blockTokens).putInt(b.layers().length).putInt(stride).putInt(mtpStride).putInt(width);
        for (int t : b.tokens()) {
            buf.putInt(t);
        }
        for (float[] layer : b.layers()) {
            b.precision().put(buf, layer);
        }
        if (b.mtp() != null) {
            b.precision().put(buf, b.mtp());
        }
        CRC32 crc = new CRC32();
        crc.update(buf.array(), 0, buf.position());
        buf.putInt((int) crc.getValue());
        return buf.array();
    }

    private Block decode(byte[] bytes, int layers, int stride, int mtpStride) {
        if (bytes.length < HEADER + 4) {
            throw new IllegalArgumentException("truncated");
        }
        ByteBuffer buf = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN);
        CRC32 crc = new CRC32();
        crc.update(bytes, 0, bytes.length - 4);
        if (buf.getInt(bytes.length - 4) != (int) crc.getValue()) {
            throw new IllegalArgumentException("checksum mismatch");
        }
        if (buf.getInt() != MAGIC || buf.getInt() != VERSION) {
            throw new IllegalArgumentException("not a prefix block of this version");
        }
        int tokens = buf.getInt();
        int fileLayers = buf.getInt();
        int fileStride = buf.getInt();
        int fileMtp = buf.getInt();
        int width = buf.getInt();
        KvPrecision precision = KvPrecision.ofBytes(width);
        if (tokens != blockTokens || fileLayers != layers || fileStride != stride || (fileMtp != 0 && fileMtp != stride) || precision == null) {
            throw new IllegalArgumentException("a block of another shape (" + tokens + " tokens, " + fileLayers + "×" + fileStride + ", MTP "
                    + fileMtp + ", " + width + "-byte values)");
        }
        long expected = fileBytes(fileLayers, fileStride, fileMtp, width);
        if (bytes.length != expected) {
            throw new IllegalArgumentException("size " + bytes.length + ", expected " + expected);
        }
        int[] ids = new int[tokens];
        for (int i = 0; i < tokens; i++) {
            ids[i] = buf.getInt();
        }
        float[][] values = new float[fileLayers][tokens * fileStride];
        for (float[] layer : values) {
            precision.get(buf, layer);
        }
        float[] mtp = fileMtp == 0 || mtpStride == 0 ? null : new float[tokens * fileMtp]; // a plain caller skips it
        if (mtp != null) {
            precision.get(buf, mtp);
        }
        return new Block(ids, values, mtp, precision);
    }

    /** Waits until every spilled block is on disk (tests, shutdown). */
    public void flush() throws InterruptedException {
        var done = writer.submit(() -> { });
        try {
            done.get(1, TimeUnit.MINUTES);
        } catch (java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException e) {
            throw new IllegalStateException("the disk tier's writer did not finish", e);
        }
    }

    public synchronized long usedBytes() {
        return usedBytes;
    }

    public synchronized int blocks() {
        return files.size();
    }

    /** Blocks served from disk (or from a pending write) so far. */
    public long hits() {
        return hits.get();
    }

    /** Blocks not written: the writer too far behind, the disk short of space, or the tier closed. */
    public long skipped() {
        return skipped.get();
    }

    /** Damaged or mismatched files dropped so far. */
    public long dropped() {
        return dropped.get();
    }

    public Path dir() {
        return dir;
    }

    /** Finishes the writes already handed over, then stops the writer. */
    @Override
    public void close() {
        writer.shutdown();
        try {
            writer.awaitTermination(30, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
