package dev.deepserve.model.engine.ops;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Fp8E4M3;
import dev.deepserve.model.weights.Tensor;

import java.lang.foreign.MemorySegment;
import java.util.function.IntConsumer;

/**
 * The plain-Java backend: multithreaded over weight rows and attention heads, with {@link VectorKernels} when the
 * Vector API module is present and {@link ScalarKernels} otherwise. It is the reference the CUDA backend is tested
 * against, so every operation is written to be read.
 */
public final class CpuOps implements TensorOps, AutoCloseable {

    /** Work (multiply-adds) below which splitting across threads costs more than it saves. */
    private static final long PARALLEL_THRESHOLD = 1 << 16;
    /** Parallel items per thread in a matmul (see {@link #rowsPerItem}). */
    private static final int ITEMS_PER_THREAD = 8;
    /** Float outputs in one 64-byte cache line. */
    private static final int ROWS_PER_LINE = 16;

    private final Kernels kernels;
    private final Kernels scalar = new ScalarKernels();
    private final WorkerTeam team;
    private final int threads;
    private final boolean activationQuant;
    private final java.util.concurrent.atomic.LongAdder weightBytesRead = new java.util.concurrent.atomic.LongAdder();
    private final java.util.concurrent.atomic.LongAdder multiplyAdds = new java.util.concurrent.atomic.LongAdder();
    private volatile boolean repack = repackByDefault();
    private volatile boolean deferPacking;
    private volatile boolean closed;
    /** Weight bytes {@link #place} may have copied onto huge pages in this process, all backends together. */
    private final long placeLimit = placeLimit();
    private final HugePageMemory.Slab slab = new HugePageMemory.Slab();
    /** Weight bytes this backend copied. */
    private final java.util.concurrent.atomic.AtomicLong placedBytes = new java.util.concurrent.atomic.AtomicLong();
    /** Weight bytes copied by every backend in this process and still reachable. */
    private static final java.util.concurrent.atomic.AtomicLong PLACED_IN_PROCESS = new java.util.concurrent.atomic.AtomicLong();
    private static final java.lang.ref.Cleaner RELEASE = java.lang.ref.Cleaner.create();
    private final ThreadLocal<float[]> scratch = ThreadLocal.withInitial(() -> new float[0]);
    /** Weights {@link #prepare} and {@link #prepareOnFirstUse} registered, and their panels. */
    private final PackedWeights packed = new PackedWeights(this::allocatePanels, PLACED_IN_PROCESS, RELEASE);

    private CpuOps(Kernels kernels, int threads, boolean activationQuant) {
        this.kernels = kernels;
        this.threads = threads;
        this.team = threads > 1 ? new WorkerTeam(threads) : null;
        this.activationQuant = activationQuant;
    }

    /**
     * @param vector          use the Vector API kernels (must be available: see {@link #vectorAvailable()})
     * @param threads         worker threads; 1 runs everything on the caller's thread
     * @param activationQuant quantize activations to FP8 in 1×128 groups before FP8 matmuls, as DeepSeek-V3 §3.3 does
     *                        in training and serving; off by default, which keeps activations in float32
     */
    public static CpuOps create(boolean vector, int threads, boolean activationQuant) {
        if (vector && !vectorAvailable()) {
            throw new IllegalStateException("the Vector API kernels need the JVM option --add-modules=jdk.incubator.vector");
        }
        return new CpuOps(vector ? new VectorKernels() : new ScalarKernels(), Math.max(1, threads), activationQuant);
    }

    /** The best CPU backend this JVM can run, on all processors. */
    public static CpuOps best() {
        return create(vectorAvailable(), Runtime.getRuntime().availableProcessors(), false);
    }

    public static boolean vectorAvailable() {
        if (ModuleLayer.boot().findModule("jdk.incubator.vector").isEmpty()) {
            return false;
        }
        try {
            return VectorKernels.usable();
        } catch (LinkageError e) {
            return false;
        }
    }

    /**
     * Whether {@link #prepare} repacks weights and {@link #place} copies them (on by default). Off where another backend
     * computes, e.g. a device-resident model, so no host copies are kept for nothing; a weight already repacked stays so.
     */
    public void repack(boolean on) {
        this.repack = on;
    }

    /**
     * Stops the worker threads (they are daemons, so this only matters for long-lived processes that swap backends)
     * and lets the repacked copies go; a product after this fails rather than computing other floats.
     */
    @Override
    public void close() {
        closed = true;
        packed.clear();
        if (team != null) {
            team.close();
        }
    }

