package dev.deepserve.tokenizer;

import java.util.List;
import java.util.Map;

/**
 * Everything a {@link Tokenizer} is built from, as read out of {@code tokenizer.json} and {@code
 * tokenizer_config.json}: what {@link PrebuiltVocabulary} stores so a later start skips the JSON.
 *
 * @param normalizer       a {@link java.text.Normalizer.Form} name, or null for none
 * @param preTokenizerJson the {@code pre_tokenizer} node's JSON text ("null" for none)
 * @param merges           per rank, {@code {Bpe.pair(left, right), merged id}}
 * @param configJson       {@code tokenizer_config.json}'s JSON text ("{}" when absent)
 */
record Vocabulary(String normalizer, String preTokenizerJson, Map<String, Integer> vocab, List<AddedVocabulary.Token> added,
                  long[][] merges, boolean ignoreMerges, String configJson) {
}
