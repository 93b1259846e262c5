package dev.deepserve.model.engine;

import java.nio.ByteBuffer;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Prompt-prefix cache over MLA's latent KV (DeepSeek's context caching): the KV of each full block of
 * {@code blockTokens} prompt tokens is kept under a hash chain of the block contents (a block's key covers every token
 * before it, so equal keys mean equal prefixes), verified token by token on a hit, and evicted least-recently-used
 * under a byte budget. A hit copies the cached latents into the new sequence's cache, so those tokens are not
 * computed again — and they are the {@code prompt_cache_hit_tokens} billing charges at the cheaper rate: the count
 * is exactly the tokens whose KV came from here.
 *
 * <p>Attached to an engine's block pools whose blocks are as long as this cache's ({@link #attach}), it keeps no copy:
 * a stored block is the sequence's own pool block, held one more time, and a hit puts that very block into the new
 * sequence's table (vLLM's automatic prefix caching) — nothing is copied either way, and the pool reclaims the
 * least recently used blocks only this cache holds when it runs out.
 */
public final class PrefixCache {

    private final int blockTokens;
    private final long budgetBytes;
    private final LinkedHashMap<String, Block> blocks = new LinkedHashMap<>(256, 0.75f, true);
    private long usedBytes;
    private long hits;
    private long lookups;
    private long diskHits;

    /**
     * A block's KV: copied (the main layers and, when speculative decoding keeps one, the MTP module's layer), or held
     * in the attached pools ({@code mainId}, {@code mtpId}; -1 where absent).
     */
    private record Block(int[] tokens, float[][] layers, float[] mtp, long bytes, int mainId, int mtpId) {
        boolean pooled() {
            return mainId >= 0;
        }
    }

    private KvBlockPool mainPool;
    private KvBlockPool mtpPool;
    /** Where evicted blocks go and are found again (null: evicted blocks are gone). */
    private PrefixDiskTier disk;

    public PrefixCache(int blockTokens, long budgetBytes) {
        if (blockTokens < 1) {
            throw new IllegalArgumentException("blockTokens must be positive");
        }
        this.blockTokens = blockTokens;
        this.budgetBytes = budgetBytes;
    }

    public int blockTokens() {
        return blockTokens;
    }

    /**
     * Spills blocks evicted from memory to {@code tier} and looks there when memory misses; a block found there is
     * copied into the sequence's cache and served (and billed) like a memory hit.
     */
    public synchronized void spillTo(PrefixDiskTier tier) {
        this.disk = tier;
    }

    public synchronized PrefixDiskTier disk() {
        return disk;
    }

    /**
     * Keeps blocks in these pools instead of copies from now on (when their blocks are {@link #blockTokens} long; else
     * nothing changes), and lets the pools reclaim blocks only this cache holds. Blocks held in pools attached before
     * are given back to them and forgotten.
     */
    public synchronized void attach(KvBlockPool main, KvBlockPool mtp) {
        if (main.blockTokens() != blockTokens || mtp != null && mtp.blockTokens() != blockTokens) {
            return;
        }
        if (mainPool != null && (mainPool != main || mtpPool != mtp)) {
            // block numbers mean nothing in other pools: give the old pools theirs back, forget them, stop reclaiming there
            blocks.values().removeIf(b -> {
                if (b.pooled()) {
                    drop(b);
                }
                return b.pooled();
            });
            mainPool.reclaimer(null);
            if (mtpPool != null) {
                mtpPool.reclaimer(null);
            }
        }
        this.mainPool = main;
        this.mtpPool = mtp;
        main.reclaimer(reclaimer(false));
        if (mtp != null) {
            mtp.reclaimer(reclaimer(true));
        }
    }

    private KvBlockPool.Reclaimer reclaimer(boolean mtpSide) {
        return new KvBlockPool.Reclaimer() {
            @Override
            public boolean reclaimOne() {
                synchronized (PrefixCache.this) {
                    Iterator<Map.Entry<String, Block>> it = blocks.entrySet().iterator();
                    while (it.hasNext()) {
                        Map.Entry<String, Block> e = it.next();
                        Block b = e.getValue();
                        if (b.pooled() && onlyHere(b, mtpSide)) {
                            it.remove();
                            spill(e.getKey(), b);
                            drop(b);
                            return true;
                        }
                    }
                    return false;
                }
            }

            @Override
            public int reclaimable() {
                synchronized (PrefixCache.this) {
                    int n = 0;
                    for (Block b : blocks.values()) {
                        if (b.pooled() && onlyHere(b, mtpSide)) {
                            n++;
                        }
                    }
                    return n;
                }
            }
        };
    }

    /** Whether no sequence holds the block's pool block on that side (evicting it gives the block back to the pool). */
    private boolean onlyHere(Block b, boolean mtpSide) {
        int id = mtpSide ? b.mtpId() : b.mainId();
        KvBlockPool p = mtpSide ? mtpPool : mainPool;
        return id >= 0 && p.holders(id) == 1 && (mtpSide || b.mtpId() < 0 || mtpPool.holders(b.mtpId()) == 1);
    }

    private void drop(Block b) {
        usedBytes -= b.bytes();
        if (b.pooled()) {
            mainPool.release(b.mainId());
            if (b.mtpId() >= 0) {
                mtpPool.release(b.mtpId());
            }
        }
    }

    /** Pool blocks this cache holds (main, MTP). */
    public synchronized int[] heldBlocks() {
        int main = 0;
        int mtp = 0;
        for (Block b : blocks.values()) {
            main += b.mainId() >= 0 ? 1 : 0;
            mtp += b.mtpId() >= 0 ? 1 : 0;
        }
        return new int[] {main, mtp};
    }

    /**
     * Fills an empty {@code cache} with the longest cached prefix of {@code prompt} (whole blocks, always leaving at
     * least the last prompt token to compute, which produces the first output logits) and returns how many tokens it
     * covers.
     */
    public synchronized int load(int[] prompt, KvCache cache) {
        return load(prompt, cache, null);
    }

    /**
     * As {@link #load(int[], KvCache)}, also filling the MTP module's cache when given (blocks stored without MTP KV
     * then end the hit). The MTP latent of a block's last position was computed with the token that followed it in
     * the request that stored it; if the new prompt continues differently only the draft quality of speculative
     * decoding can suffer, never the output, which the main model verifies.
     */
    public synchronized int load(int[] prompt, KvCache cache, KvCache mtp) {
        if (cache.length() != 0 || mtp != null && mtp.length() != 0) {
            throw new IllegalArgumentException("the cache must be empty");
        }
        lookups++;
        int usable = (prompt.length - 1) / blockTokens;
        String key = "";
        int served = 0;
        for (int b = 0; b < usable; b++) {
            key = chain(key, prompt, b);
            Block block = blocks.get(key);
            boolean fromDisk = false;
            if (block == null && disk != null) {
                PrefixDiskTier.Block found = disk.read(key, cache.layers(), cache.stride(), mtp == null ? 0 : mtp.stride());
                if (found != null) { // checked and copied in below, like a copy-mode hit
                    block = new Block(found.tokens(), found.layers(), found.mtp(), 0, -1, -1);
                    fromDisk = true;
                }
            }
            if (block == null || !Arrays.equals(block.tokens(), 0, blockTokens, prompt, b * blockTokens, (b + 1) * blockTokens)
                    || mtp != null && block.mtp() == null && block.mtpId() < 0) {
                break;
            }
            if (fromDisk) {
                diskHits++;
            }
            if (block.pooled()) {
                if (cache.pool() != mainPool || mtp != null && mtp.pool() != mtpPool) {
                    break; // held in another engine's pool
                }
                if (mtp != null) {
                    mtp.share(block.mtpId());
                }
                cache.share(block.mainId());
                served += blockTokens;
                continue;
            }
            if (mtp != null) {
                mtp.reserve(blockTokens);
                mtp.write(0, served, block.mtp(), 0, blockTokens);
                mtp.advance(blockTokens);
            }
            cache.reserve(blockTokens);
            for (int l = 0; l < cache.layers(); l++) {
                cache.write(l, served, block.layers()[l], 0, blockTokens);
            }
            cache.advance(blockTokens);
            served += blockTokens;
        }
        if (served > 0) {
            hits++;
        }
        return served;
    }

    /** Keeps the KV of every full block of {@code prompt} that {@code cache} holds and the cache does not have yet. */
    public synchronized void store(int[] prompt, KvCache cache) {
        store(prompt, cache, null);
    }

    /** As {@link #store(int[], KvCache)}, keeping the MTP module's KV of each block too when given. */
    public synchronized void store(int[] prompt, KvCache cache, KvCache mtp) {
        int full = Math.min(prompt.length, mtp == null ? cache.length() : Math.min(cache.length(), mtp.length())) / blockTokens;
        String key = "";
        for (int b = 0; b < full; b++) {
            key = chain(key, prompt, b);
            Block known = blocks.get(key);
            if (known != null) {
                if (mtp != null && known.mtp() == null && known.mtpId() < 0) {
                    withMtp(key, known, mtp, b); // stored by a sequence that did not speculate: a speculating one adds its MTP part
                }
                continue;
            }
            boolean pooled = mainPool != null && cache.pool() == mainPool && (mtp == null || mtp.pool() == mtpPool);
            long bytes = blockBytes(cache, mtp, pooled ? cache.precision().bytes() : Float.BYTES);
            if (bytes > budgetBytes) {
                if (disk != null && !disk.has(key)) { // memory cannot hold even one block: straight to the disk tier, at the cache's precision
                    Block c = copy(prompt, cache, mtp, b, bytes);
                    disk.spill(key, new PrefixDiskTier.Block(c.tokens(), c.layers(), c.mtp(), cache.precision()));
                }
                continue;
            }
            if (pooled) {
                int mainId = cache.blockAt(b);
                int mtpId = mtp == null ? -1 : mtp.blockAt(b);
                mainPool.retain(mainId);
                if (mtpId >= 0) {
                    mtpPool.retain(mtpId);
                }
                blocks.put(key, new Block(Arrays.copyOfRange(prompt, b * blockTokens, (b + 1) * blockTokens), null, null, bytes, mainId, mtpId));
            } else {
                blocks.put(key, copy(prompt, cache, mtp, b, bytes));
            }
            usedBytes += bytes;
            evict();
        }
    }

    /** Gives a main-only block the MTP module's KV of the same tokens, so speculating sequences can use it too. */
    private void withMtp(String key, Block known, KvCache mtp, int b) {
        if (known.pooled()) {
            if (mtp.pool() != mtpPool) {
                return;
            }
            int mtpId = mtp.blockAt(b);
            mtpPool.retain(mtpId);
            long extra = (long) mtp.stride() * blockTokens * mtp.precision().bytes();
            blocks.put(key, new Block(known.tokens(), null, null, known.bytes() + extra, known.mainId(), mtpId));
            usedBytes += extra;
        } else {
            float[] layer = new float[blockTokens * mtp.stride()];
            mtp.read(0, b * blockTokens, layer, 0, blockTokens);
            long extra = (long) layer.length * Float.BYTES;
            blocks.put(key, new Block(known.tokens(), known.layers(), layer, known.bytes() + extra, -1, -1));
            usedBytes += extra;
        }
        evict();
    }

    /** Block {@code b} of the sequence's KV, copied out as floats. */
    private Block copy(int[] prompt, KvCache cache, KvCache mtp, int b, long bytes) {
        float[][] layers = new float[cache.layers()][blockTokens * cache.stride()];
        for (int l = 0; l < layers.length; l++) {
            cache.read(l, b * blockTokens, layers[l], 0, blockTokens);
        }
        float[] mtpLayer = null;
        if (mtp != null) {
            mtpLayer = new float[blockTokens * mtp.stride()];
            mtp.read(0, b * blockTokens, mtpLayer, 0, blockTokens);
        }
        return new Block(Arrays.copyOfRange(prompt, b * blockTokens, (b + 1) * blockTokens), layers, mtpLayer, bytes, -1, -1);
    }

    /**
     * What one block costs against the budget: its latents (main and MTP) at {@code valueBytes} each (the pool's
     * precision when held, float32 when copied), token ids, bookkeeping.
     */
    private long blockBytes(KvCache cache, KvCache mtp, int valueBytes) {
        return ((long) cache.layers() * cache.stride() + (mtp == null ? 0 : mtp.stride())) * blockTokens * valueBytes + blockTokens * 4L + 64;
    }

    private void evict() {
        Iterator<Map.Entry<String, Block>> it = blocks.entrySet().iterator();
        while (usedBytes > budgetBytes && it.hasNext()) {
            Map.Entry<String, Block> e = it.next();
            it.remove();
            spill(e.getKey(), e.getValue());
            drop(e.getValue());
        }
    }

    /** Hands an evicted block's KV to the disk tier, copied out of its pool before the pool may reuse it. */
    private void spill(String key, Block b) {
        if (disk == null || disk.has(key)) {
            return;
        }
        float[][] layers = b.layers();
        float[] mtp = b.mtp();
        KvPrecision precision = KvPrecision.FLOAT32;
        if (b.pooled()) {
            precision = mainPool.precision();
            layers = new float[mainPool.layers()][blockTokens * mainPool.stride()];
            for (int l = 0; l < layers.length; l++) {
                mainPool.readBlock(l, b.mainId(), layers[l], 0);
            }
            if (b.mtpId() >= 0) {
                mtp = new float[blockTokens * mtpPool.stride()];
                mtpPool.readBlock(0, b.mtpId(), mtp, 0);
            }
        }
        disk.spill(key, new PrefixDiskTier.Block(b.tokens(), layers, mtp, precision));
    }

    /** SHA-256 over the parent key and the block's token ids: the key of block {@code b} names the whole prefix up to it. */
    private String chain(String parent, int[] prompt, int b) {
        try {
            MessageDigest d = MessageDigest.getInstance("SHA-256");
            d.update(parent.getBytes(java.nio.charset.StandardCharsets.US_ASCII));
            ByteBuffer buf = ByteBuffer.allocate(blockTokens * 4);
            for (int i = b * blockTokens; i < (b + 1) * blockTokens; i++) {
                buf.putInt(prompt[i]);
            }
            d.update(buf.array());
            return HexFormat.of().formatHex(d.digest(), 0, 16);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    public synchronized long usedBytes() {
        return usedBytes;
    }

    public synchronized int blocks() {
        return blocks.size();
    }

    /**
     * Hands every block in memory to the disk tier (those already there are skipped), keeping them in memory too:
     * what an engine does as it stops, so that it finds its prefixes again when it starts. Returns the blocks handed.
     */
    public synchronized int spillAll() {
        if (disk == null) {
            return 0;
        }
        for (Map.Entry<String, Block> e : blocks.entrySet()) {
            spill(e.getKey(), e.getValue());
        }
        return blocks.size();
    }

    /** Blocks served from the disk tier so far. */
    public synchronized long diskHits() {
        return diskHits;
    }

    /** Lookups that served at least one block, and all lookups. */
    public synchronized long[] hitsAndLookups() {
        return new long[] {hits, lookups};
    }
}