    @Override
    public String describe() {
        long placed = placedBytes.get();
        return "cpu-" + (kernels instanceof VectorKernels ? "vector" : "scalar") + ", " + threads + " thread" + (threads == 1 ? "" : "s")
                + (activationQuant ? ", fp8 activations" : "") + (placed > 0 ? ", " + size(placed) + " of weights on huge pages" : "")
                + (packed.count() + packed.bands() > 0 ? ", " + inPanels() : "");
    }

    /** "26 weights and 8 bands in panels (66 MiB)". */
    private String inPanels() {
        int weights = packed.count();
        int bands = packed.bands();
        String w = weights > 0 ? weights + " weight" + (weights == 1 ? "" : "s") : "";
        String b = bands > 0 ? bands + " band" + (bands == 1 ? "" : "s") : "";
        return w + (weights > 0 && bands > 0 ? " and " : "") + b + " in panels (" + size(packed.bytes()) + ")";
    }

    private static String size(long bytes) {
        return bytes >= 1 << 20 ? (bytes >> 20) + " MiB" : Math.ceilDiv(bytes, 1024) + " KiB";
    }

    /**
     * Repacks a weight every step multiplies by all its rows into {@link Panels}, when the Vector API kernels run: the
     * BF16 lm_head into {@link Bf16Panels}, an FP8 projection or dense MLP into {@link Fp8Panels}. Their products then
     * serve a whole batch per pass over the weight (the row kernels re-read each batch row's input for every weight
     * row), for a copy as large as the weight that replaces its huge-page copy ({@link #place}). Every weight a caller
     * prepares is packed, whatever memory is left, so a weight's floats never depend on what else the process loaded
     * (expert workers and the leader, prefill and decode, must agree bit for bit); the copies count against
     * {@link #place}'s limit, so the weights copied after them leave the heap its room. Callers prepare only weights
     * read through {@link #matmul} alone (not kv_b_proj, whose rows MLA's absorbed attention reads one by one).
     * {@value #REPACK_PROPERTY}{@code =off} turns repacking off for a process and the expert workers it starts.
     */
    @Override
    public void prepare(Linear w) {
        if (deferPacking) {
            prepareOnFirstUse(w);
        } else if (packable(w)) {
            packed.packNow(w);
        }
    }

    /**
     * Makes {@link #prepare} defer every repack to the weight's first product, as {@link #prepareOnFirstUse} does: for
     * a process that loads a whole model and computes only part of it (an expert worker never multiplies the lm_head
     * or an attention projection). The floats are the same; only when the memory is spent changes.
     */
    public void deferPacking() {
        this.deferPacking = true;
    }

    /**
     * {@link #prepare} at the weight's first {@link #matmul} (the experts): a process packs only the experts it
     * computes (an expert worker its own, a leader those it holds), and every product of the weight, the first
     * included, goes through the panels, so a worker and the leader give the same floats for an expert.
     */
    @Override
    public void prepareOnFirstUse(Linear w) {
        if (packable(w)) {
            packed.packLater(w);
        }
    }

    /**
     * Repacks a band of w's rows into {@link Panels} ({@link Band}) where it fits them: MLA's {@code kv_b_proj} head
     * bands, {@code W_UK} transposed and {@code W_UV} as rows, which every decode step reads for all its tokens. The
     * row kernels decoded each weight row into a buffer and added it to every token's sums (~11 GFMA/s); the panels
     * serve all the tokens per pass as the projections' do. Not under {@link #deferPacking} (an expert worker runs no
     * attention). The weight keeps its own copy (MLA's naive form multiplies by all of it): the bands' panels are
     * memory on top, as large as the bands.
     */
    @Override
    public void prepareBand(Linear w, int rowFrom, int rows, boolean transposed) {
        if (repack && !deferPacking && kernels instanceof VectorKernels && Band.fits(w, rowFrom, rows, transposed)) {
            packed.packNow(new Band(w, rowFrom, rows, transposed));
        }
    }

    /** Frees w's panels, if any: for an expert this process no longer computes. Its next product packs it again. */
    @Override
    public void release(Linear w) {
        packed.release(w);
    }

    private boolean packable(Linear w) {
        return repack && kernels instanceof VectorKernels && Panels.fits(w);
    }

    /** Room for panels: a slice of the huge-page slab where the kernel gives huge pages, else ordinary memory. */
    private MemorySegment allocatePanels(long bytes) {
        MemorySegment copy = HUGE_PAGES ? slabSlice(bytes) : null;
        return copy != null ? copy : java.lang.foreign.Arena.ofAuto().allocate(bytes, 64);
    }

