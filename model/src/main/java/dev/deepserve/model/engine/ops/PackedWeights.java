package dev.deepserve.model.engine.ops;

import dev.deepserve.model.engine.Linear;

import java.lang.foreign.MemorySegment;
import java.lang.ref.Cleaner;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.LongFunction;
import java.util.function.Supplier;

/**
 * The weights a CPU backend repacks into {@link Panels}, by weight: packed at load ({@link #packNow}) or at their first
 * product ({@link #packLater}), each by whichever thread needs it first and outside the map's locks. A registered
 * weight goes through its panels in every product, the first included, so its floats never depend on when it was
 * packed or on what else the process loaded. {@link #release} frees a weight's panels when the process stops
 * computing it (an expert moved to another worker); its next product packs it again, to the same floats.
 */
final class PackedWeights {

    /** By weight, or by {@link Band} for a band of one. */
    private final Map<Object, Packing> packings = new ConcurrentHashMap<>();
    private final LongFunction<MemorySegment> allocate;
    /** Bytes copied by every backend of the process and still reachable (shared with {@code CpuOps.place}'s limit). */
    private final AtomicLong processBytes;
    private final Cleaner cleaner;
    private final AtomicLong bytes = new AtomicLong();
    private final AtomicInteger count = new AtomicInteger();
    private final AtomicInteger bands = new AtomicInteger();

    PackedWeights(LongFunction<MemorySegment> allocate, AtomicLong processBytes, Cleaner cleaner) {
        this.allocate = allocate;
        this.processBytes = processBytes;
        this.cleaner = cleaner;
    }

    void packNow(Linear w) {
        packings.computeIfAbsent(w, k -> new Packing(w)).get();
    }

    void packLater(Linear w) {
        packings.computeIfAbsent(w, k -> new Packing(w));
    }

    /** Packs a band of a weight now, from the weight {@link Band#linear} builds (not kept: a transposed band's copy). */
    void packNow(Band band) {
        packings.computeIfAbsent(band, k -> new Packing(band::linear, bands)).get();
    }

    boolean registered(Linear w) {
        return !packings.isEmpty() && packings.containsKey(w);
    }

    /** The panels of w (or of a {@link Band}), packed now if this is its first product; null if never registered. */
    Panels panels(Object w) {
        Packing k = packings.isEmpty() ? null : packings.get(w);
        return k == null ? null : k.get();
    }

    void release(Linear w) {
        Packing k = packings.get(w);
        if (k != null) {
            k.release();
        }
    }

    /** Forgets every weight (the panels are freed once no product still running holds them). */
    void clear() {
        packings.clear();
    }

    /** Weights in panels now, bands not counted. */
    int count() {
        return count.get();
    }

    /** Bands of weights in panels now ({@link #packNow(Band)}). */
    int bands() {
        return bands.get();
    }

    /** Bytes of panels now. */
    long bytes() {
        return bytes.get();
    }

    /** One weight's panels, packed by the first thread that needs them; the map's bins are never held meanwhile. */
    private final class Packing {

        private final Supplier<Linear> source;
        private final AtomicInteger counter;
        private volatile Panels panels;

        Packing(Linear w) {
            this(() -> w, count);
        }

        Packing(Supplier<Linear> source, AtomicInteger counter) {
            this.source = source;
            this.counter = counter;
        }

        Panels get() {
            Panels p = panels;
            if (p == null) {
                synchronized (this) {
                    p = panels;
                    if (p == null) {
                        p = pack();
                        panels = p;
                    }
                }
            }
            return p;
        }

        private Panels pack() {
            Panels p = Panels.pack(source.get(), allocate);
            long n = p.bytes();
            processBytes.addAndGet(n);
            cleaner.register(p, () -> processBytes.addAndGet(-n)); // the memory goes with the last reference
            bytes.addAndGet(n);
            counter.incrementAndGet();
            return p;
        }

        synchronized void release() {
            if (panels != null) {
                bytes.addAndGet(-panels.bytes());
                counter.decrementAndGet();
                panels = null;
            }
        }
    }
}
