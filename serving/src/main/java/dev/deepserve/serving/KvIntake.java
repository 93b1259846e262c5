package dev.deepserve.serving;

import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.KvStream;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

/**
 * A sequence whose prompt KV is streaming in from a prefill instance ({@link DecodeLoop#receive}). The transport hands
 * in checked sections ({@link #section}), then the {@link Handover} ({@link #end}), or gives up ({@link #abort}); the
 * engine thread writes the sections straight into the sequence's pool blocks — taken for the whole prompt when it is
 * admitted — and, once the handover is in and every section written, makes it an ordinary decoding sequence. The
 * transport pauses its input while {@link #shouldPause} and resumes when {@link #whenDrained} says so: before
 * admission nothing more than what is in flight waits here, after it at most {@link #PENDING_LIMIT}. An intake that is
 * aborted, cancelled or refused gives every block back, and from then on drops whatever still arrives.
 */
public final class KvIntake {

    /** Sections an admitted intake may have waiting for the engine (about two 512-token prompt chunks of DeepSeek-V3). */
    public static final long PENDING_LIMIT = 64L << 20;

    private record Section(int cache, int layer, int from, int count, byte[] values) {
    }

    final Sequence sequence;
    final KvStream.Layout layout;
    private final Runnable wake;
    private final ConcurrentLinkedQueue<Section> sections = new ConcurrentLinkedQueue<>();
    private final AtomicLong pending = new AtomicLong();
    private final AtomicReference<Runnable> drained = new AtomicReference<>();
    private final CompletableFuture<Sequence> taken = new CompletableFuture<>();
    private volatile Handover handover;
    private volatile String aborted;
    /** Its blocks are taken (engine thread writes; the transport reads it to size its pauses). */
    volatile boolean admitted;
    /** Over: taken over, refused, aborted or cancelled and let go of; what still arrives is dropped. */
    private volatile boolean closed;

    KvIntake(Sequence sequence, KvStream.Layout layout, Runnable wake) {
        this.sequence = sequence;
        this.layout = layout;
        this.wake = wake;
    }

    /** One checked section, in stream order (any thread). */
    public void section(int cache, int layer, int from, int count, byte[] values) {
        if (closed || aborted != null) {
            return;
        }
        pending.addAndGet(values.length);
        sections.add(new Section(cache, layer, from, count, values));
        wake.run();
    }

    /** The stream's END: every main layer has been handed in. */
    public void end(Handover h) {
        handover = h;
        wake.run();
    }

    /**
     * The stream broke or was refused, or its reader went away (any thread, at any point): the engine lets go of the
     * sequence and every block taken for it — if it is already decoding, it is cancelled.
     */
    public void abort(String why) {
        aborted = why;
        sequence.cancel();
        wake.run();
    }

    /** Whether the transport should stop reading: anything waits before admission, or more than the limit after it. */
    public boolean shouldPause() {
        return !closed && pending.get() > (admitted ? PENDING_LIMIT : 0);
    }

    /** Bytes handed in and not yet written into the pool. */
    public long pendingBytes() {
        return pending.get();
    }

    /** Runs {@code r} once, after the next time every waiting section has been written (or at once, if none waits). */
    public void whenDrained(Runnable r) {
        drained.set(r);
        if (closed || pending.get() == 0) {
            runDrained(); // drained (or over) before the callback was set
        }
        wake.run();
    }

    /**
     * Completes with the sequence once it decodes here (its first token goes out next), or exceptionally with a
     * {@link Refused} naming why the KV was not taken.
     */
    public CompletableFuture<Sequence> taken() {
        return taken;
    }

    String aborted() {
        return aborted;
    }

    Handover handover() {
        return handover;
    }

    /** Engine thread: writes what has arrived into the sequence's caches (MTP sections are dropped if it does not speculate). */
    void apply() {
        for (Section s = sections.poll(); s != null; s = sections.poll()) {
            try {
                KvCache target = s.cache == 0 ? sequence.cache : sequence.speculation.kv;
                if (target != null) {
                    KvStream.write(target, layout.precision(), s.layer, s.from, s.count, s.values);
                }
            } finally {
                pending.addAndGet(-s.values.length);
            }
        }
        runDrained();
    }

    /** Engine thread: the handover is in and every section written. */
    boolean complete() {
        return handover != null && sections.isEmpty();
    }

    /** Engine thread: the intake is over; what waits, or still comes, is dropped and a paused transport may go on. */
    void close() {
        closed = true;
        sections.clear();
        pending.set(0);
        runDrained();
    }

    private void runDrained() {
        Runnable r = drained.getAndSet(null);
        if (r != null) {
            r.run();
        }
    }

    void taken(Sequence s) {
        taken.complete(s);
    }

    void refused(Refused why) {
        taken.completeExceptionally(why);
    }
}