    /** {@code bytes} of the shared huge-page slab (callers on any thread), or null where none can be mapped. */
    private MemorySegment slabSlice(long bytes) {
        synchronized (slab) {
            return slab.allocate(bytes);
        }
    }

    /** The system property that turns repacking ({@link #prepare}) and huge-page copies ({@link #place}) off: {@code on} or {@code off}. */
    public static final String REPACK_PROPERTY = "deepserve.cpu.repack";

    private static boolean repackByDefault() {
        String v = System.getProperty(REPACK_PROPERTY, "on").trim().toLowerCase(java.util.Locale.ROOT);
        return switch (v) {
            case "on" -> true;
            case "off" -> false;
            default -> throw new IllegalArgumentException(REPACK_PROPERTY + " must be on or off, not " + v);
        };
    }

    /**
     * Copies a weight onto huge pages (a {@link HugePageMemory.Slab}), where {@link #repack} is on, the kernel gives
     * huge pages, {@link #prepare} did not already repack it, and this process's copies stay within the limit
     * ({@value #PLACE_PROPERTY}: {@code auto}, a quarter of the memory this machine or container has but never the room
     * the heap may take; {@code off}; or a number of MiB). Local expert workers run with {@code off}: they keep sharing
     * the checkpoint's page cache. The checkpoint is memory-mapped in
     * 4 KiB pages: in this microVM a decode step's sweep over them missed the TLB enough that the experts and dense
     * MLPs ran 10-30 % slower than from the same bytes on huge pages (bench/results, #29). The mapping's pages, no
     * longer read, are page cache the kernel reclaims first.
     */
    @Override
    public Linear place(Linear w) {
        long bytes = w.weight().data().byteSize();
        if (!repack || bytes < 64 * 1024 || !HUGE_PAGES || packed.registered(w)) {
            return w;
        }
        long before;
        do { // reserve within the process's limit
            before = PLACED_IN_PROCESS.get();
            if (before + bytes > placeLimit) {
                return w;
            }
        } while (!PLACED_IN_PROCESS.compareAndSet(before, before + bytes));
        MemorySegment copy = slabSlice(bytes);
        if (copy == null) { // no huge pages to be had: the mapping stays as good as an ordinary copy would be
            PLACED_IN_PROCESS.addAndGet(-bytes);
            return w;
        }
        copy.copyFrom(w.weight().data());
        placedBytes.addAndGet(bytes);
        Tensor t = w.weight();
        Tensor placed = new Tensor(t.name(), t.dtype(), t.shape(), copy);
        RELEASE.register(placed, () -> PLACED_IN_PROCESS.addAndGet(-bytes)); // freed with its chunk once unreachable
        return new Linear(w.name(), placed, w.scaleInv(), w.out(), w.in(), w.blockRows(), w.blockCols(), w.nanCodes());
    }

    /** Weight bytes {@link #place} copied in this process and still reachable (all backends). */
    public static long placedInProcess() {
        return PLACED_IN_PROCESS.get();
    }

    @Override
    public int parallelism() {
        return threads;
    }

    /** The system property that sizes {@link #place}'s copies. */
    public static final String PLACE_PROPERTY = "deepserve.cpu.hugepage-weights";
    private static final boolean HUGE_PAGES = HugePageMemory.available();

    private static long placeLimit() {
        String v = System.getProperty(PLACE_PROPERTY, "auto").trim().toLowerCase(java.util.Locale.ROOT);
        if (v.equals("off")) {
            return 0;
        }
        if (!v.equals("auto")) {
            try {
                return Math.min(Math.max(0, Long.parseLong(v)), Long.MAX_VALUE >> 20) << 20;
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(PLACE_PROPERTY + " must be auto, off or a number of MiB, not " + v);
            }
        }
        var os = java.lang.management.ManagementFactory.getOperatingSystemMXBean();
        long total = os instanceof com.sun.management.OperatingSystemMXBean m ? m.getTotalMemorySize() : 0;
        // never into the room the heap may grow to (an image's engine heap is 85 % of its container), a tenth spare
        return Math.max(0, Math.min(total / 4, total - Runtime.getRuntime().maxMemory() - total / 10));
    }

