package dev.deepserve.tokenizer;

import java.text.Normalizer;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;

/** A varied, deterministic test corpus: hand-picked hard cases, then thousands of random mixtures of them. */
final class Corpus {

    static final List<String> SAMPLES = List.of(
            "Hello world! How are you doing today?",
            "The quick brown fox jumps over the lazy dog. It's 5 o'clock; we'll see. I'd've done it.",
            "Ça va? Üben von Xylophon und Äpfeln. naïve café résumé coöperate",
            "public static void main(String[] args) {\n    System.out.println(\"hi\");\n}\n",
            "def f(x):\n\treturn x**2 + 3*x - 1  # comment\n\n\nclass A(B):\n    pass",
            "{\"key\": [1, 2.5, -3e10, null, true], \"nested\": {\"a\": \"b\"}}",
            "1234567890 12 123 1234 12345 3.14159 1,000,000 +1-555-0100 2024-11-24T06:13:17Z 0x1F 1e-9",
            "٠١٢٣٤٥٦٧٨٩ ０１２３ ½ ¾ ² ³ Ⅻ ⅷ ① ⑳",
            "tabs\tand\t\tmore\ttabs\r\nwindows\r\nlines\n\n\nmany newlines   \n   trailing spaces   ",
            "no-break\u00A0space, ideographic\u3000space, em\u2003space, thin\u2009space, NEL\u0085here, LS\u2028PS\u2029end",
            "   leading spaces and     gaps      ",
            "中文测试：我们今天去公园散步，天气很好。数字123和English混合。",
            "日本語のテキスト、ひらがなとカタカナ。コーヒー・ブレイク。東京タワー",
            "한국어 텍스트입니다. 안녕하세요!",
            "مرحبا بالعالم! هذا نص عربي مع أرقام ١٢٣ وعلامات ترقيم؟",
            "नमस्ते दुनिया! यह हिंदी पाठ है। क्षत्रिय ज्ञान",
            "Emoji: 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇺🇸 ❤️ ✨🔥 🧑🏿‍💻",
            "Combining: e\u0301 a\u0308 n\u0303 Z\u0351\u0348\u0364 o\u0302\u0323 \u0301alone",
            "Control: \u0000 \u0001 \u0007 \u001b[31mred\u001b[0m \u007f \u0085",
            "URLs: https://example.com/path?q=1&r=two#frag and mailto:someone@example.org, C:\\Windows\\System32",
            "Markdown **bold** _italic_ `code` [link](http://x.y) > quote\n- item\n1. one\n```java\nint x;\n```",
            "!!!??? ... --- *** ### $$$ %%% ((( ))) ''' \"\"\" ;;; ::: <<< >>> ~~~ ^^^ ||| @@@",
            "<｜begin▁of▁sentence｜>system<｜User｜>hi there<｜Assistant｜>hello<｜end▁of▁sentence｜>",
            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{}\n```<｜tool▁call▁end｜>",
            "partial <｜User tokens <｜Assistant｜ and <｜end▁of▁sentence｜>< | > <<｜User｜>>",
            "Mixed: abc123def 4567ghi ñ9 x²+y²=z² αβγ ΑΒΓ Привет мир 123абв",
            "'s 't 're 've 'm 'll 'd 'S 'T 'RE Don't WON'T",
            "a" .repeat(3000),
            "ab".repeat(700) + " " + "xyz".repeat(400),
            " ".repeat(500) + "x" + "\n".repeat(50) + "\t".repeat(30),
            "1".repeat(1000),
            "😀".repeat(300),
            "中".repeat(800),
            "!".repeat(400) + "a",
            "word\u200Bzero\u200Cwidth\u200Djoiner\uFEFFbom",
            "\uFFFD replacement \uFFFF noncharacter \uE000 private use",
            "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕄𝕒𝕥𝕙 𝓈𝒸𝓇𝒾𝓅𝓉 🝖 𐍈 𓀀"
    );

    private Corpus() {
    }

    /** The samples, their NFC and NFD forms, and {@code mixtures} random combinations of their fragments. */
    static List<String> build(int mixtures, long seed) {
        List<String> out = new ArrayList<>();
        for (String s : SAMPLES) {
            out.add(s);
            out.add(Normalizer.normalize(s, Normalizer.Form.NFD));
            out.add(Normalizer.normalize(s, Normalizer.Form.NFKC));
        }
        List<String> fragments = new ArrayList<>();
        for (String s : SAMPLES) {
            int[] cps = s.codePoints().toArray();
            for (int i = 0; i < cps.length; i += 7) {
                fragments.add(new String(cps, i, Math.min(cps.length - i, 1 + (i * 31 + s.length()) % 23)));
            }
        }
        SplittableRandom r = new SplittableRandom(seed);
        String[] joiners = {"", " ", "  ", "\n", "\r\n", "\t", "\u00A0", "1", "。", "-", "'"};
        for (int m = 0; m < mixtures; m++) {
            StringBuilder sb = new StringBuilder();
            int parts = 1 + r.nextInt(8);
            for (int p = 0; p < parts; p++) {
                sb.append(fragments.get(r.nextInt(fragments.size())));
                sb.append(joiners[r.nextInt(joiners.length)]);
            }
            out.add(sb.toString());
        }
        return out;
    }

    /** Random code points from the planes text actually uses (assigned or not), surrogates excluded. */
    static String randomUnicode(SplittableRandom r, int length) {
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < length; i++) {
            int kind = r.nextInt(10);
            int cp = switch (kind) {
                case 0, 1 -> 0x20 + r.nextInt(0x5F);
                case 2 -> "\t\n\r \u00A0\u3000\u2003\u0085".charAt(r.nextInt(8));
                case 3 -> 0x80 + r.nextInt(0x780);
                case 4 -> 0x0900 + r.nextInt(0x1700);
                case 5 -> 0x3000 + r.nextInt(0x1000);
                case 6 -> 0x4E00 + r.nextInt(0x5200);
                case 7 -> 0x1F300 + r.nextInt(0x600);
                case 8 -> 0x0300 + r.nextInt(0x70);
                default -> r.nextInt(0x10000);
            };
            if (cp >= 0xD800 && cp <= 0xDFFF) {
                cp = 'x';
            }
            sb.appendCodePoint(cp);
        }
        return sb.toString();
    }
}
