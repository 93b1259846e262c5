package dev.deepserve.model.engine;

import java.util.Arrays;

/**
 * MLA's compressed KV cache for one sequence (DeepSeek-V2 §2.1.2): per layer and token only the normalized latent
 * {@code c_kv} ({@code kv_lora_rank} values) and the rotated shared key {@code k_pe} ({@code qk_rope_head_dim}
 * values) — not per-head keys and values. The tokens live in blocks of a {@link KvBlockPool}; this cache holds the
 * block table (token {@code t} is in block {@code table[t / blockTokens]}) and takes blocks as it grows. Speculative
 * decoding rolls back rejected tokens with {@link #truncate}; {@link #release} gives every block back.
 */
public final class KvCache {

    private final KvBlockPool pool;
    private final int shift;
    private final int mask;
    private int[] table = new int[4];
    private int blocks;
    private int length;
    private boolean released;

    /** A cache drawing its blocks from a shared, bounded pool. */
    public KvCache(KvBlockPool pool) {
        this.pool = pool;
        this.shift = pool.shift();
        this.mask = pool.blockTokens() - 1;
    }

    /**
     * A cache with a pool of its own that grows as needed (prefill outside an engine, tests, references); with an
     * initial capacity of 0 nothing is allocated until the first token.
     */
    public KvCache(int layers, int kvLoraRank, int ropeDim, int initialCapacity) {
        this(layers, kvLoraRank, ropeDim, initialCapacity, KvPrecision.FLOAT32);
    }

    /** As {@link #KvCache(int, int, int, int)}, keeping values at {@code precision}. */
    public KvCache(int layers, int kvLoraRank, int ropeDim, int initialCapacity, KvPrecision precision) {
        this(new KvBlockPool(layers, kvLoraRank, ropeDim, 64, Integer.MAX_VALUE, precision, null));
        if (initialCapacity > 0) {
            reserveBlocks(pool.blocksFor(initialCapacity));
        }
        length = 0;
    }

    /** Tokens whose latents every layer holds. */
    public int length() {
        return length;
    }

    public int layers() {
        return pool.layers();
    }

    /** Values per token per layer: {@code kv_lora_rank + qk_rope_head_dim}. */
    public int stride() {
        return pool.stride();
    }

    public int kvLoraRank() {
        return pool.kvLoraRank();
    }

    public KvBlockPool pool() {
        return pool;
    }

    /** Blocks this cache holds now. */
    public int blocks() {
        return blocks;
    }

    /** How the values are kept: {@link #layer} serves float32 caches, {@link #bf16Layer} BF16 ones. */
    public KvPrecision precision() {
        return pool.precision();
    }

    /** The layer's float32 storage: token {@code t} of this sequence starts at {@link #offset offset(t)} in it. */
    public float[] layer(int layer) {
        return pool.layer(layer);
    }

    /** The layer's BF16 storage, packed two per int ({@link Bf16#packed}), indexed by element as {@link #layer}'s. */
    public int[] bf16Layer(int layer) {
        return pool.bf16Layer(layer);
    }

    /** Where token {@code t}'s values start in {@link #layer}'s array. */
    public int offset(int t) {
        return ((table[t >>> shift] << shift) | (t & mask)) * pool.stride();
    }

    /** Makes room for {@code n} more tokens beyond {@link #length()}; throws when the pool has no free block left. */
    public void reserve(int n) {
        if (released) {
            throw new IllegalStateException("the KV cache was released");
        }
        reserveBlocks(pool.blocksFor((long) length + n) - blocks);
    }

    private void reserveBlocks(long more) {
        for (long i = 0; i < more; i++) {
            if (blocks == table.length) {
                table = Arrays.copyOf(table, blocks * 2);
            }
            int block = pool.allocate(); // before touching the table: a full pool leaves this cache as it was
            table[blocks++] = block;
        }
    }