    @Override
    public void matmul(Linear w, float[] x, float[] y, int batch) {
        countProduct(w.bytes(), (long) w.out() * w.in() * batch);
        if (closed) {
            throw new IllegalStateException("this CPU backend is closed");
        }
        Panels panels = packed.panels(w);
        float[] values = activationQuant && w.fp8() ? quantizeActivations(x, batch, w.in(), w.blockCols()) : x;
        if (panels != null) {
            int slots = panels.slots();
            int perItem = Math.ceilDiv(slots, threads * ITEMS_PER_THREAD);
            int items = Math.ceilDiv(slots, perItem);
            Panels.Input input = panels.input(values, batch * w.in());
            parallelFor(items, (long) Math.ceilDiv(panels.panels(), items) * Panels.panelRows() * w.in() * batch,
                    i -> panels.multiply(input, batch, y, i * perItem, Math.min(slots, (i + 1) * perItem)));
            return;
        }
        Kernels kernels = kernelsFor(w);
        int in = w.in();
        int out = w.out();
        float[] input = inLayout(w, values, 0, batch);
        Tensor scales = w.scaleInv();
        int scaleCols = w.scaleColumns();
        int chunk = rowsPerItem(out);
        int chunks = (out + chunk - 1) / chunk;
        parallelFor(chunks, (long) chunk * in * batch, ci -> {
            int r0 = ci * chunk;
            int r1 = Math.min(out, r0 + chunk);
            int quads = batch - batch % 4;
            for (int r = r0; r < r1; ) {
                long rowStart = (long) r * in;
                long scaleStart = (long) (r / w.blockRows()) * scaleCols;
                // two rows at a time where they share block scales: eight sums in flight instead of four
                boolean pair = r + 1 < r1 && sharesBlockScales(w, r, 2);
                for (int b = 0; b < quads; b += 4) {
                    if (pair) {
                        kernels.dot2Rows4(w.weight(), rowStart, in, scales, scaleStart, w.blockCols(), input, b * in, in, y, b * out + r, out);
                    } else {
                        kernels.dotRow4(w.weight(), rowStart, in, scales, scaleStart, w.blockCols(), input, b * in, in, y, b * out + r, out);
                    }
                }
                r += pair ? 2 : 1;
            }
            for (int b = quads; b < batch; b++) {
                rowsAgainstOne(kernels, w, r0, r1, input, b * in, y, b * out);
            }
        });
    }

    /**
     * Rows [r0, r1) of w times one vector, four rows at a time where they share a row of block scales: the four
     * sums' chains then overlap (one row's chain of FMAs leaves the core waiting on each one's latency).
     */
    private static void rowsAgainstOne(Kernels kernels, Linear w, int r0, int r1, float[] x, int xOff, float[] y, int yOff) {
        int in = w.in();
        int blockRows = w.blockRows();
        int r = r0;
        while (r < r1) {
            long scaleStart = (long) (r / blockRows) * w.scaleColumns();
            if (r + 4 <= r1 && sharesBlockScales(w, r, 4)) {
                kernels.dotRows4(w.weight(), (long) r * in, in, w.scaleInv(), scaleStart, w.blockCols(), x, xOff, y, yOff + r);
                r += 4;
            } else {
                y[yOff + r] = kernels.dotRow(w.weight(), (long) r * in, in, w.scaleInv(), scaleStart, w.blockCols(), x, xOff);
                r++;
            }
        }
    }

    /** Whether w's rows [r, r + rows) read the same row of block scales (always, for a weight without scales). */
    private static boolean sharesBlockScales(Linear w, int r, int rows) {
        return w.scaleInv() == null || r / w.blockRows() == (r + rows - 1) / w.blockRows();
    }

    /**
     * Output rows one parallel item computes: about {@link #ITEMS_PER_THREAD} items per thread, so uneven items still
     * balance, in multiples of a cache line's 16 floats, so two threads meet at most at an item's edge. Items of 16
     * rows made the lm_head's 8,080 claims contend on the shared counter and its cache lines: the 2-thread matmul
     * took longer than one thread did alone.
     */
    private int rowsPerItem(int out) {
        int perItem = Math.ceilDiv(out, threads * ITEMS_PER_THREAD);
        return Math.max(ROWS_PER_LINE, Math.ceilDiv(perItem, ROWS_PER_LINE) * ROWS_PER_LINE);
    }

    /** The scalar kernels for FP8 weights holding NaN codes (the vector decoder assumes none), else the backend's. */
    private Kernels kernelsFor(Linear w) {
        return w.nanCodes() ? scalar : kernels;
    }

