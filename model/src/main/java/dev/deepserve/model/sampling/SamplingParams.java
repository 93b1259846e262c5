package dev.deepserve.model.sampling;

import java.util.Set;

/**
 * How to pick the next token, with the OpenAI/DeepSeek request semantics: temperature 0 is greedy; top_p keeps the
 * smallest set of most likely tokens whose probability reaches top_p; top_k (0 = off) keeps the k most likely;
 * frequency/presence penalties subtract {@code count·frequency + [count > 0]·presence} from a generated token's logit.
 *
 * @param seed        fixes the random stream (same seed, same prompt → same tokens); null draws a fresh one
 * @param topLogprobs how many alternatives to report per position (0–20); {@code logprobs} turns reporting on
 */
public record SamplingParams(double temperature, double topP, int topK, Long seed, double frequencyPenalty,
                             double presencePenalty, boolean logprobs, int topLogprobs, Set<Integer> stopTokenIds) {

    public static final SamplingParams GREEDY = new SamplingParams(0, 1, 0, null, 0, 0, false, 0, Set.of());

    public SamplingParams {
        if (!(temperature >= 0 && temperature <= 2)) {
            throw new IllegalArgumentException("temperature must be between 0 and 2, got " + temperature);
        }
        if (!(topP > 0 && topP <= 1)) {
            throw new IllegalArgumentException("top_p must be in (0, 1], got " + topP);
        }
        if (topK < 0) {
            throw new IllegalArgumentException("top_k must be 0 (off) or positive, got " + topK);
        }
        if (!(frequencyPenalty >= -2 && frequencyPenalty <= 2)) {
            throw new IllegalArgumentException("frequency_penalty must be between -2 and 2, got " + frequencyPenalty);
        }
        if (!(presencePenalty >= -2 && presencePenalty <= 2)) {
            throw new IllegalArgumentException("presence_penalty must be between -2 and 2, got " + presencePenalty);
        }
        if (topLogprobs < 0 || topLogprobs > 20) {
            throw new IllegalArgumentException("top_logprobs must be between 0 and 20, got " + topLogprobs);
        }
        stopTokenIds = stopTokenIds == null ? Set.of() : Set.copyOf(stopTokenIds);
    }

    public boolean greedy() {
        return temperature == 0 || topK == 1;
    }

    public boolean isStop(int token) {
        return stopTokenIds.contains(token);
    }
}
