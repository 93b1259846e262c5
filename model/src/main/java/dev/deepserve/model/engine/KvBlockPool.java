package dev.deepserve.model.engine;

import dev.deepserve.model.weights.Bf16;

import java.util.Arrays;

/**
 * Paged memory for MLA's latent KV (vLLM's PagedAttention applied to the compressed cache, with FlashMLA's 64-token
 * pages): fixed-size blocks of {@code blockTokens} tokens × {@code kv_lora_rank + qk_rope_head_dim} values per layer,
 * handed to sequences one block at a time as they grow and taken back when they shrink or finish, so memory follows
 * what sequences actually hold instead of what they might reach, and nothing is copied when a sequence grows.
 *
 * <p>Layout: per layer one array {@code [block, token-in-block, stride]}; block {@code b}'s token {@code i} starts at
 * {@code (b * blockTokens + i) * stride}. The array holds floats, or BF16 bit patterns ({@link KvPrecision}). A bounded pool has at most {@code maxBlocks} blocks (the engine's KV budget)
 * and {@link #allocate} fails beyond them; its arrays grow on demand up to that size, so an idle engine does not hold
 * its whole budget. A pool is used by one engine thread; counters may be read from any thread.
 *
 * <p>A pool may keep its values elsewhere ({@link Storage}: a GPU's memory, sized for the whole pool up front); it
 * then only hands out block numbers and counts holders, and {@link KvCache#read}/{@link KvCache#write} copy through
 * the storage.
 */
public final class KvBlockPool {

    private final int layers;
    private final int kvLoraRank;
    private final int stride;
    private final int blockTokens;
    private final int shift;
    private final int maxBlocks;
    private final KvPrecision precision;
    private float[][] data;
    /** BF16 values packed two per int ({@link Bf16#packed}), when the precision is BF16. */
    private int[][] half;
    private int grown;
    private int[] free;
    private int freeCount;
    /** Holders per block: the sequences whose tables list it, and the prefix cache when it keeps it. */
    private int[] refs = new int[0];
    private volatile int used;
    private Reclaimer reclaimer;
    private final Storage storage;

    /**
     * Values kept outside the heap, {@code [layer][slot][stride]} with slot {@code block · blockTokens + i}. A run
     * never crosses a block.
     */
    public interface Storage {
        void write(int layer, int slot, float[] src, int srcOff, int tokens);

        void read(int layer, int slot, float[] dst, int dstOff, int tokens);
    }

    /** Something holding blocks it can give back on demand (the prefix cache): asked when the pool is exhausted. */
    public interface Reclaimer {
        /** Gives back one block nobody else holds; false when there is none. */
        boolean reclaimOne();

        /** Blocks it holds that nobody else does (counted as available for admission). */
        int reclaimable();
    }

    /**
     * A pool of at most {@code maxBlocks} blocks ({@link Integer#MAX_VALUE}: unbounded, for a cache of its own).
     * {@code blockTokens} must be a power of two.
     */
    public KvBlockPool(int layers, int kvLoraRank, int ropeDim, int blockTokens, int maxBlocks) {
        this(layers, kvLoraRank, ropeDim, blockTokens, maxBlocks, null);
    }

    /** A float32 pool of {@code maxBlocks} blocks whose values live in {@code storage} (null: on the heap). */
    public KvBlockPool(int layers, int kvLoraRank, int ropeDim, int blockTokens, int maxBlocks, Storage storage) {
        this(layers, kvLoraRank, ropeDim, blockTokens, maxBlocks, KvPrecision.FLOAT32, storage);
    }

    /**
     * A pool of {@code maxBlocks} blocks keeping values at {@code precision}, in {@code storage} (null: on the heap; a
     * storage converts from and to floats itself).
     */
    public KvBlockPool(int layers, int kvLoraRank, int ropeDim, int blockTokens, int maxBlocks, KvPrecision precision, Storage storage) {
        if (blockTokens < 1 || Integer.bitCount(blockTokens) != 1) {
            throw new IllegalArgumentException("KV block size must be a power of two, not " + blockTokens);
        }
        if (maxBlocks < 1) {
            throw new IllegalArgumentException("a KV pool needs at least one block");
        }
        this.layers = layers;
        this.kvLoraRank = kvLoraRank;
        this.stride = kvLoraRank + ropeDim;
        this.blockTokens = blockTokens;
        this.shift = Integer.numberOfTrailingZeros(blockTokens);
        long perLayer = (long) maxBlocks * blockTokens * stride;
        this.maxBlocks = storage == null && perLayer > Integer.MAX_VALUE - 16 ? (Integer.MAX_VALUE - 16) / (blockTokens * stride) : maxBlocks;
        this.storage = storage;
        this.precision = java.util.Objects.requireNonNull(precision, "precision");
        this.data = precision == KvPrecision.FLOAT32 ? new float[layers][0] : null;
        this.half = precision == KvPrecision.BF16 ? new int[layers][0] : null;
        this.free = new int[0];
    }

    /** A bounded pool holding {@code tokens} latent-KV tokens, rounded up to whole blocks. */
    public static KvBlockPool forTokens(int layers, int kvLoraRank, int ropeDim, int blockTokens, long tokens, KvPrecision precision) {
        long blocks = Math.max(1, (tokens + blockTokens - 1) / blockTokens);
        return new KvBlockPool(layers, kvLoraRank, ropeDim, blockTokens, (int) Math.min(Integer.MAX_VALUE, blocks), precision, null);
    }