    /** {@code batch} vectors of length {@code w.in()} from {@code x[off..]}, in the kernels' element order for w's rows. */
    private float[] inLayout(Linear w, float[] x, int off, int batch) {
        Kernels kernels = kernelsFor(w);
        int in = w.in();
        DType dtype = w.weight().dtype();
        if (kernels.identityLayout(dtype, w.blockCols())) {
            return off == 0 ? x : java.util.Arrays.copyOfRange(x, off, off + batch * in);
        }
        float[] out = new float[batch * in];
        for (int b = 0; b < batch; b++) {
            kernels.toLayout(dtype, w.blockCols(), x, off + b * in, in, out, b * in);
        }
        return out;
    }

    @Override
    public void matvecRows(Linear w, int rowFrom, int rows, float[] x, int count, float[] y, int[] yOffs) {
        int in = w.in();
        countProduct((long) rows * in * w.weight().dtype().bytes(), (long) rows * in * count);
        Panels band = packed.panels(new Band(w, rowFrom, rows, false));
        if (band != null) {
            float[] out = new float[count * rows];
            bandTimes(band, x, count, out);
            for (int k = 0; k < count; k++) {
                System.arraycopy(out, k * rows, y, yOffs[k], rows);
            }
            return;
        }
        Kernels kernels = kernelsFor(w);
        float[] input = inLayout(w, x, 0, count);
        float[] four = new float[4];
        for (int i = 0; i < rows; i++) {
            int r = rowFrom + i;
            long rowStart = (long) r * in;
            long scaleStart = (long) (r / w.blockRows()) * w.scaleColumns();
            int k = 0;
            for (; k + 4 <= count; k += 4) {
                kernels.dotRow4(w.weight(), rowStart, in, w.scaleInv(), scaleStart, w.blockCols(), input, k * in, in, four, 0, 1);
                for (int j = 0; j < 4; j++) {
                    y[yOffs[k + j] + i] = four[j];
                }
            }
            for (; k < count; k++) {
                y[yOffs[k] + i] = kernels.dotRow(w.weight(), rowStart, in, w.scaleInv(), scaleStart, w.blockCols(), input, k * in);
            }
        }
    }

    @Override
    public void matvecRowsTransposed(Linear w, int rowFrom, int rows, float[] x, int[] xOffs, float[] y, int[] yOffs) {
        int in = w.in();
        int count = xOffs.length;
        countProduct((long) rows * in * w.weight().dtype().bytes(), (long) rows * in * count);
        Panels band = packed.panels(new Band(w, rowFrom, rows, true));
        if (band != null) {
            float[] xs = new float[count * rows];
            for (int k = 0; k < count; k++) {
                System.arraycopy(x, xOffs[k], xs, k * rows, rows);
            }
            float[] out = new float[count * in];
            bandTimes(band, xs, count, out);
            for (int k = 0; k < count; k++) {
                System.arraycopy(out, k * in, y, yOffs[k], in);
            }
            return;
        }
        Kernels kernels = kernelsFor(w);
        float[] acc = new float[count * in];
        float[] row = scratch(in);
        for (int i = 0; i < rows; i++) {
            int r = rowFrom + i;
            kernels.decodeRow(w.weight(), (long) r * in, in, w.scaleInv(), (long) (r / w.blockRows()) * w.scaleColumns(), w.blockCols(), row, 0);
            for (int k = 0; k < count; k++) {
                kernels.axpy(x[xOffs[k] + i], row, 0, acc, k * in, in);
            }
        }
        for (int k = 0; k < count; k++) {
            kernels.fromLayout(w.weight().dtype(), w.blockCols(), acc, k * in, in, y, yOffs[k]);
        }
    }

    /** A band's panels times {@code count} vectors {@code x[k·in ..]}, on the calling thread (callers split over bands). */
    private static void bandTimes(Panels band, float[] x, int count, float[] y) {
        band.multiply(band.input(x, count * band.in), count, y, 0, band.slots());
    }

    @Override
    public void embedding(Tensor table, int row, float[] out, int outOff) {
        int dim = (int) table.shape()[1];
        weightBytesRead.add((long) dim * table.dtype().bytes());
        float[] decoded = new float[dim];
        kernels.decodeRow(table, (long) row * dim, dim, null, 0, 1, decoded, 0);
        kernels.fromLayout(table.dtype(), 1, decoded, 0, dim, out, outOff);
    }

    /** Weight bytes the operations have read from the checkpoint so far (for bandwidth reports). */
    public long weightBytesRead() {
        return weightBytesRead.sum();
    }

