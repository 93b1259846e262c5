package dev.deepserve.model.sampling;

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
        float[] l = penalized(logits, off, vocab);
        int id;
        if (params.greedy()) {
            id = argmax(l);
        } else {
            float[] p = distribution(l);
            id = draw(p);
        }
        accept(id);
        return report(l, id);
    }

    /**
     * The distribution tokens are drawn from — penalties, temperature, top-k, top-p applied — for speculative
     * decoding's acceptance test; greedy gives a one-hot distribution. Does not record anything.
     */
    public float[] probabilities(float[] logits, int off, int vocab) {
        float[] l = penalized(logits, off, vocab);
        if (params.greedy()) {
            float[] p = new float[vocab];
            p[argmax(l)] = 1;
            return p;
        }
        return distribution(l);
    }

    /** Draws from a probability vector with this request's random stream. */
    public int draw(float[] p) {
        double u = random.nextDouble();
        double cumulative = 0;
        int last = -1;
        for (int i = 0; i < p.length; i++) {
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
        return report(penalized(logits, off, vocab), id);
    }

    private float[] penalized(float[] logits, int off, int vocab) {
        float[] l = java.util.Arrays.copyOfRange(logits, off, off + vocab);
        if (params.frequencyPenalty() != 0 || params.presencePenalty() != 0) {
            for (Map.Entry<Integer, Integer> e : generated.entrySet()) {
                l[e.getKey()] -= (float) (e.getValue() * params.frequencyPenalty() + params.presencePenalty());
            }
        }
        return l;
    }

    private float[] distribution(float[] l) {
        int n = l.length;
        float[] p = new float[n];
        float max = Float.NEGATIVE_INFINITY;
        for (float v : l) {
            max = Math.max(max, v);
        }
        double inv = 1 / params.temperature();
        double sum = 0;
        for (int i = 0; i < n; i++) {
            p[i] = (float) Math.exp((l[i] - max) * inv);
            sum += p[i];
        }
        for (int i = 0; i < n; i++) {
            p[i] /= (float) sum;
        }
        if (params.topK() > 0 && params.topK() < n || params.topP() < 1) {
            truncate(p);
        }
        return p;
    }

    /**
     * Keeps the most likely tokens, best first, until top_k are kept or their mass reaches top_p; zeroes the rest and
     * renormalizes. A binary max-heap gives the best tokens in order in O(V + kept·log V) instead of sorting the vocabulary.
     */
    private void truncate(float[] p) {
        int n = p.length;
        int[] heap = new int[n];
        for (int i = 0; i < n; i++) {
            heap[i] = i;
        }
        for (int i = n / 2 - 1; i >= 0; i--) {
            siftDown(heap, i, n, p);
        }
        int limit = params.topK() > 0 ? Math.min(params.topK(), n) : n;
        boolean[] keep = new boolean[n];
        double mass = 0;
        int size = n;
        for (int kept = 0; kept < limit && size > 0; kept++) {
            int best = heap[0];
            keep[best] = true;
            mass += p[best];
            heap[0] = heap[--size];
            siftDown(heap, 0, size, p);
            if (mass >= params.topP()) {
                break;
            }
        }
        double total = 0;
        for (int i = 0; i < n; i++) {
            if (!keep[i]) {
                p[i] = 0;
            } else {
                total += p[i];
            }
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

    private SampledToken report(float[] l, int id) {
        if (!params.logprobs()) {
            return new SampledToken(id, 0f, List.of());
        }
        float max = Float.NEGATIVE_INFINITY;
        for (float v : l) {
            max = Math.max(max, v);
        }
        double sum = 0;
        for (float v : l) {
            sum += Math.exp(v - max);
        }
        float logZ = (float) (max + Math.log(sum));
        List<SampledToken.Alternative> top = new ArrayList<>();
        if (params.topLogprobs() > 0) {
            int[] best = new int[params.topLogprobs()];
            java.util.Arrays.fill(best, -1);
            int last = best.length - 1;
            for (int i = 0; i < l.length; i++) {
                if (best[last] >= 0 && l[i] <= l[best[last]]) {
                    continue;
                }
                for (int k = 0; k < best.length; k++) {
                    if (best[k] < 0 || l[i] > l[best[k]]) {
                        System.arraycopy(best, k, best, k + 1, best.length - k - 1);
                        best[k] = i;
                        break;
                    }
                }
            }
            for (int b : best) {
                if (b >= 0) {
                    top.add(new SampledToken.Alternative(b, l[b] - logZ));
                }
            }
        }
        return new SampledToken(id, l[id] - logZ, top);
    }

    public static int argmax(float[] l) {
        int best = 0;
        for (int i = 1; i < l.length; i++) {
            if (l[i] > l[best]) {
                best = i;
            }
        }
        return best;
    }
}
