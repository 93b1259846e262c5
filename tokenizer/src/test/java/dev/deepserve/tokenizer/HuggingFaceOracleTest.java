package dev.deepserve.tokenizer;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

/**
 * Our ids against the Hugging Face {@code tokenizers} library itself (Rust, through DJL) on the real DeepSeek-V3
 * tokenizer: every string of a varied corpus and of random Unicode must give identical ids and identical decodes.
 */
class HuggingFaceOracleTest {

    static Tokenizer ours;
    static HuggingFaceTokenizer hf;

    @BeforeAll
    static void load() throws Exception {
        ours = Tokenizer.load(TokenizerFiles.dir());
        hf = HuggingFaceTokenizer.newInstance(TokenizerFiles.dir(),
                Map.of("addSpecialTokens", "false", "truncation", "false", "padding", "false", "maxLength", "10000000"));
    }

    @AfterAll
    static void close() {
        hf.close();
    }

    static int[] hfIds(String text) {
        return Arrays.stream(hf.encode(text, false, false).getIds()).mapToInt(Math::toIntExact).toArray();
    }

    static void compare(List<String> texts) {
        List<String> failures = new ArrayList<>();
        long tokens = 0;
        for (String text : texts) {
            int[] expected = hfIds(text);
            tokens += expected.length;
            int[] actual = ours.encode(text);
            if (!Arrays.equals(expected, actual)) {
                failures.add(escape(text) + "\n   hf:   " + Arrays.toString(expected) + "\n   ours: " + Arrays.toString(actual));
            }
        }
        System.out.println("compared " + texts.size() + " texts, " + tokens + " tokens");
        if (tokens < texts.size()) {
            fail("the oracle produced almost no tokens: " + tokens);
        }
        if (!failures.isEmpty()) {
            fail(failures.size() + " of " + texts.size() + " differ; first: " + String.join("\n", failures.subList(0, Math.min(5, failures.size()))));
        }
    }

    static String escape(String s) {
        StringBuilder sb = new StringBuilder();
        s.codePoints().limit(200).forEach(cp -> {
            if (cp < 0x20 || cp > 0x7E) {
                sb.append(String.format("\\u{%X}", cp));
            } else {
                sb.appendCodePoint(cp);
            }
        });
        return sb.toString();
    }

    @Test
    void knownIds() {
        int[] ids = ours.encode("Hello world! 12345 中文");
        System.out.println("Hello world! 12345 中文 -> " + Arrays.toString(ids) + " hf " + Arrays.toString(hfIds("Hello world! 12345 中文")));
        assertEquals(Arrays.toString(hfIds("Hello world! 12345 中文")), Arrays.toString(ids));
        assertEquals(8, ids.length);
    }

    @Test
    void identicalIdsOnTheCorpus() {
        List<String> corpus = Corpus.build(4000, 1);
        compare(corpus);
    }

    @Test
    void identicalIdsOnRandomUnicode() {
        SplittableRandom r = new SplittableRandom(2);
        List<String> texts = new ArrayList<>();
        for (int i = 0; i < 3000; i++) {
            texts.add(Corpus.randomUnicode(r, 1 + r.nextInt(60)));
        }
        compare(texts);
    }

    @Test
    void identicalDecodesIncludingSplitCharactersAndSpecialTokens() {
        SplittableRandom r = new SplittableRandom(3);
        List<String> corpus = Corpus.build(300, 4);
        for (String text : corpus) {
            int[] ids = ours.encode(text);
            long[] longs = Arrays.stream(ids).asLongStream().toArray();
            assertEquals(hf.decode(longs, false), ours.decode(ids, false), escape(text));
            assertEquals(hf.decode(longs, true), ours.decode(ids, true), escape(text));
            // an arbitrary slice can cut a character in half: both must produce the same replacement characters
            int from = r.nextInt(ids.length + 1);
            int to = from + r.nextInt(ids.length - from + 1);
            long[] slice = Arrays.copyOfRange(longs, from, to);
            assertEquals(hf.decode(slice, false), ours.decode(Arrays.copyOfRange(ids, from, to), false), "slice of " + escape(text));
        }
    }

    /**
     * A merge listed twice takes its last rank, as in Hugging Face's merge map: the real tokenizer with its first
     * merges repeated at the end of the list (so they apply last) must still give Hugging Face's ids on the same files.
     */
    @Test
    void aRepeatedMergeTakesItsLastRankLikeHuggingFace(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
        com.fasterxml.jackson.databind.ObjectMapper m = new com.fasterxml.jackson.databind.ObjectMapper();
        var json = (com.fasterxml.jackson.databind.node.ObjectNode) m.readTree(TokenizerFiles.dir().resolve("tokenizer.json").toFile());
        var merges = (com.fasterxml.jackson.databind.node.ArrayNode) json.get("model").get("merges");
        for (int i = 0; i < 40; i++) {
            merges.add(merges.get(i).deepCopy());
        }
        m.writeValue(dir.resolve("tokenizer.json").toFile(), json);
        if (java.nio.file.Files.exists(TokenizerFiles.dir().resolve("tokenizer_config.json"))) {
            java.nio.file.Files.copy(TokenizerFiles.dir().resolve("tokenizer_config.json"), dir.resolve("tokenizer_config.json"));
        }
        Tokenizer repeated = Tokenizer.load(dir);
        try (HuggingFaceTokenizer oracle = HuggingFaceTokenizer.newInstance(dir,
                Map.of("addSpecialTokens", "false", "truncation", "false", "padding", "false", "maxLength", "10000000"))) {
            int differFromTheOriginal = 0;
            for (String text : List.of("Hello world, the theory of these three thieves", "inheritance in the interface", "an internal interaction",
                    "   indented\n\tthe end", "estimated rest of the test")) {
                int[] expected = Arrays.stream(oracle.encode(text, false, false).getIds()).mapToInt(Math::toIntExact).toArray();
                assertEquals(Arrays.toString(expected), Arrays.toString(repeated.encode(text)), text);
                differFromTheOriginal += Arrays.equals(expected, ours.encode(text)) ? 0 : 1;
            }
            assertTrue(differFromTheOriginal > 0, "moving the first merges last changes some tokenization (else this test proves nothing)");
        }
    }
}
