package dev.deepserve.tokenizer;

import java.util.ArrayList;
import java.util.List;

/**
 * DeepSeek-V3's three Split pre-tokenizer patterns as one hand-written scanner, equivalent to running the regexes
 * with backtracking but in a single linear pass (a 1 MB run of one character costs 1 MB of work):
 * <ol>
 * <li>{@code \p{N}{1,3}} — digit runs cut into groups of three from the left;</li>
 * <li>{@code [一-龥぀-ゟ゠-ヿ]+} — runs of CJK ideographs (U+4E00–U+9FA5), hiragana and katakana;</li>
 * <li>{@code [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+ | [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+ |
 *     ␠?[\p{P}\p{S}]+[\r\n]* | \s*[\r\n]+ | \s+(?!\S) | \s+} — tried in that order at each position.</li>
 * </ol>
 * Each pattern applies to each piece the previous one produced (Isolated: matches and gaps both become pieces).
 * The regex path ({@link PreTokenizer.RegexSplit}) stays as the reference this class is tested against.
 */
final class DeepSeekV3Split implements PreTokenizer {

    static final String DIGITS = "\\p{N}{1,3}";
    static final String CJK = "[一-龥぀-ゟ゠-ヿ]+";
    static final String MAIN = "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
            + " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+";

    /** The three DeepSeek-V3 steps replaced by one scanner, when the sequence starts with exactly them. */
    static List<PreTokenizer> replace(List<PreTokenizer> steps) {
        if (steps.size() >= 3 && is(steps.get(0), DIGITS) && is(steps.get(1), CJK) && is(steps.get(2), MAIN)) {
            List<PreTokenizer> out = new ArrayList<>();
            out.add(new DeepSeekV3Split());
            out.addAll(steps.subList(3, steps.size()));
            return out;
        }
        return steps;
    }

    private static boolean is(PreTokenizer p, String source) {
        return p instanceof RegexSplit r && !r.removed && r.source.equals(source);
    }

    @Override
    public void split(String text, int start, int end, Pieces out) {
        Work.STEPS.add(2L * (end - start));
        // Step 1: digit groups; everything between them goes on to step 2.
        int gap = start;
        int i = start;
        while (i < end) {
            int cp = text.codePointAt(i);
            if (CharClass.of(cp) != CharClass.NUMBER) {
                i += Character.charCount(cp);
                continue;
            }
            cjk(text, gap, i, out);
            int count = 0;
            int groupStart = i;
            while (i < end) {
                int c = text.codePointAt(i);
                if (CharClass.of(c) != CharClass.NUMBER) {
                    break;
                }
                i += Character.charCount(c);
                if (++count == 3) {
                    main(text, groupStart, i, out);
                    groupStart = i;
                    count = 0;
                }
            }
            main(text, groupStart, i, out);
            gap = i;
        }
        cjk(text, gap, end, out);
    }

    private static boolean isCjk(int cp) {
        return (cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x30FF);
    }

    /** Step 2 on a piece: CJK runs and the gaps between them each go to step 3. */
    private static void cjk(String text, int start, int end, Pieces out) {
        int gap = start;
        int i = start;
        while (i < end) {
            char ch = text.charAt(i);
            if (!isCjk(ch)) {
                i += Character.isHighSurrogate(ch) && i + 1 < end ? 2 : 1;
                continue;
            }
            main(text, gap, i, out);
            int runStart = i;
            while (i < end && isCjk(text.charAt(i))) {
                i++;
            }
            main(text, runStart, i, out);
            gap = i;
        }
        main(text, gap, end, out);
    }

    private static boolean isAsciiPunct(int cp) {
        return (cp >= '!' && cp <= '/') || (cp >= ':' && cp <= '@') || (cp >= '[' && cp <= '`') || (cp >= '{' && cp <= '~');
    }

    private static boolean isAsciiLetter(int cp) {
        return (cp >= 'A' && cp <= 'Z') || (cp >= 'a' && cp <= 'z');
    }

