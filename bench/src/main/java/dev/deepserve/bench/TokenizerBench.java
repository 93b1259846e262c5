package dev.deepserve.bench;

import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer;
import dev.deepserve.model.cli.ModelCli;
import dev.deepserve.tokenizer.Tokenizer;

import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * Single-thread encode throughput of our tokenizer against the Hugging Face {@code tokenizers} library (through DJL)
 * on the same texts in the same run, as a ratio, for a mixed multilingual text and plain English, in request-sized
 * pieces (1 KiB) and in long documents (64 KiB and 1 MiB per call, to show scaling with length). Checks that both give
 * the same ids while it is at it, and reports the heap the loaded vocabulary takes. The "-unique" texts never repeat a
 * word, so a per-word cache cannot flatter either side.
 *
 * <p>Run: {@code bench/run tokenizer [--model DIR]} (defaults to the cached DeepSeek-V3 tokenizer files).
 */
public final class TokenizerBench {

    static final String[] ENGLISH_WORDS = ("the of and to in is that for it as was with be by on not he this are or his from at which but have "
            + "an they you were her she there been one all we their has would when if so no what can more about time up out said into "
            + "model token service request stream latency throughput memory cache gateway billing balance price usage engineer "
            + "system design paper attention expert routing decode prefill budget concurrency exactly never lost counted twice").split(" ");

    static final String[] MIXED = {
            "The DeepSeek-V3 paper (arXiv:2412.19437) reports 671B total / 37B activated parameters.",
            "深度求索发布了新的模型，推理速度提升了三倍。我们今天测试一下中文分词的速度。",
            "日本語の文章も混ぜます。カタカナとひらがな、そして漢字。",
            "مرحبا بالعالم، هذا اختبار للنص العربي مع الأرقام ١٢٣٤.",
            "नमस्ते, यह हिंदी में एक परीक्षण वाक्य है।",
            "Emoji 😀👍🏽 👨‍👩‍👧‍👦 🇯🇵 and symbols ±∞≈≠ €100 ¥2,000.",
            "for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }  // dot product\n",
            "{\"id\": \"chatcmpl-123\", \"usage\": {\"prompt_tokens\": 42, \"completion_tokens\": 7}}\n",
            "Prices: 0.07 / 0.27 / 1.10 USD per 1M tokens; 2026-11-24T06:13:17Z; +1 (555) 010-0199.",
            "Привет, как дела? Всё хорошо, спасибо.   Tabs\tand  spaces\n\n",
    };

    public static void main(String[] args) throws Exception {
        Path dir = null;
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--model")) {
                dir = Path.of(args[++i]);
            } else {
                throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        if (dir == null) {
            dir = ModelCli.tokenizerDir(System.getenv());
        }
        Runtime rt = Runtime.getRuntime();
        System.gc();
        long before = rt.totalMemory() - rt.freeMemory();
        Tokenizer ours = Tokenizer.load(dir);
        System.gc();
        long after = rt.totalMemory() - rt.freeMemory();
        System.out.printf("loaded vocabulary: %d tokens, heap %.1f MB measured (%.1f MB estimated by the tokenizer)%n%n",
                ours.vocabSize(), (after - before) / 1e6, ours.memoryBytes() / 1e6);
        try (HuggingFaceTokenizer hf = HuggingFaceTokenizer.newInstance(dir,
                Map.of("addSpecialTokens", "false", "truncation", "false", "padding", "false", "maxLength", "100000000"))) {
            String english = english(4 << 20);
            String mixed = mixed(4 << 20);
            String uniqueEnglish = uniqueEnglish(4 << 20);
            String uniqueMixed = uniqueMixed(4 << 20);
            // every path both tokenizers take, compiled before anything is timed (each row still warms up on its own text)
            for (String t : new String[] {english, mixed, uniqueEnglish, uniqueMixed}) {
                for (String c : chunks(t.substring(0, 1 << 18), 1 << 10)) {
                    ours.encode(c);
                    hf.encode(c, false, false);
                }
            }
            System.out.printf("%-15s %-10s %12s %12s %14s %14s %8s%n", "text", "per call", "ours MB/s", "HF MB/s", "ours tok/s", "HF tok/s", "ratio");
            for (String[] t : new String[][] {{"english", english}, {"mixed", mixed}, {"english-unique", uniqueEnglish}, {"mixed-unique", uniqueMixed}}) {
                for (int size : new int[] {1 << 10, 64 << 10, 1 << 20}) {
                    run(t[0], t[1], size, ours, hf);
                }
            }
        }
    }

