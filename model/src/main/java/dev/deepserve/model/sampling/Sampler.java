package dev.deepserve.model.sampling;

import dev.deepserve.model.engine.ops.Argmax;

import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Picks tokens for one request. Holds the request's random stream (seeded when asked, so a seed reproduces a
 * completion) and the counts of tokens generated so far for the penalties. Not thread-safe: one per request.
 */
public final class Sampler {

    /**
     * Scratch the size of the vocabulary, one per thread that samples (the engine thread), so a step allocates nothing
     * per token: the penalized logits, the distribution and the selection heap.
     */
    private static final class Workspace {
        float[] logits = new float[0];
        float[] p = new float[0];
        int[] heap = new int[0];

        void ensure(int n) {
            if (logits.length < n) {
                logits = new float[n];
                p = new float[n];
                heap = new int[n];
            }
        }
    }

    private static final ThreadLocal<Workspace> WORKSPACE = ThreadLocal.withInitial(Workspace::new);

    private final SamplingParams params;
    private final SplittableRandom random;
    private final Map<Integer, Integer> generated = new HashMap<>();

    public Sampler(SamplingParams params) {
        this.params = params;
        this.random = new SplittableRandom(params.seed() != null ? params.seed() : new SecureRandom().nextLong());
    }

    public SamplingParams params() {
        return params;
    }

    /** Chooses the next token from {@code logits[off, off + vocab)} and records it for the penalties. */
    public SampledToken sample(float[] logits, int off, int vocab) {
        Workspace ws = WORKSPACE.get();
        Row l = row(ws, logits, off, vocab);
        int id = params.greedy() ? Argmax.of(l.values(), l.off(), vocab) : drawFrom(ws, l, vocab);
        accept(id);
        return report(l, vocab, id);
    }

    /**
     * The distribution tokens are drawn from — penalties, temperature, top-k, top-p applied — for speculative
     * decoding's acceptance test; greedy gives a one-hot distribution. Does not record anything. The array is the
     * caller's to keep.
     */
    public float[] probabilities(float[] logits, int off, int vocab) {
        Workspace ws = WORKSPACE.get();
        Row l = row(ws, logits, off, vocab);
        float[] p = new float[vocab];
        if (params.greedy()) {
            p[Argmax.of(l.values(), l.off(), vocab)] = 1;
            return p;
        }
        distribution(ws, l, vocab, p);
        return p;
    }

    /** Draws from a probability vector with this request's random stream. */
    public int draw(float[] p) {
        return draw(p, p.length);
    }

    private int draw(float[] p, int n) {
        double u = random.nextDouble();
        double cumulative = 0;
        int last = -1;
        for (int i = 0; i < n; i++) {
            if (p[i] > 0) {
                cumulative += p[i];
                last = i;
                if (u < cumulative) {
                    return i;
                }
            }
        }
        return last;
    }

    /** A uniform number in [0, 1) from this request's stream (for the speculative acceptance test). */
    public double uniform() {
        return random.nextDouble();
    }

    /** Records a token emitted by other means (an accepted draft token) for the penalties. */
    public void accept(int id) {
        generated.merge(id, 1, Integer::sum);
    }

    /** Report for a token chosen elsewhere (accepted speculative tokens), from the same logits. */
    public SampledToken report(float[] logits, int off, int vocab, int id) {
        return report(row(WORKSPACE.get(), logits, off, vocab), vocab, id);
    }

    /** Scores to choose from: {@code values[off, off + vocab)}. */
    private record Row(float[] values, int off) {
    }

    /**
     * The caller's logits as they are, or — once penalties apply — a copy with this request's penalties subtracted,
     * in the workspace (the caller's array is never touched).
     */
    private Row row(Workspace ws, float[] logits, int off, int vocab) {
        if (generated.isEmpty() || params.frequencyPenalty() == 0 && params.presencePenalty() == 0) {
            return new Row(logits, off);
        }
        ws.ensure(vocab);
        float[] l = ws.logits;
        System.arraycopy(logits, off, l, 0, vocab);
        for (Map.Entry<Integer, Integer> e : generated.entrySet()) {
            l[e.getKey()] -= (float) (e.getValue() * params.frequencyPenalty() + params.presencePenalty());
        }
        return new Row(l, 0);
    }

    private int drawFrom(Workspace ws, Row l, int vocab) {
        ws.ensure(vocab);
        distribution(ws, l, vocab, ws.p);
        return draw(ws.p, vocab);
    }