    private static boolean isLetterOrMark(byte cls) {
        return cls == CharClass.LETTER || cls == CharClass.MARK;
    }

    private static boolean isPunctOrSymbol(byte cls) {
        return cls == CharClass.PUNCT || cls == CharClass.SYMBOL;
    }

    /** Step 3 on a piece [start, end): the six alternatives, leftmost first, the first that matches wins. */
    private static void main(String text, int start, int end, Pieces out) {
        int gap = start;
        int i = start;
        long steps = 0;
        while (i < end) {
            long r = matchAt(text, i, end);
            int m = (int) r;
            steps += 1 + (r >>> 32) + Math.max(0, m - i);
            if (m < 0) {
                i += Character.charCount(text.codePointAt(i));
                continue;
            }
            out.add(gap, i);
            out.add(i, m);
            i = m;
            gap = m;
        }
        out.add(gap, end);
        Work.STEPS.add(steps);
    }


    /**
     * The end of the match at {@code i} (low 32 bits; -1 when no alternative matches there) and, in the high 32 bits,
     * how many whitespace characters were scanned to decide — for the work count.
     */
    private static long matchAt(String text, int i, int end) {
        int cp = text.codePointAt(i);
        int n1 = i + Character.charCount(cp);
        byte cls = CharClass.of(cp);
        // 1: one ASCII punctuation mark followed by ASCII letters
        if (isAsciiPunct(cp) && n1 < end && isAsciiLetter(text.charAt(n1))) {
            int j = n1;
            while (j < end && isAsciiLetter(text.charAt(j))) {
                j++;
            }
            return j;
        }
        // 2: an optional character that is not CR, LF, a letter, punctuation or a symbol, then letters/marks
        boolean optional = cp != '\r' && cp != '\n' && cls != CharClass.LETTER && cls != CharClass.PUNCT && cls != CharClass.SYMBOL;
        if (optional && n1 < end) {
            int j = runOf(text, n1, end, true);
            if (j > n1) {
                return j;
            }
        }
        if (isLetterOrMark(cls)) {
            return runOf(text, i, end, true);
        }
        // 3: an optional space, punctuation/symbols, then any CR/LF
        int p = cp == ' ' && n1 < end && isPunctOrSymbol(CharClass.of(text.codePointAt(n1))) ? n1 : i;
        if (isPunctOrSymbol(CharClass.of(text.codePointAt(p)))) {
            int j = runOf(text, p, end, false);
            while (j < end && (text.charAt(j) == '\r' || text.charAt(j) == '\n')) {
                j++;
            }
            return j;
        }
        if (cls != CharClass.SPACE) {
            return 0xFFFFFFFFL;
        }
        int ws = i;
        int lastNewline = -1;
        while (ws < end) {
            int c = text.codePointAt(ws);
            if (CharClass.of(c) != CharClass.SPACE) {
                break;
            }
            if (c == '\r' || c == '\n') {
                lastNewline = ws;
            }
            ws += Character.charCount(c);
        }
        // 4: \s*[\r\n]+ — backtracks to the last CR/LF of the whitespace run
        long scanned = (long) (ws - i) << 32;
        if (lastNewline >= 0) {
            return scanned | (lastNewline + 1);
        }
        // 5: \s+(?!\S) — the whole run at the piece's end, else all but its last character
        if (ws == end) {
            return scanned | ws;
        }
        int last = text.offsetByCodePoints(ws, -1);
        if (last > i) {
            return scanned | last;
        }
        // 6: \s+
        return scanned | ws;
    }

    /** End of the run from {@code i} of letters/marks ({@code letters}) or of punctuation/symbols. */
    private static int runOf(String text, int i, int end, boolean letters) {
        int j = i;
        while (j < end) {
            int c = text.codePointAt(j);
            byte k = CharClass.of(c);
            if (letters ? !isLetterOrMark(k) : !isPunctOrSymbol(k)) {
                break;
            }
            j += Character.charCount(c);
        }
        return j;
    }
}