    static void run(String name, String text, int chunkBytes, Tokenizer ours, HuggingFaceTokenizer hf) {
        List<String> chunks = chunks(text, chunkBytes);
        long bytes = text.getBytes(StandardCharsets.UTF_8).length;
        // correctness on the benchmark text itself
        for (int i = 0; i < Math.min(chunks.size(), 50); i++) {
            int[] a = ours.encode(chunks.get(i));
            long[] b = hf.encode(chunks.get(i), false, false).getIds();
            if (!Arrays.equals(a, Arrays.stream(b).mapToInt(Math::toIntExact).toArray())) {
                throw new IllegalStateException("ids differ from Hugging Face on the benchmark text (chunk " + i + ")");
            }
        }
        double[] o = measure(() -> {
            long n = 0;
            for (String c : chunks) {
                n += ours.encode(c).length;
            }
            return n;
        });
        double[] h = measure(() -> {
            long n = 0;
            for (String c : chunks) {
                n += hf.encode(c, false, false).getIds().length;
            }
            return n;
        });
        System.out.printf("%-15s %-10s %12.1f %12.1f %14.0f %14.0f %7.1fx%n", name, label(chunkBytes), bytes / o[0] / 1e6, bytes / h[0] / 1e6,
                o[1] / o[0], h[1] / h[0], h[0] / o[0]);
    }

    static String label(int bytes) {
        return bytes >= 1 << 20 ? (bytes >> 20) + " MiB" : (bytes >> 10) + " KiB";
    }

    interface Work {
        long run();
    }

    /** Best of 7 passes after 3 warm-up passes: {seconds, tokens}. */
    static double[] measure(Work w) {
        long tokens = 0;
        for (int i = 0; i < 3; i++) {
            tokens = w.run();
        }
        double best = Double.MAX_VALUE;
        for (int i = 0; i < 7; i++) {
            long t0 = System.nanoTime();
            tokens = w.run();
            best = Math.min(best, (System.nanoTime() - t0) / 1e9);
        }
        return new double[] {best, tokens};
    }

    static List<String> chunks(String text, int chunkBytes) {
        List<String> out = new ArrayList<>();
        int chars = Math.max(1, chunkBytes / Math.max(1, text.getBytes(StandardCharsets.UTF_8).length / text.length()));
        for (int i = 0; i < text.length(); i += chars) {
            int end = Math.min(text.length(), i + chars);
            if (end < text.length() && Character.isHighSurrogate(text.charAt(end - 1))) {
                end++;
            }
            out.add(text.substring(i, end));
            i = end - chars;
        }
        return out;
    }

    static String english(int bytes) {
        SplittableRandom r = new SplittableRandom(1);
        StringBuilder sb = new StringBuilder();
        while (sb.length() < bytes) {
            int words = 6 + r.nextInt(14);
            for (int w = 0; w < words; w++) {
                String word = ENGLISH_WORDS[r.nextInt(ENGLISH_WORDS.length)];
                sb.append(w == 0 ? Character.toUpperCase(word.charAt(0)) + word.substring(1) : word);
                sb.append(w + 1 < words ? (r.nextInt(12) == 0 ? ", " : " ") : (r.nextInt(5) == 0 ? ".\n\n" : ". "));
            }
        }
        return sb.toString();
    }

