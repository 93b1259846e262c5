package dev.deepserve.gateway.usage;

import io.vertx.core.json.JsonObject;
import org.jboss.logging.Logger;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.math.BigDecimal;
import java.nio.ByteBuffer;
import java.nio.channels.ClosedChannelException;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.time.OffsetDateTime;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.stream.Stream;
import java.util.zip.CRC32C;

/**
 * This replica's append-only journal of settled usage events that PostgreSQL may not have yet. A request's event
 * is appended here before its answer goes out, so a gateway that dies (or a database that is away) loses nothing:
 * the next start replays what the journal still holds, and the outbox insert is idempotent on the event id.
 * <p>
 * One line per event, {@code <crc32c as 8 hex digits> <json>\n}, the json being
 * {@code {"lease":…,"cost":…,["provisional":true,]"event":<the usage event>}}; a line whose checksum does not match (a write torn by a
 * crash) is reported and skipped. Lines go into segment files {@code usage-<n>.journal}; a new segment starts
 * when the current one is full or old, and a segment is deleted once every event in it is committed to
 * PostgreSQL. The current segment is mapped into memory, so an append is a copy into the page cache rather than a
 * {@code write} call per event (that call was a tenth of the gateway's event-loop time at 16k requests/s); the file
 * is cut to what was written when the segment ends, and a segment left full length by a crash reads back with its
 * unwritten zero tail ignored. With {@code fsync}, an append's {@link Appended#synced} completes after the data
 * reached the disk (one {@code fdatasync}, which covers the mapped pages, for every append before it); without,
 * an append is in the operating system's hands at once — it survives the gateway process, not the machine.
 */
final class UsageJournal implements AutoCloseable {

    private static final Logger LOG = Logger.getLogger(UsageJournal.class);
    private static final long SEGMENT_BYTES = 16L << 20;
    private static final long SEGMENT_NANOS = Duration.ofSeconds(10).toNanos();
    private static final CompletableFuture<Void> DONE = CompletableFuture.completedFuture(null);

    /**
     * One settled event: the lease it was charged to ({@code null} for none) and its exact cost. A
     * {@code provisional} entry is what a request still streaming has cost so far, under the event id its settlement
     * will use: replayed only when no settled entry for that id is found (the gateway died mid-stream).
     */
    record Entry(UUID eventId, UUID lease, String accountId, BigDecimal cost, String payload, boolean provisional) {
        Entry(UUID eventId, UUID lease, String accountId, BigDecimal cost, String payload) {
            this(eventId, lease, accountId, cost, payload, false);
        }
    }

    /** An entry read back at startup, when its event was completed (null if it does not say), and its segment. */
    record Recovered(Entry entry, OffsetDateTime completedAt, Segment segment) {
    }

    /** Where an append went, and when it is on disk. */
    record Appended(Segment segment, CompletableFuture<Void> synced) {
    }

    /** A segment file; its fields are guarded by the journal's monitor. */
    static final class Segment {
        final Path path;
        final long opened = System.nanoTime();
        FileChannel channel;
        // while it is the current segment: its mapping, unmapped when the segment ends
        Arena arena;
        MemorySegment mapped;
        long bytes;
        int pending;
        boolean sealed;

        Segment(Path path) {
            this.path = path;
        }
    }

    private record Waiter(long upTo, CompletableFuture<Void> done) {
    }

    private final Path dir;
    private final boolean fsync;
    private final FileChannel lockFile;
    private final FileLock lock;
    private final List<Recovered> recovered = new ArrayList<>();
    private final Set<Segment> unsynced = new LinkedHashSet<>();
    private final Set<Segment> open = new LinkedHashSet<>();
    private final ArrayDeque<Waiter> waiters = new ArrayDeque<>();
    private final CRC32C crc = new CRC32C();
    private ByteBuffer line = ByteBuffer.allocate(4096);
    private final Thread syncer;
    private Segment current;
    private long nextSegment;
    private long appended;
    private boolean closed;

    private UsageJournal(Path dir, boolean fsync, FileChannel lockFile, FileLock lock) {
        this.dir = dir;
        this.fsync = fsync;
        this.lockFile = lockFile;
        this.lock = lock;
        this.syncer = fsync ? Thread.ofPlatform().daemon().name("usage-journal-sync").start(this::syncLoop) : null;
    }

