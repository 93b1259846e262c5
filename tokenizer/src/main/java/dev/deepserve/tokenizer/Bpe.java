package dev.deepserve.tokenizer;

import java.util.Arrays;

/**
 * Byte-level BPE over token ids. A word starts as one symbol per UTF-8 byte; the adjacent pair with the lowest merge
 * rank is merged (leftmost first among equal ranks) until no pair has a merge — the order Hugging Face's BPE applies.
 * Short words use a simple scan; long ones a heap over a linked list, so a 1 MB word costs O(n log n), not O(n²).
 * Results are cached per word (by its bytes, in a bounded direct-mapped table).
 */
final class Bpe {

    /** Words of at most this many UTF-8 bytes are cached. */
    private static final int CACHE_MAX_WORD = 64;
    /** Cache slots, 2^CACHE_BITS (direct-mapped: a word takes the slot of its hash, replacing what was there). */
    private static final int CACHE_BITS = 16;
    private static final int CACHE_SLOTS = 1 << CACHE_BITS;
    private static final int SIMPLE_MAX = 48;

    private final int[] byteIds;
    /**
     * The merges, open addressing with linear probing: each slot one long packing (left id, right id, rank), -1 when
     * empty. The table is megabytes, and a lookup that misses the CPU cache is most of what a merge costs: one long per
     * entry halves the table against a key and a value, and a merge's result is looked up by rank only when it is applied.
     */
    private final long[] table;
    private final int mask;
    private final int shift;
    private final int idBits;
    private final int rankBits;
    /** The id a merge of rank r makes. */
    private final int[] mergedIds;
    private final boolean ignoreMerges;
    private final java.util.Map<String, Integer> vocab;
    /**
     * A word's ids by its UTF-8 bytes: no string is made to look one up, nothing is ever cleared, and the memory is
     * bounded. Threads share it without locks: a slot holds an immutable entry, replaced whole.
     */
    private final Cached[] cache = new Cached[CACHE_SLOTS];
    /** Each slot's word hash, checked first: a miss is one load from a small array, not a walk to the entry's bytes. */
    private final int[] cacheHashes = new int[CACHE_SLOTS];

    private record Cached(byte[] word, int[] ids) {
    }

    Bpe(int[] byteIds, long[][] merges, java.util.Map<String, Integer> vocab, boolean ignoreMerges) {
        this.byteIds = byteIds;
        this.vocab = vocab;
        this.ignoreMerges = ignoreMerges;
        int maxId = 0;
        for (int id : byteIds) {
            maxId = Math.max(maxId, id);
        }
        for (long[] m : merges) {
            maxId = Math.max(maxId, Math.max((int) (m[0] >>> 32), Math.max((int) m[0], (int) m[1])));
        }
        this.idBits = Math.max(1, 32 - Integer.numberOfLeadingZeros(maxId));
        this.rankBits = Math.max(1, 32 - Integer.numberOfLeadingZeros(merges.length));
        if (2 * idBits + rankBits > 63) {
            throw new TokenizerFormatException("a vocabulary of " + (maxId + 1) + " ids with " + merges.length + " merges is too large for the merge table");
        }
        this.mergedIds = new int[merges.length];
        int capacity = Integer.highestOneBit(Math.max(16, merges.length * 2)) * 2;
        this.table = new long[capacity];
        Arrays.fill(table, -1L);
        this.mask = capacity - 1;
        this.shift = 64 - Integer.numberOfTrailingZeros(capacity);
        for (int rank = 0; rank < merges.length; rank++) {
            long key = key((int) (merges[rank][0] >>> 32), (int) merges[rank][0]);
            int slot = slot(key);
            while (table[slot] != -1L && table[slot] >>> rankBits != key) {
                slot = (slot + 1) & mask;
            }
            // a repeated merge takes its last rank, as Hugging Face's merge map does (later entries overwrite)
            table[slot] = key << rankBits | rank;
            mergedIds[rank] = (int) merges[rank][1];
        }
    }

    /** The (left id, right id) of a merge as the file lists it. */
    static long pair(int left, int right) {
        return ((long) left << 32) | (right & 0xFFFFFFFFL);
    }

    private long key(int left, int right) {
        return (long) left << idBits | right;
    }

    /** Fibonacci hashing: the top bits of the product, as many as the table has slots. */
    private int slot(long key) {
        return (int) (key * 0x9E3779B97F4A7C15L >>> shift);
    }

    /** The rank of the merge of a pair, or -1 when the pair never merges. */
    private int merge(int left, int right) {
        long key = key(left, right);
        int slot = slot(key);
        while (true) {
            long e = table[slot];
            if (e == -1L) {
                return -1;
            }
            if (e >>> rankBits == key) {
                return (int) (e & ((1L << rankBits) - 1));
            }
            slot = (slot + 1) & mask;
        }
    }

    /** As {@link #merge}, with {@link Integer#MAX_VALUE} for a pair that never merges (so the smallest value is the next merge). */
    private int rankOf(int left, int right) {
        int r = merge(left, right);
        return r < 0 ? Integer.MAX_VALUE : r;
    }

    long memoryBytes() {
        return table.length * 8L + mergedIds.length * 4L;
    }