    private static final String[] ONSETS = "b c d f g h j k l m n p r s t v w z bl br ch cl cr dr fl fr gl gr pl pr sc sh sk sl sm sn sp st str th tr wh".split(" ");
    private static final String[] VOWELS = "a e i o u y ai ea ee ie oa oo ou".split(" ");
    private static final String[] CODAS = " n r s t l m nd ng nt rd rk st ck sh th".split(" ");

    /** A pseudo-English word never produced before in this run: the word cache cannot flatter a tokenizer on it. */
    static String uniqueWord(SplittableRandom r, java.util.Set<String> seen) {
        while (true) {
            StringBuilder w = new StringBuilder();
            int syllables = 1 + r.nextInt(4);
            for (int i = 0; i < syllables; i++) {
                w.append(ONSETS[r.nextInt(ONSETS.length)]).append(VOWELS[r.nextInt(VOWELS.length)]).append(CODAS[r.nextInt(CODAS.length)]);
            }
            if (seen.add(w.toString())) {
                return w.toString();
            }
        }
    }

    /** English-shaped text (sentences, commas, paragraphs) whose words never repeat. */
    static String uniqueEnglish(int bytes) {
        SplittableRandom r = new SplittableRandom(3);
        java.util.Set<String> seen = new java.util.HashSet<>();
        StringBuilder sb = new StringBuilder();
        while (sb.length() < bytes) {
            int words = 6 + r.nextInt(14);
            for (int w = 0; w < words; w++) {
                String word = uniqueWord(r, seen);
                sb.append(w == 0 ? Character.toUpperCase(word.charAt(0)) + word.substring(1) : word);
                sb.append(w + 1 < words ? (r.nextInt(12) == 0 ? ", " : " ") : (r.nextInt(5) == 0 ? ".\n\n" : ". "));
            }
        }
        return sb.toString();
    }

    /** Mixed text that never repeats: unique words, random runs of Han, kana, Cyrillic and Arabic letters, numbers, emoji, code. */
    static String uniqueMixed(int bytes) {
        SplittableRandom r = new SplittableRandom(4);
        java.util.Set<String> seen = new java.util.HashSet<>();
        StringBuilder sb = new StringBuilder();
        int[][] scripts = {{0x4E00, 0x9FA5}, {0x3041, 0x3096}, {0x30A1, 0x30FA}, {0x0410, 0x044F}, {0x0627, 0x064A}};
        String[] emoji = {"😀", "👍🏽", "🇯🇵", "👨‍👩‍👧", "±", "€", "∞"};
        while (sb.toString().getBytes(StandardCharsets.UTF_8).length < bytes) {
            for (int i = 0; i < 400; i++) {
                switch (r.nextInt(6)) {
                    case 0, 1 -> sb.append(uniqueWord(r, seen)).append(' ');
                    case 2 -> {
                        int[] range = scripts[r.nextInt(scripts.length)];
                        for (int n = 2 + r.nextInt(10); n > 0; n--) {
                            sb.appendCodePoint(range[0] + r.nextInt(range[1] - range[0]));
                        }
                        sb.append(r.nextInt(3) == 0 ? "。" : " ");
                    }
                    case 3 -> sb.append(r.nextInt(1_000_000)).append(r.nextBoolean() ? "." + r.nextInt(100) : "").append(' ');
                    case 4 -> sb.append(emoji[r.nextInt(emoji.length)]).append(' ');
                    default -> sb.append("x").append(uniqueWord(r, seen)).append("(").append(r.nextInt(99)).append(");\n");
                }
            }
        }
        return sb.toString();
    }

    static String mixed(int bytes) {
        SplittableRandom r = new SplittableRandom(2);
        StringBuilder sb = new StringBuilder();
        while (sb.toString().getBytes(StandardCharsets.UTF_8).length < bytes) {
            for (int i = 0; i < 200; i++) {
                sb.append(MIXED[r.nextInt(MIXED.length)]).append(r.nextInt(4) == 0 ? "\n" : " ");
            }
        }
        return sb.toString();
    }
}