    /** The pool block holding tokens {@code [i·blockTokens, (i+1)·blockTokens)}. */
    public int blockAt(int i) {
        if (i < 0 || i >= blocks) {
            throw new IndexOutOfBoundsException("block " + i + " of " + blocks);
        }
        return table[i];
    }

    /**
     * Appends a full block another holder filled (the prefix cache) as this cache's next {@code blockTokens} tokens,
     * without copying; only at a block boundary, and the block is never written through this cache.
     */
    void share(int block) {
        if (released || length != (long) blocks << shift) {
            throw new IllegalStateException("a shared block must start at a block boundary of a live cache");
        }
        pool.retain(block);
        if (blocks == table.length) {
            table = Arrays.copyOf(table, blocks * 2);
        }
        table[blocks++] = block;
        length += pool.blockTokens();
    }

    /** Marks {@code n} tokens, already written to every layer, as part of the sequence. */
    public void advance(int n) {
        if ((long) length + n > (long) blocks << shift) {
            throw new IllegalStateException("advance past reserved capacity");
        }
        length += n;
    }

    /** Forgets tokens from {@code newLength} on (rejected speculative tokens) and gives back blocks left empty. */
    public void truncate(int newLength) {
        if (newLength < 0 || newLength > length) {
            throw new IllegalArgumentException("cannot truncate a cache of " + length + " tokens to " + newLength);
        }
        length = newLength;
        int keep = (int) pool.blocksFor(newLength);
        while (blocks > keep) {
            pool.release(table[--blocks]);
        }
    }

    /** Gives every block back to the pool; the cache cannot be used afterwards. Idempotent. */
    public void release() {
        truncate(0);
        released = true;
    }

    /**
     * Copies {@code tokens} tokens of {@code layer} from {@code src} into positions {@code from ..} (already reserved),
     * rounding them to the cache's precision.
     */
    public void write(int layer, int from, float[] src, int srcOff, int tokens) {
        copy(layer, from, src, srcOff, tokens, true);
    }

    /** Copies {@code tokens} tokens of {@code layer} from positions {@code from ..} into {@code dst}, contiguous, as floats. */
    public void read(int layer, int from, float[] dst, int dstOff, int tokens) {
        copy(layer, from, dst, dstOff, tokens, false);
    }

    private void copy(int layer, int from, float[] flat, int flatOff, int tokens, boolean toCache) {
        if (from < 0 || (long) from + tokens > (long) blocks << shift) {
            throw new IndexOutOfBoundsException("tokens " + from + ".." + (from + tokens) + " are outside the cache's blocks");
        }
        int stride = pool.stride();
        int t = from;
        int end = from + tokens;
        while (t < end) {
            int run = Math.min(end - t, mask + 1 - (t & mask)); // to the end of t's block
            pool.copy(layer, offset(t) / stride, flat, flatOff + (t - from) * stride, run, toCache);
            t += run;
        }
    }

    /**
     * A copy of this cache's tokens in blocks of {@code target} (same shape; values rounded to its precision); throws
     * when {@code target} lacks room.
     */
    public KvCache copyTo(KvBlockPool target) {
        if (target.layers() != layers() || target.stride() != stride() || target.kvLoraRank() != kvLoraRank()) {
            throw new IllegalArgumentException("the pool holds KV of another shape");
        }
        KvCache copy = new KvCache(target);
        copy.reserve(length);
        float[] run = new float[Math.min(length, 1024) * stride()];
        int chunk = run.length / Math.max(1, stride());
        for (int l = 0; l < layers(); l++) {
            for (int t = 0; t < length; t += chunk) {
                int n = Math.min(chunk, length - t);
                read(l, t, run, 0, n);
                copy.write(l, t, run, 0, n);
            }
        }
        copy.advance(length);
        return copy;
    }

    /** Values held per token across all layers. */
    public long valuesPerToken() {
        return (long) layers() * stride();
    }

    /** Bytes held per token across all layers, at the cache's precision. */
    public long bytesPerToken() {
        return valuesPerToken() * precision().bytes();
    }
}