    /** Appends the ids of one pre-tokenized word (its UTF-8 bytes {@code bytes[0, n)}) to {@code out}. */
    void encode(byte[] bytes, int n, IntList out) {
        int slot = -1;
        int h = 0;
        if (n <= CACHE_MAX_WORD) {
            h = hash(bytes, n);
            slot = h >>> (32 - CACHE_BITS); // the well-mixed high bits
            if (cacheHashes[slot] == h) {
                Cached c = cache[slot]; // written after its hash: may be older, so the bytes decide
                if (c != null && Arrays.equals(c.word, 0, c.word.length, bytes, 0, n)) {
                    out.addAll(c.ids);
                    return;
                }
            }
        }
        int[] ids;
        Integer whole = ignoreMerges ? vocab.get(byteLevel(bytes, n)) : null;
        if (whole != null) {
            ids = new int[] {whole};
        } else {
            ids = n <= SIMPLE_MAX ? simple(bytes, n) : heap(bytes, n);
        }
        out.addAll(ids);
        if (slot >= 0) {
            cacheHashes[slot] = h;
            cache[slot] = new Cached(Arrays.copyOf(bytes, n), ids);
        }
    }

    private static int hash(byte[] bytes, int n) {
        int h = n;
        for (int i = 0; i < n; i++) {
            h = 31 * h + bytes[i];
        }
        return (h ^ (h >>> 16)) * 0x9E3779B9;
    }

    private static String byteLevel(byte[] bytes, int n) {
        char[] c = new char[n];
        for (int i = 0; i < n; i++) {
            c[i] = ByteLevel.BYTE_TO_CHAR[bytes[i] & 0xFF];
        }
        return new String(c);
    }

    /**
     * Short words: each adjacent pair's merge is looked up once, kept in {@code ranks}, and only the two pairs beside a
     * merge are looked up again; each round scans {@code ranks} (in the L1 cache) for the lowest — leftmost on a tie.
     */
    private int[] simple(byte[] bytes, int n) {
        int[] sym = new int[n];
        for (int i = 0; i < n; i++) {
            sym[i] = byteIds[bytes[i] & 0xFF];
        }
        int[] ranks = new int[Math.max(1, n - 1)];
        for (int i = 0; i + 1 < n; i++) {
            ranks[i] = rankOf(sym[i], sym[i + 1]);
        }
        int len = n;
        long steps = n;
        while (len > 1) {
            steps += len;
            int best = Integer.MAX_VALUE;
            int at = -1;
            for (int i = 0; i + 1 < len; i++) {
                if (ranks[i] < best) {
                    best = ranks[i];
                    at = i;
                }
            }
            if (at < 0) {
                break;
            }
            sym[at] = mergedIds[best];
            System.arraycopy(sym, at + 2, sym, at + 1, len - at - 2);
            if (len - at - 3 > 0) {
                System.arraycopy(ranks, at + 2, ranks, at + 1, len - at - 3);
            }
            len--;
            if (at > 0) {
                ranks[at - 1] = rankOf(sym[at - 1], sym[at]);
            }
            if (at + 1 < len) {
                ranks[at] = rankOf(sym[at], sym[at + 1]);
            }
        }
        Work.STEPS.add(steps);
        return Arrays.copyOf(sym, len);
    }

    /** The same merge order with a binary heap of (rank, position) over a doubly linked list of symbols. */
    private int[] heap(byte[] bytes, int n) {
        int[] sym = new int[n];
        int[] prev = new int[n];
        int[] next = new int[n];
        for (int i = 0; i < n; i++) {
            sym[i] = byteIds[bytes[i] & 0xFF];
            prev[i] = i - 1;
            next[i] = i + 1 < n ? i + 1 : -1;
        }
        long[] heap = new long[Math.max(16, n)];
        int size = 0;
        for (int i = 0; i + 1 < n; i++) {
            int r = merge(sym[i], sym[i + 1]);
            if (r >= 0) {
                heap = grow(heap, size);
                size = push(heap, size, (long) r << 32 | i);
            }
        }
        long steps = size;
        while (size > 0) {
            steps++;
            long top = heap[0];
            size = pop(heap, size);
            int at = (int) top;
            int rank = (int) (top >>> 32);
            if (sym[at] < 0 || next[at] < 0) {
                continue;
            }
            int right = next[at];
            if (merge(sym[at], sym[right]) != rank) {
                continue; // stale: one side changed since this entry was pushed
            }
            sym[at] = mergedIds[rank];
            sym[right] = -1;
            next[at] = next[right];
            if (next[right] >= 0) {
                prev[next[right]] = at;
            }
            if (prev[at] >= 0) {
                int pr = merge(sym[prev[at]], sym[at]);
                if (pr >= 0) {
                    heap = grow(heap, size);
                    size = push(heap, size, (long) pr << 32 | prev[at]);
                }
            }
            if (next[at] >= 0) {
                int nr = merge(sym[at], sym[next[at]]);
                if (nr >= 0) {
                    heap = grow(heap, size);
                    size = push(heap, size, (long) nr << 32 | at);
                }
            }
        }
        Work.STEPS.add(steps + n);
        IntList out = new IntList(n);
        for (int i = 0; i >= 0; i = next[i]) {
            out.add(sym[i]);
        }
        return out.toArray();
    }

    private static long[] grow(long[] heap, int size) {
        return size < heap.length ? heap : Arrays.copyOf(heap, heap.length * 2);
    }

    private static int push(long[] heap, int size, long v) {
        int i = size;
        heap[i] = v;
        while (i > 0) {
            int parent = (i - 1) >>> 1;
            if (heap[parent] <= heap[i]) {
                break;
            }
            long t = heap[parent];
            heap[parent] = heap[i];
            heap[i] = t;
            i = parent;
        }
        return size + 1;
    }

    private static int pop(long[] heap, int size) {
        size--;
        heap[0] = heap[size];
        int i = 0;
        while (true) {
            int l = 2 * i + 1;
            if (l >= size) {
                break;
            }
            int c = l + 1 < size && heap[l + 1] < heap[l] ? l + 1 : l;
            if (heap[i] <= heap[c]) {
                break;
            }
            long t = heap[i];
            heap[i] = heap[c];
            heap[c] = t;
            i = c;
        }
        return size;
    }
}
