package dev.deepserve.serving;

import dev.deepserve.model.sampling.SamplingParams;

import java.util.List;

/** What to generate: prompt ids (already rendered through the chat template), limits, sampling, stop strings. */
public record GenerationRequest(String requestId, int[] prompt, int maxTokens, SamplingParams sampling, List<String> stop) {
}
