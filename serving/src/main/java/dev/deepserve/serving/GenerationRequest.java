package dev.deepserve.serving;

import com.fasterxml.jackson.databind.JsonNode;
import dev.deepserve.model.sampling.SamplingParams;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/** What to generate: prompt ids (already rendered through the chat template), limits, sampling, stop strings. */
public record GenerationRequest(String requestId, int[] prompt, int maxTokens, SamplingParams sampling, List<String> stop) {

    /**
     * The internal generate request as the engines' HTTP API carries it: {@code {request_id, prompt, max_tokens,
     * temperature, top_p, top_k, seed, frequency_penalty, presence_penalty, logprobs, top_logprobs, stop,
     * stop_token_ids}}. Throws {@link IllegalArgumentException} naming what is wrong.
     */
    public static GenerationRequest fromJson(JsonNode n) {
        if (n == null || !n.isObject()) {
            throw new IllegalArgumentException("request body must be a JSON object");
        }
        String id = n.path("request_id").asText("");
        if (id.isBlank() || id.length() > 200) {
            throw new IllegalArgumentException("request_id is required");
        }
        JsonNode p = n.get("prompt");
        if (p == null || !p.isArray() || p.isEmpty()) {
            throw new IllegalArgumentException("prompt must be a non-empty array of token ids");
        }
        int[] prompt = new int[p.size()];
        for (int i = 0; i < prompt.length; i++) {
            if (!p.get(i).canConvertToInt()) {
                throw new IllegalArgumentException("prompt[" + i + "] is not a token id");
            }
            prompt[i] = p.get(i).asInt();
        }
        int maxTokens = n.path("max_tokens").asInt(-1);
        if (maxTokens < 1) {
            throw new IllegalArgumentException("max_tokens must be a positive integer");
        }
        Set<Integer> stopIds = new HashSet<>();
        n.path("stop_token_ids").forEach(v -> stopIds.add(v.asInt()));
        List<String> stop = new ArrayList<>();
        n.path("stop").forEach(v -> {
            if (!v.isTextual() || v.asText().isEmpty()) {
                throw new IllegalArgumentException("stop must be a list of non-empty strings");
            }
            stop.add(v.asText());
        });
        SamplingParams sampling = new SamplingParams(n.path("temperature").asDouble(1.0), n.path("top_p").asDouble(1.0), n.path("top_k").asInt(0),
                n.hasNonNull("seed") ? n.get("seed").asLong() : null, n.path("frequency_penalty").asDouble(0), n.path("presence_penalty").asDouble(0),
                n.path("logprobs").asBoolean(false), n.path("top_logprobs").asInt(0), stopIds);
        return new GenerationRequest(id, prompt, maxTokens, sampling, List.copyOf(stop));
    }
}
