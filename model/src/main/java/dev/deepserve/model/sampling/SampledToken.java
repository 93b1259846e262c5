package dev.deepserve.model.sampling;

import java.util.List;

/**
 * The chosen token with its log-probability under the model's distribution (after penalties, before temperature and
 * truncation, as OpenAI reports it) and, when asked, the most likely alternatives best first.
 */
public record SampledToken(int id, float logprob, List<Alternative> top) {

    public record Alternative(int id, float logprob) {
    }
}
