package dev.deepserve.tokenizer;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The tokenizer's own invariants on the pinned DeepSeek-V3 files: the hand-written pre-tokenizer gives the regex path's
 * ids on random text, streamed deltas are whole characters that add up to the full decode, special tokens are
 * recognized and skippable, megabyte runs take under 64 steps per character, unsupported tokenizer.json features are
 * named, and lone surrogates read as U+FFFD.
 */
class TokenizerTest {

    static Tokenizer fast;
    static Tokenizer regex;

    @BeforeAll
    static void load() {
        fast = Tokenizer.load(TokenizerFiles.dir());
        regex = Tokenizer.load(TokenizerFiles.dir(), false);
    }

    /** Random strings dense in the characters the three patterns treat specially. */
    static String tricky(SplittableRandom r, int length) {
        String alphabet = " \t\r\n\u00A0\u3000\u2028aZé\u0301\u0308!?.,'\"-_()[]{}<>@#$%^&*+=~`|\\/:;1234567890½²中文ひらカタ・ー한국😀👍🏽\u200D\uFE0F";
        int[] cps = alphabet.codePoints().toArray();
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < length; i++) {
            sb.appendCodePoint(cps[r.nextInt(cps.length)]);
        }
        return sb.toString();
    }

    @Test
    void handWrittenScannerEqualsTheRegexesOnRandomText() {
        SplittableRandom r = new SplittableRandom(11);
        for (int i = 0; i < 30_000; i++) {
            String s = i % 2 == 0 ? tricky(r, 1 + r.nextInt(40)) : Corpus.randomUnicode(r, 1 + r.nextInt(40));
            int[] a = fast.encode(s);
            int[] b = regex.encode(s);
            if (!Arrays.equals(a, b)) {
                throw new AssertionError(HuggingFaceOracleTest.escape(s) + "\n fast  " + Arrays.toString(a) + "\n regex " + Arrays.toString(b));
            }
        }
    }

    @Test
    void streamingDeltasAreWholeCharactersAndAddUpToTheFullDecode() {
        SplittableRandom r = new SplittableRandom(5);
        List<String> texts = new ArrayList<>(Corpus.build(500, 9));
        for (int i = 0; i < 500; i++) {
            texts.add(tricky(r, 1 + r.nextInt(80)));
        }
        for (String text : texts) {
            int[] ids = fast.encode(text);
            StreamDecoder d = fast.streamDecoder(false);
            StringBuilder joined = new StringBuilder();
            for (int id : ids) {
                String delta = d.next(id);
                assertFalse(delta.contains("\uFFFD") && !text.contains("\uFFFD"), "a delta carries a broken character: " + HuggingFaceOracleTest.escape(text));
                if (!delta.isEmpty()) {
                    assertFalse(Character.isHighSurrogate(delta.charAt(delta.length() - 1)), "delta ends inside a surrogate pair");
                }
                joined.append(delta);
            }
            joined.append(d.finish());
            assertEquals(fast.decode(ids, false), joined.toString());
            assertEquals(Tokenizer.replaceLoneSurrogates(text), joined.toString(), "byte-level BPE round-trips text");
        }
    }

    @Test
    void anEmojiSplitAcrossTokensIsHeldUntilComplete() {
        int[] ids = fast.encode("🧑🏿‍💻");
        assertTrue(ids.length > 1, "this emoji takes several byte-level tokens");
        StreamDecoder d = fast.streamDecoder(false);
        List<String> deltas = new ArrayList<>();
        for (int id : ids) {
            deltas.add(d.next(id));
        }
        deltas.add(d.finish());
        assertEquals("🧑🏿‍💻", String.join("", deltas));
        for (String delta : deltas) {
            assertFalse(delta.contains("\uFFFD"));
        }
    }

    @Test
    void aTruncatedCharacterEndsAsOneReplacementCharacterLikeTheFullDecode() {
        int[] ids = fast.encode("ok 😀");
        int[] cut = Arrays.copyOf(ids, ids.length - 1);
        StreamDecoder d = fast.streamDecoder(false);
        StringBuilder sb = new StringBuilder();
        for (int id : cut) {
            sb.append(d.next(id));
        }
        sb.append(d.finish());
        assertEquals(fast.decode(cut, false), sb.toString());
    }

    @Test
    void specialTokensAreRecognizedInTextAndSkippableInDecode() {
        int bos = fast.bosId();
        int eos = fast.eosId();
        assertEquals(0, bos);
        assertEquals(1, eos);
        int[] ids = fast.encode("<｜begin▁of▁sentence｜>Hi<｜end▁of▁sentence｜>");
        assertEquals(bos, ids[0]);
        assertEquals(eos, ids[ids.length - 1]);
        assertEquals("Hi", fast.decode(ids, true));
        assertEquals("<｜begin▁of▁sentence｜>Hi<｜end▁of▁sentence｜>", fast.decode(ids, false));
    }

    @Test
    void oneMegabyteRunsTokenizeInLinearWork() {
        int n = 1 << 20;
        for (String unit : new String[] {"a", " ", "\n", "1", "中", "!", " a", "\n "}) {
            String text = unit.repeat(n / unit.length());
            Work.STEPS.reset();
            int[] ids = fast.encode(text);
            long steps = Work.STEPS.sum();
            assertTrue(ids.length > 0);
            // The heap BPE is O(n log n); 64 steps per character covers log2(1M) = 20 with room, and a quadratic
            // algorithm would need ~10^12.
            assertTrue(steps < 64L * n, "'" + HuggingFaceOracleTest.escape(unit) + "' × " + n + ": " + steps + " steps");
        }
    }

    @Test
    void unsupportedFeaturesAreNamed(@TempDir Path dir) throws Exception {
        ObjectMapper m = new ObjectMapper();
        ObjectNode original = (ObjectNode) m.readTree(TokenizerFiles.dir().resolve("tokenizer.json").toFile());
        String[][] cases = {
                {"/model/type", "\"WordPiece\"", "model.type 'WordPiece' is not supported"},
                {"/model/byte_fallback", "true", "model.byte_fallback true is not supported"},
                {"/normalizer", "{\"type\": \"Lowercase\"}", "normalizer type 'Lowercase' is not supported"},
                {"/pre_tokenizer", "{\"type\": \"Metaspace\"}", "pre_tokenizer type 'Metaspace' is not supported"},
                {"/decoder", "{\"type\": \"WordPiece\"}", "decoder type 'WordPiece' is not supported"},
        };
        for (String[] c : cases) {
            ObjectNode copy = original.deepCopy();
            String[] path = c[0].substring(1).split("/");
            ObjectNode parent = path.length == 1 ? copy : (ObjectNode) copy.get(path[0]);
            parent.set(path[path.length - 1], m.readTree(c[1]));
            Path d = Files.createDirectories(dir.resolve(path[path.length - 1] + c[1].hashCode()));
            m.writeValue(d.resolve("tokenizer.json").toFile(), copy);
            var e = assertThrows(TokenizerFormatException.class, () -> Tokenizer.load(d));
            assertTrue(e.getMessage().startsWith(c[2]), e.getMessage());
        }
        ObjectNode split = original.deepCopy();
        ((ObjectNode) ((ArrayNode) split.get("pre_tokenizer").get("pretokenizers")).get(0)).put("behavior", "MergedWithNext");
        Path d = Files.createDirectories(dir.resolve("behavior"));
        m.writeValue(d.resolve("tokenizer.json").toFile(), split);
        assertTrue(assertThrows(TokenizerFormatException.class, () -> Tokenizer.load(d)).getMessage().contains("'MergedWithNext' is not supported"));
    }

    @Test
    void loneSurrogatesReadAsReplacementCharacters() {
        assertArrayEquals(fast.encode("a\uFFFDb"), fast.encode("a\uD800b"));
        assertArrayEquals(fast.encode("\uFFFD"), fast.encode("\uDC00"));
    }
}