    /** Softmax at the request's temperature into {@code p[0, n)}, then top-k / top-p truncation. */
    private void distribution(Workspace ws, Row row, int n, float[] p) {
        float[] l = row.values();
        int off = row.off();
        float max = Float.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) {
            max = Math.max(max, l[off + i]);
        }
        double inv = 1 / params.temperature();
        double sum = 0;
        for (int i = 0; i < n; i++) {
            p[i] = (float) Math.exp((l[off + i] - max) * inv);
            sum += p[i];
        }
        for (int i = 0; i < n; i++) {
            p[i] /= (float) sum;
        }
        if (params.topK() > 0 && params.topK() < n || params.topP() < 1) {
            truncate(ws, p, n);
        }
    }

    /**
     * Keeps the most likely tokens, best first, until top_k are kept or their mass reaches top_p; zeroes the rest and
     * renormalizes. A binary max-heap gives the best tokens in order in O(V + kept·log V) instead of sorting the
     * vocabulary; the kept ids end up in the heap array's tail, so nothing is allocated.
     */
    private void truncate(Workspace ws, float[] p, int n) {
        ws.ensure(n);
        int[] heap = ws.heap;
        for (int i = 0; i < n; i++) {
            heap[i] = i;
        }
        for (int i = n / 2 - 1; i >= 0; i--) {
            siftDown(heap, i, n, p);
        }
        int limit = params.topK() > 0 ? Math.min(params.topK(), n) : n;
        double mass = 0;
        int size = n;
        for (int kept = 0; kept < limit && size > 0; kept++) {
            int best = heap[0];
            mass += p[best];
            heap[0] = heap[--size];
            heap[size] = best; // the kept ids collect at the end: heap[size, n)
            siftDown(heap, 0, size, p);
            if (mass >= params.topP()) {
                break;
            }
        }
        for (int k = 0; k < size; k++) {
            p[heap[k]] = 0;
        }
        double total = 0;
        for (int i = 0; i < n; i++) {
            total += p[i]; // in id order, zeros included, as every release has summed it
        }
        for (int i = 0; i < n; i++) {
            p[i] /= (float) total;
        }
    }

    private static void siftDown(int[] heap, int i, int size, float[] key) {
        while (true) {
            int l = 2 * i + 1;
            if (l >= size) {
                return;
            }
            int r = l + 1;
            int c = r < size && better(heap[r], heap[l], key) ? r : l;
            if (!better(heap[c], heap[i], key)) {
                return;
            }
            int t = heap[i];
            heap[i] = heap[c];
            heap[c] = t;
            i = c;
        }
    }

    /** Higher probability first; among equals the lower id, so truncation is deterministic. */
    private static boolean better(int a, int b, float[] key) {
        return key[a] > key[b] || key[a] == key[b] && a < b;
    }

    private SampledToken report(Row row, int n, int id) {
        float[] l = row.values();
        int off = row.off();
        if (!params.logprobs()) {
            return new SampledToken(id, 0f, List.of());
        }
        float max = Float.NEGATIVE_INFINITY;
        for (int i = 0; i < n; i++) {
            max = Math.max(max, l[off + i]);
        }
        double sum = 0;
        for (int i = 0; i < n; i++) {
            sum += Math.exp(l[off + i] - max);
        }
        float logZ = (float) (max + Math.log(sum));
        List<SampledToken.Alternative> top = new ArrayList<>();
        if (params.topLogprobs() > 0) {
            int[] best = new int[params.topLogprobs()];
            java.util.Arrays.fill(best, -1);
            int last = best.length - 1;
            for (int i = 0; i < n; i++) {
                if (best[last] >= 0 && l[off + i] <= l[off + best[last]]) {
                    continue;
                }
                for (int k = 0; k < best.length; k++) {
                    if (best[k] < 0 || l[off + i] > l[off + best[k]]) {
                        System.arraycopy(best, k, best, k + 1, best.length - k - 1);
                        best[k] = i;
                        break;
                    }
                }
            }
            for (int b : best) {
                if (b >= 0) {
                    top.add(new SampledToken.Alternative(b, l[off + b] - logZ));
                }
            }
        }
        return new SampledToken(id, l[off + id] - logZ, top);
    }

    /** The greedy choice over a whole array (the first index of its largest value). */
    public static int argmax(float[] l) {
        return Argmax.of(l, 0, l.length);
    }

    /** The greedy choice over {@code l[off, off + n)}, without copying it. */
    public static int argmax(float[] l, int off, int n) {
        return Argmax.of(l, off, n);
    }
}
