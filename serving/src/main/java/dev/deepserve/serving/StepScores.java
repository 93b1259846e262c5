package dev.deepserve.serving;

import dev.deepserve.model.sampling.SampledToken;
import dev.deepserve.model.sampling.Sampler;

import java.util.List;

/**
 * What a forward pass gives the sampler for its sampled rows: their logits {@code [rows, vocab]} on the host, or —
 * when every row is plain greedy and the backend picks on its own — only the picked ids. Ids the tokenizer cannot
 * decode are never chosen: they are -∞ in the logits and excluded from the picks.
 */
public record StepScores(float[] logits, int[] picks, int vocab) {

    /** Logits of {@code rows} rows, with {@code unusable} ids masked to -∞. */
    public static StepScores ofLogits(float[] logits, int rows, int vocab, int[] unusable) {
        for (int r = 0; r < rows; r++) {
            for (int id : unusable) {
                logits[r * vocab + id] = Float.NEGATIVE_INFINITY;
            }
        }
        return new StepScores(logits, null, vocab);
    }

    /** Ids picked greedily by the backend (unusable ids already excluded there). */
    public static StepScores ofPicks(int[] picks, int vocab) {
        return new StepScores(null, picks, vocab);
    }

    /** Samples row {@code row} with the sequence's sampler (a backend's pick is what the sampler would have returned). */
    SampledToken sample(Sampler sampler, int row) {
        if (picks != null) {
            sampler.accept(picks[row]);
            return new SampledToken(picks[row], 0f, List.of());
        }
        return sampler.sample(logits, row * vocab, vocab);
    }

    /** The greedy choice of row {@code row}, without touching a sampler's state (an MTP draft). */
    int argmax(int row) {
        return picks != null ? picks[row] : Sampler.argmax(logits, row * vocab, vocab);
    }

    /** Row {@code row}'s distribution under the sequence's sampling parameters. */
    float[] probabilities(Sampler sampler, int row) {
        return sampler.probabilities(logits, row * vocab, vocab);
    }

    /** The token the sampler reports for row {@code row} when {@code chosen} was drawn by another rule (speculative sampling). */
    SampledToken report(Sampler sampler, int row, int chosen) {
        return sampler.report(logits, row * vocab, vocab, chosen);
    }
}
