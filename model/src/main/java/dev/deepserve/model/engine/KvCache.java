package dev.deepserve.model.engine;

import java.util.Arrays;

/**
 * MLA's compressed KV cache for one sequence (DeepSeek-V2 §2.1.2): per layer and token only the normalized latent
 * {@code c_kv} ({@code kv_lora_rank} values) and the rotated shared key {@code k_pe} ({@code qk_rope_head_dim}
 * values) — not per-head keys and values. Layout per layer: {@code [token, kvLoraRank + ropeDim]}.
 * Speculative decoding rolls back rejected tokens with {@link #truncate}.
 */
public final class KvCache {

    private final int layers;
    private final int kvLoraRank;
    private final int stride;
    private final float[][] data;
    private int length;
    private int capacity;

    public KvCache(int layers, int kvLoraRank, int ropeDim, int initialCapacity) {
        this.layers = layers;
        this.kvLoraRank = kvLoraRank;
        this.stride = kvLoraRank + ropeDim;
        this.capacity = Math.max(1, initialCapacity);
        this.data = new float[layers][capacity * stride];
    }

    /** Tokens whose latents every layer holds. */
    public int length() {
        return length;
    }

    public int layers() {
        return layers;
    }

    /** Values per token per layer: {@code kv_lora_rank + qk_rope_head_dim}. */
    public int stride() {
        return stride;
    }

    public int kvLoraRank() {
        return kvLoraRank;
    }

    /** The layer's buffer, {@code [token, stride]}; valid for tokens below {@link #length()} plus those being written. */
    public float[] layer(int layer) {
        return data[layer];
    }

    /** Makes room for {@code n} more tokens beyond {@link #length()}. */
    public void reserve(int n) {
        int needed = length + n;
        if (needed <= capacity) {
            return;
        }
        int size = Math.max(needed, capacity * 2);
        for (int l = 0; l < layers; l++) {
            data[l] = Arrays.copyOf(data[l], size * stride);
        }
        capacity = size;
    }

    /** Marks {@code n} tokens, already written to every layer, as part of the sequence. */
    public void advance(int n) {
        if (length + n > capacity) {
            throw new IllegalStateException("advance past reserved capacity");
        }
        length += n;
    }

    /** Forgets tokens from {@code newLength} on (rejected speculative tokens). */
    public void truncate(int newLength) {
        if (newLength < 0 || newLength > length) {
            throw new IllegalArgumentException("cannot truncate a cache of " + length + " tokens to " + newLength);
        }
        length = newLength;
    }

    /** Floats held per token across all layers: what the decode service budgets memory by. */
    public long floatsPerToken() {
        return (long) layers * stride;
    }
}