    /** Takes a free block (reclaiming one from the prefix cache when none is); throws when the pool is exhausted. */
    int allocate() {
        if (freeCount == 0 && grown == maxBlocks && reclaimer != null) {
            reclaimer.reclaimOne();
        }
        if (freeCount == 0) {
            grow();
        }
        used++;
        int b = free[--freeCount];
        refs[b] = 1;
        return b;
    }

    /** One more holder of {@code block}. */
    void retain(int block) {
        if (refs[block] <= 0) {
            throw new IllegalStateException("block " + block + " is not in use");
        }
        refs[block]++;
    }

    /** One holder fewer; the block is free again when nobody holds it. */
    void release(int block) {
        if (refs[block] <= 0) {
            throw new IllegalStateException("block " + block + " released more often than taken");
        }
        if (--refs[block] == 0) {
            free[freeCount++] = block;
            used--;
        }
    }

    /** How many hold {@code block} (0: free). */
    int holders(int block) {
        return refs[block];
    }

    public void reclaimer(Reclaimer r) {
        this.reclaimer = r;
    }

    /** Free blocks plus those only the prefix cache holds: what admission may count on. */
    public int available() {
        Reclaimer r = reclaimer;
        return free() + (r == null ? 0 : r.reclaimable());
    }

    /**
     * Whether {@code blocks} more can be had, free or reclaimed. Asks the reclaimer (which counts its blocks) only when
     * the free ones do not suffice: the engine asks every step.
     */
    public boolean canTake(long blocks) {
        return blocks <= free() || blocks <= available();
    }

    private void grow() {
        if (grown == maxBlocks) {
            throw new IllegalStateException("the KV cache is full: all " + maxBlocks + " blocks of " + blockTokens + " tokens are in use");
        }
        int target = (int) Math.min(maxBlocks, Math.max(4L, grown * 2L));
        for (int l = 0; storage == null && l < layers; l++) {
            if (data != null) {
                data[l] = Arrays.copyOf(data[l], target * blockTokens * stride);
            } else {
                half[l] = Arrays.copyOf(half[l], Bf16.packedLength((long) target * blockTokens * stride));
            }
        }
        if (free.length < target) {
            free = Arrays.copyOf(free, target);
            refs = Arrays.copyOf(refs, target);
        }
        // hand out low block numbers first
        for (int b = target - 1; b >= grown; b--) {
            free[freeCount++] = b;
        }
        grown = target;
    }

    /** The layer's float32 block storage; see the class comment for the layout. Valid until the next allocation. */
    float[] layer(int layer) {
        if (storage != null) {
            throw new IllegalStateException("this KV pool keeps its values on the device, not in the heap");
        }
        if (data == null) {
            throw new IllegalStateException("this KV pool keeps " + precision.label() + " values, not floats");
        }
        return data[layer];
    }

    /**
     * The layer's BF16 block storage, packed two values per int ({@link Bf16#packed}), indexed by element as
     * {@link #layer}'s. Valid until the next allocation.
     */
    int[] bf16Layer(int layer) {
        if (storage != null) {
            throw new IllegalStateException("this KV pool keeps its values on the device, not in the heap");
        }
        if (half == null) {
            throw new IllegalStateException("this KV pool keeps " + precision.label() + " values, not BF16");
        }
        return half[layer];
    }

    /** Copies block {@code block}'s tokens of {@code layer} into {@code dst[off..]} as floats (wherever the values live). */
    void readBlock(int layer, int block, float[] dst, int off) {
        copy(layer, block * blockTokens, dst, off, blockTokens, false);
    }

    /**
     * Copies {@code tokens} tokens of {@code layer} starting at slot {@code slot} ({@code block · blockTokens + i}; the
     * run stays in one block) to ({@code toPool}) or from {@code flat[flatOff..]} as floats: through the storage, into
     * BF16 (rounded) or as they are.
     */
    void copy(int layer, int slot, float[] flat, int flatOff, int tokens, boolean toPool) {
        int at = slot * stride;
        int n = tokens * stride;
        if (storage != null) {
            if (toPool) {
                storage.write(layer, slot, flat, flatOff, tokens);
            } else {
                storage.read(layer, slot, flat, flatOff, tokens);
            }
        } else if (half != null) {
            int[] values = half[layer];
            for (int i = 0; i < n; i++) {
                if (toPool) {
                    Bf16.pack(values, at + i, flat[flatOff + i]);
                } else {
                    flat[flatOff + i] = Bf16.packed(values, at + i);
                }
            }
        } else if (toPool) {
            System.arraycopy(flat, flatOff, data[layer], at, n);
        } else {
            System.arraycopy(data[layer], at, flat, flatOff, n);
        }
    }

    /** How the values are kept. */
    public KvPrecision precision() {
        return precision;
    }

    /** Where the values live when not in the heap, else null. */
    public Storage storage() {
        return storage;
    }

    public int layers() {
        return layers;
    }

    public int kvLoraRank() {
        return kvLoraRank;
    }

    public int stride() {
        return stride;
    }

    public int blockTokens() {
        return blockTokens;
    }

    int shift() {
        return shift;
    }

    /** Blocks this pool may hand out in all. */
    public int capacity() {
        return maxBlocks;
    }

    /** Blocks held by sequences now. */
    public int used() {
        return used;
    }

    public int free() {
        return maxBlocks - used;
    }

    /** Blocks needed to hold {@code tokens} tokens. */
    public long blocksFor(long tokens) {
        return (tokens + blockTokens - 1) / blockTokens;
    }

    /** Bytes of memory behind the blocks: allocated so far on the heap (grown on demand), the whole pool in a storage. */
    public long bytes() {
        return (long) layers * (storage == null ? grown : maxBlocks) * blockTokens * stride * precision.bytes();
    }
}
