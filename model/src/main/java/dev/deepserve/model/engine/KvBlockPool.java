package dev.deepserve.model.engine;

import java.util.Arrays;

/**
 * Paged memory for MLA's latent KV (vLLM's PagedAttention applied to the compressed cache, with FlashMLA's 64-token
 * pages): fixed-size blocks of {@code blockTokens} tokens × {@code kv_lora_rank + qk_rope_head_dim} values per layer,
 * handed to sequences one block at a time as they grow and taken back when they shrink or finish, so memory follows
 * what sequences actually hold instead of what they might reach, and nothing is copied when a sequence grows.
 *
 * <p>Layout: per layer one array {@code [block, token-in-block, stride]}; block {@code b}'s token {@code i} starts at
 * {@code (b * blockTokens + i) * stride}. A bounded pool has at most {@code maxBlocks} blocks (the engine's KV budget)
 * and {@link #allocate} fails beyond them; its arrays grow on demand up to that size, so an idle engine does not hold
 * its whole budget. A pool is used by one engine thread; counters may be read from any thread.
 */
public final class KvBlockPool {

    private final int layers;
    private final int kvLoraRank;
    private final int stride;
    private final int blockTokens;
    private final int shift;
    private final int maxBlocks;
    private float[][] data;
    private int grown;
    private int[] free;
    private int freeCount;
    private volatile int used;

    /**
     * A pool of at most {@code maxBlocks} blocks ({@link Integer#MAX_VALUE}: unbounded, for a cache of its own).
     * {@code blockTokens} must be a power of two.
     */
    public KvBlockPool(int layers, int kvLoraRank, int ropeDim, int blockTokens, int maxBlocks) {
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
        this.maxBlocks = perLayer > Integer.MAX_VALUE - 16 ? (Integer.MAX_VALUE - 16) / (blockTokens * stride) : maxBlocks;
        this.data = new float[layers][0];
        this.free = new int[0];
    }

    /** A bounded pool holding {@code tokens} latent-KV tokens, rounded up to whole blocks. */
    public static KvBlockPool forTokens(int layers, int kvLoraRank, int ropeDim, int blockTokens, long tokens) {
        long blocks = Math.max(1, (tokens + blockTokens - 1) / blockTokens);
        return new KvBlockPool(layers, kvLoraRank, ropeDim, blockTokens, (int) Math.min(Integer.MAX_VALUE, blocks));
    }

    /** Takes a free block; throws when the pool is exhausted (admission should have prevented it). */
    int allocate() {
        if (freeCount == 0) {
            grow();
        }
        used++;
        return free[--freeCount];
    }

    void release(int block) {
        free[freeCount++] = block;
        used--;
    }

    private void grow() {
        if (grown == maxBlocks) {
            throw new IllegalStateException("the KV cache is full: all " + maxBlocks + " blocks of " + blockTokens + " tokens are in use");
        }
        int target = (int) Math.min(maxBlocks, Math.max(4L, grown * 2L));
        for (int l = 0; l < layers; l++) {
            data[l] = Arrays.copyOf(data[l], target * blockTokens * stride);
        }
        if (free.length < target) {
            free = Arrays.copyOf(free, target);
        }
        // hand out low block numbers first
        for (int b = target - 1; b >= grown; b--) {
            free[freeCount++] = b;
        }
        grown = target;
    }

    /** The layer's block storage; see the class comment for the layout. Valid until the next allocation. */
    float[] layer(int layer) {
        return data[layer];
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

    /** Bytes of memory behind the blocks allocated so far (arrays grow on demand up to the capacity). */
    public long bytes() {
        return (long) layers * grown * blockTokens * stride * Float.BYTES;
    }
}