    /**
     * Opens the journal in {@code dir} (created if missing) and reads what an earlier run left there; fails when
     * another process holds it, since two replicas sharing one journal would replay each other's events.
     */
    static UsageJournal open(Path dir, boolean fsync) throws IOException {
        // usage events name accounts and keys: owner-only (0700) from the moment the directory exists
        dev.deepserve.internal.OwnerOnly.directory(dir);
        FileChannel lockFile = FileChannel.open(dir.resolve("journal.lock"), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
        FileLock lock;
        try {
            lock = lockFile.tryLock();
        } catch (IOException | RuntimeException e) {
            lockFile.close();
            throw e;
        }
        if (lock == null) {
            lockFile.close();
            throw new IOException("the usage journal " + dir + " is in use by another gateway process (give each replica its own DEEPSERVE_USAGE_JOURNAL_DIR)");
        }
        UsageJournal journal = new UsageJournal(dir, fsync, lockFile, lock);
        journal.recover();
        return journal;
    }

    Path dir() {
        return dir;
    }

    /** What earlier runs left uncommitted (possibly committed after all: replaying is idempotent). Read once. */
    synchronized List<Recovered> takeRecovered() {
        List<Recovered> out = List.copyOf(recovered);
        recovered.clear();
        return out;
    }

    private void recover() throws IOException {
        List<Path> files;
        try (Stream<Path> list = Files.list(dir)) {
            files = list.filter(p -> p.getFileName().toString().matches("usage-\\d{16}\\.journal")).sorted().toList();
        }
        for (Path file : files) {
            long n = Long.parseLong(file.getFileName().toString().substring(6, 22));
            nextSegment = Math.max(nextSegment, n + 1);
            Segment segment = new Segment(file);
            segment.sealed = true;
            String[] lines = written(Files.readAllBytes(file)).split("\n", -1);
            for (int i = 0; i < lines.length; i++) {
                // zeros: pages of the mapping that were never written (or, after a machine crash, never reached the disk)
                String text = stripLeadingZeros(lines[i]);
                if (text.isEmpty()) {
                    continue;
                }
                Recovered r = parse(text, segment);
                if (r == null) {
                    LOG.errorf("usage journal %s line %d is damaged (a write cut short by a crash?); skipped: %s", file, i + 1, text);
                    continue;
                }
                segment.pending++;
                recovered.add(r);
            }
            if (segment.pending == 0) {
                Files.deleteIfExists(file);
            }
        }
    }

    /** The file's text without the zero tail a segment that was not ended (a crash) keeps from its mapping. */
    private static String written(byte[] file) {
        int end = file.length;
        while (end > 0 && file[end - 1] == 0) {
            end--;
        }
        return new String(file, 0, end, StandardCharsets.UTF_8);
    }

    private static String stripLeadingZeros(String line) {
        int i = 0;
        while (i < line.length() && line.charAt(i) == 0) {
            i++;
        }
        return line.substring(i);
    }

    private Recovered parse(String line, Segment segment) {
        if (line.length() < 10 || line.charAt(8) != ' ') {
            return null;
        }
        byte[] json = line.substring(9).getBytes(StandardCharsets.UTF_8);
        crc.reset();
        crc.update(json);
        long expected;
        try {
            expected = Long.parseLong(line.substring(0, 8), 16);
        } catch (NumberFormatException e) {
            return null;
        }
        if (crc.getValue() != expected) {
            return null;
        }
        try {
            JsonObject o = new JsonObject(line.substring(9));
            JsonObject event = o.getJsonObject("event");
            String lease = o.getString("lease");
            Entry entry = new Entry(UUID.fromString(event.getString("event_id")), lease == null ? null : UUID.fromString(lease), event.getString("account_id"),
                    new BigDecimal(o.getString("cost")), event.encode(), o.getBoolean("provisional", false));
            return new Recovered(entry, completedAt(event), segment);
        } catch (RuntimeException e) {
            return null;
        }
    }

    /** When the event was completed; null when it does not say (or not readably), and then it is replayed. */
    private static OffsetDateTime completedAt(JsonObject event) {
        try {
            String at = event.getString("completed_at");
            return at == null ? null : OffsetDateTime.parse(at);
        } catch (RuntimeException unreadable) {
            return null;
        }
    }

    /** Appends one event; it is in the operating system's hands on return, on disk when {@code synced} completes. */
    Appended append(Entry e) throws IOException {
        byte[] payload = e.payload().getBytes(StandardCharsets.UTF_8);
        String head = "{\"lease\":" + (e.lease() == null ? "null" : "\"" + e.lease() + "\"") + ",\"cost\":\"" + e.cost().toPlainString() + "\","
                + (e.provisional() ? "\"provisional\":true," : "") + "\"event\":";
        synchronized (this) {
            if (closed) {
                throw new ClosedChannelException();
            }
            // one line, built in a buffer this journal keeps: 8 checksum digits and a space, the json, a newline
            int length = 9 + head.length() + payload.length + 2;
            if (line.capacity() < length) {
                line = ByteBuffer.allocate(Math.max(length, line.capacity() * 2));
            }
            line.clear();
            line.position(9);
            for (int i = 0; i < head.length(); i++) {
                line.put((byte) head.charAt(i));
            }
            line.put(payload).put((byte) '}');
            crc.reset();
            crc.update(line.array(), 9, line.position() - 9);
            long sum = crc.getValue();
            for (int i = 0; i < 8; i++) {
                line.put(i, (byte) Character.forDigit((int) (sum >>> (28 - 4 * i)) & 0xf, 16));
            }
            line.put(8, (byte) ' ').put((byte) '\n');
            Segment segment = writable(length);
            try {
                MemorySegment.copy(line.array(), 0, segment.mapped, ValueLayout.JAVA_BYTE, segment.bytes, length);
            } catch (InternalError fault) {
                // the JVM's word for a fault on mapped memory: no disk block for the page (a full disk) or an I/O error
                seal(segment);
                throw new IOException("cannot write to the mapped journal segment " + segment.path + " (disk full?): " + fault.getMessage(), fault);
            }
            segment.bytes += length;
            segment.pending++;
            if (!fsync) {
                return new Appended(segment, DONE);
            }
            unsynced.add(segment);
            CompletableFuture<Void> synced = new CompletableFuture<>();
            waiters.add(new Waiter(++appended, synced));
            notifyAll();
            return new Appended(segment, synced);
        }
    }

    /** The current segment, with room for {@code length} more bytes. */
    private Segment writable(int length) throws IOException {
        if (current != null && (current.bytes + length > current.mapped.byteSize() || System.nanoTime() - current.opened >= SEGMENT_NANOS)) {
            seal(current);
        }
        if (current == null) {
            Segment s = new Segment(dir.resolve(String.format("usage-%016d.journal", nextSegment++)));
            s.channel = FileChannel.open(s.path, StandardOpenOption.CREATE_NEW, StandardOpenOption.READ, StandardOpenOption.WRITE);
            Arena arena = Arena.ofShared();
            try {
                // mapping extends the (sparse) file to the segment's size; it is cut back when the segment ends
                s.mapped = s.channel.map(FileChannel.MapMode.READ_WRITE, 0, Math.max(SEGMENT_BYTES, length), arena);
            } catch (IOException | RuntimeException e) {
                arena.close();
                s.channel.close();
                Files.deleteIfExists(s.path);
                throw e;
            }
            s.arena = arena;
            current = s;
            open.add(s);
        }
        return current;
    }

    /** Ends a segment: no more appends go to it; unmapped, and its file cut to what was written. */
    private void seal(Segment s) throws IOException {
        s.sealed = true;
        if (current == s) {
            current = null;
        }
        if (s.arena != null) {
            s.arena.close();
            s.arena = null;
            s.mapped = null;
            s.channel.truncate(s.bytes);
        }
        deleteIfDone(s);
    }

    /** An event of {@code s} is committed to PostgreSQL. */
    synchronized void committed(Segment s) {
        s.pending--;
        try {
            deleteIfDone(s);
        } catch (IOException e) {
            LOG.warnf("could not delete the committed usage journal segment %s: %s", s.path, e.getMessage());
        }
    }

    /** Ends a current segment whose events are all committed, so an idle journal holds nothing. */
    synchronized void tidy() {
        if (current != null && current.pending == 0 && current.bytes > 0) {
            try {
                seal(current);
            } catch (IOException e) {
                LOG.warnf("could not end the usage journal segment: %s", e.getMessage());
            }
        }
    }

    private void deleteIfDone(Segment s) throws IOException {
        if (!s.sealed || s.pending > 0) {
            return;
        }
        unsynced.remove(s);
        open.remove(s);
        if (s.channel != null) {
            s.channel.close();
        }
        Files.deleteIfExists(s.path);
    }

    private void syncLoop() {
        while (true) {
            List<Segment> dirty;
            long upTo;
            synchronized (this) {
                while (unsynced.isEmpty() && waiters.isEmpty() && !closed) {
                    try {
                        wait();
                    } catch (InterruptedException e) {
                        return;
                    }
                }
                if (closed && waiters.isEmpty()) {
                    return;
                }
                dirty = List.copyOf(unsynced);
                unsynced.clear();
                upTo = appended;
            }
            IOException failure = null;
            for (Segment s : dirty) {
                try {
                    s.channel.force(false);
                } catch (ClosedChannelException deleted) {
                    // every event of it was committed to PostgreSQL meanwhile: nothing left to make durable here
                } catch (IOException e) {
                    failure = e;
                }
            }
            List<Waiter> done = new ArrayList<>();
            synchronized (this) {
                while (!waiters.isEmpty() && waiters.peek().upTo() <= upTo) {
                    done.add(waiters.poll());
                }
            }
            for (Waiter w : done) {
                if (failure == null) {
                    w.done().complete(null);
                } else {
                    w.done().completeExceptionally(failure);
                }
            }
        }
    }

    @Override
    public void close() throws IOException {
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
            notifyAll();
        }
        if (syncer != null) {
            try {
                syncer.join(5000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        synchronized (this) {
            if (current != null) {
                seal(current);
            }
            for (Segment s : open) {
                // events still uncommitted: their segments stay for the next start to replay
                s.channel.close();
            }
        }
        lock.release();
        lockFile.close();
    }
}
