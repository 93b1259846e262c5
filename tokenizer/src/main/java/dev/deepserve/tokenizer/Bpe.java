package dev.deepserve.tokenizer;

import java.util.Arrays;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Byte-level BPE over token ids. A word starts as one symbol per UTF-8 byte; the adjacent pair with the lowest merge
 * rank is merged (leftmost first among equal ranks) until no pair has a merge — the order Hugging Face's BPE applies.
 * Short words use a simple scan; long ones a heap over a linked list, so a 1 MB word costs O(n log n), not O(n²).
 * Results are cached per word.
 */
final class Bpe {

    private static final int CACHE_MAX_WORD = 64;
    private static final int CACHE_MAX_ENTRIES = 200_000;
    private static final int SIMPLE_MAX = 48;

    private final int[] byteIds;
    /** (left id, right id) → (rank << 32 | merged id), open addressing. */
    private final long[] mergeKeys;
    private final long[] mergeValues;
    private final int mask;
    private final boolean ignoreMerges;
    private final java.util.Map<String, Integer> vocab;
    private final ConcurrentHashMap<String, int[]> cache = new ConcurrentHashMap<>();

    Bpe(int[] byteIds, long[][] merges, java.util.Map<String, Integer> vocab, boolean ignoreMerges) {
        this.byteIds = byteIds;
        this.vocab = vocab;
        this.ignoreMerges = ignoreMerges;
        int capacity = Integer.highestOneBit(Math.max(16, merges.length * 2)) * 2;
        this.mergeKeys = new long[capacity];
        this.mergeValues = new long[capacity];
        Arrays.fill(mergeKeys, -1L);
        this.mask = capacity - 1;
        for (int rank = 0; rank < merges.length; rank++) {
            long key = merges[rank][0];
            int slot = slot(key);
            while (mergeKeys[slot] != -1L && mergeKeys[slot] != key) {
                slot = (slot + 1) & mask;
            }
            if (mergeKeys[slot] == key) {
                continue; // a repeated merge keeps its first (best) rank
            }
            mergeKeys[slot] = key;
            mergeValues[slot] = ((long) rank << 32) | merges[rank][1];
        }
    }

    static long pair(int left, int right) {
        return ((long) left << 32) | (right & 0xFFFFFFFFL);
    }

    private int slot(long key) {
        long h = key * 0x9E3779B97F4A7C15L;
        return (int) (h >>> 40) & mask;
    }

    /** (rank << 32 | merged id) of a pair, or -1 when the pair never merges. */
    private long merge(int left, int right) {
        long key = pair(left, right);
        int slot = slot(key);
        while (true) {
            long k = mergeKeys[slot];
            if (k == key) {
                return mergeValues[slot];
            }
            if (k == -1L) {
                return -1;
            }
            slot = (slot + 1) & mask;
        }
    }

    long memoryBytes() {
        return mergeKeys.length * 16L;
    }

    /** Appends the ids of one pre-tokenized word (its UTF-8 bytes {@code bytes[0, n)}) to {@code out}. */
    void encode(String word, byte[] bytes, int n, IntList out) {
        if (word != null && n <= CACHE_MAX_WORD) {
            int[] cached = cache.get(word);
            if (cached != null) {
                out.addAll(cached);
                return;
            }
        }
        int[] ids;
        if (ignoreMerges && word != null && vocab.containsKey(byteLevel(bytes, n))) {
            ids = new int[] {vocab.get(byteLevel(bytes, n))};
        } else {
            ids = n <= SIMPLE_MAX ? simple(bytes, n) : heap(bytes, n);
        }
        out.addAll(ids);
        if (word != null && n <= CACHE_MAX_WORD) {
            if (cache.size() >= CACHE_MAX_ENTRIES) {
                cache.clear();
            }
            cache.put(word, ids);
        }
    }

    private static String byteLevel(byte[] bytes, int n) {
        char[] c = new char[n];
        for (int i = 0; i < n; i++) {
            c[i] = ByteLevel.BYTE_TO_CHAR[bytes[i] & 0xFF];
        }
        return new String(c);
    }

    private int[] simple(byte[] bytes, int n) {
        int[] sym = new int[n];
        for (int i = 0; i < n; i++) {
            sym[i] = byteIds[bytes[i] & 0xFF];
        }
        int len = n;
        long steps = 0;
        while (len > 1) {
            steps += len;
            long best = Long.MAX_VALUE;
            int at = -1;
            for (int i = 0; i + 1 < len; i++) {
                long m = merge(sym[i], sym[i + 1]);
                if (m >= 0 && m < best) {
                    best = m;
                    at = i;
                }
            }
            if (at < 0) {
                break;
            }
            sym[at] = (int) best;
            System.arraycopy(sym, at + 2, sym, at + 1, len - at - 2);
            len--;
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
            long m = merge(sym[i], sym[i + 1]);
            if (m >= 0) {
                heap = grow(heap, size);
                size = push(heap, size, (m >>> 32) << 32 | i);
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
            long m = merge(sym[at], sym[right]);
            if (m < 0 || (int) (m >>> 32) != rank) {
                continue; // stale: one side changed since this entry was pushed
            }
            sym[at] = (int) m;
            sym[right] = -1;
            next[at] = next[right];
            if (next[right] >= 0) {
                prev[next[right]] = at;
            }
            if (prev[at] >= 0) {
                long pm = merge(sym[prev[at]], sym[at]);
                if (pm >= 0) {
                    heap = grow(heap, size);
                    size = push(heap, size, (pm >>> 32) << 32 | prev[at]);
                }
            }
            if (next[at] >= 0) {
                long nm = merge(sym[at], sym[next[at]]);
                if (nm >= 0) {
                    heap = grow(heap, size);
                    size = push(heap, size, (nm >>> 32) << 32 | at);
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