    /** Counts one weight product for {@link #weightBytesRead} and {@link #multiplyAdds}. */
    private void countProduct(long bytes, long multiplyAddCount) {
        weightBytesRead.add(bytes);
        multiplyAdds.add(multiplyAddCount);
    }

    /**
     * Multiply-adds the weight products have done so far, one per weight element per input row (for compute reports;
     * attention over the KV cache is not counted).
     */
    public long multiplyAdds() {
        return multiplyAdds.sum();
    }

    @Override
    public void rmsNorm(float[] x, int xOff, float[] weight, float eps, float[] out, int outOff, int n) {
        float inv = (float) (1.0 / Math.sqrt(kernels.sumSquares(x, xOff, n) / n + eps));
        for (int i = 0; i < n; i++) {
            out[outOff + i] = x[xOff + i] * inv * weight[i];
        }
    }

    @Override
    public float dot(float[] a, int aOff, float[] b, int bOff, int n) {
        return kernels.dot(a, aOff, b, bOff, n);
    }

    @Override
    public void axpy(float alpha, float[] x, int xOff, float[] y, int yOff, int n) {
        kernels.axpy(alpha, x, xOff, y, yOff, n);
    }

    @Override
    public void toBf16Order(float[] x, int off, int n, float[] out, int outOff) {
        kernels.toLayout(DType.BF16, 1, x, off, n, out, outOff);
    }

    @Override
    public void fromBf16Order(float[] x, int off, int n, float[] out, int outOff) {
        kernels.fromLayout(DType.BF16, 1, x, off, n, out, outOff);
    }

    @Override
    public float dotBf16(float[] x, int xOff, int[] v, int off, int n) {
        return kernels.dotBf16(x, xOff, v, off, n);
    }

    @Override
    public void axpyBf16(float alpha, int[] v, int off, float[] y, int yOff, int n) {
        kernels.axpyBf16(alpha, v, off, y, yOff, n);
    }

    @Override
    public void softmax(float[] x, int off, int n) {
        float max = Float.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) {
            max = Math.max(max, x[off + i]);
        }
        float sum = 0;
        for (int i = 0; i < n; i++) {
            float e = (float) Math.exp(x[off + i] - max);
            x[off + i] = e;
            sum += e;
        }
        float inv = 1f / sum;
        for (int i = 0; i < n; i++) {
            x[off + i] *= inv;
        }
    }

    @Override
    public void siluMul(float[] gate, float[] up, int n) {
        for (int i = 0; i < n; i++) {
            float g = gate[i];
            gate[i] = g / (1f + (float) Math.exp(-g)) * up[i];
        }
    }

    @Override
    public void rope(float[] x, int off, float[] cos, float[] sin, int tableOff, int pairs) {
        for (int i = 0; i < pairs; i++) {
            float a = x[off + 2 * i];
            float b = x[off + 2 * i + 1];
            float c = cos[tableOff + i];
            float s = sin[tableOff + i];
            x[off + 2 * i] = a * c - b * s;
            x[off + 2 * i + 1] = a * s + b * c;
        }
    }

    @Override
    public void parallelFor(int n, long costPerItem, IntConsumer body) {
        if (team == null || n <= 1 || n * costPerItem < PARALLEL_THRESHOLD) {
            for (int i = 0; i < n; i++) {
                body.accept(i);
            }
            return;
        }
        team.run(n, body);
    }

    /**
     * Each value replaced by its FP8 rounding within its 1×{@code group} tile, scaled by the tile's max magnitude — the
     * fine-grained activation quantization of DeepSeek-V3 §3.3.1.
     */
    static float[] quantizeActivations(float[] x, int batch, int in, int group) {
        float[] q = new float[batch * in];
        for (int b = 0; b < batch; b++) {
            for (int c0 = 0; c0 < in; c0 += group) {
                int end = Math.min(in, c0 + group);
                float amax = 0;
                for (int c = c0; c < end; c++) {
                    amax = Math.max(amax, Math.abs(x[b * in + c]));
                }
                if (amax == 0) {
                    continue;
                }
                float scale = amax / Fp8E4M3.MAX;
                for (int c = c0; c < end; c++) {
                    q[b * in + c] = Fp8E4M3.decode(Fp8E4M3.encode(x[b * in + c] / scale)) * scale;
                }
            }
        }
        return q;
    }

    private float[] scratch(int n) {
        float[] s = scratch.get();
        if (s.length < n) {
            s = new float[n];
            scratch.set(s);
        }
        return s;
    }

}
