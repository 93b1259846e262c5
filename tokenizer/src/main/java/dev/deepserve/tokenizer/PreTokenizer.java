package dev.deepserve.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;

import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * One step of a {@code tokenizer.json} pre-tokenizer: cuts each piece of text into smaller pieces. A Sequence applies
 * its steps in order, each to every piece the previous produced — so a later pattern never sees past a piece's
 * edges (its lookaheads stop there), exactly as Hugging Face's pre-tokenizers behave.
 */
interface PreTokenizer {

    /** Appends the pieces of {@code text[start, end)} to {@code out}. */
    void split(String text, int start, int end, Pieces out);

    /**
     * The steps of a {@code pre_tokenizer} node, byte-level mapping excluded (the BPE works on bytes directly).
     * DeepSeek-V3's three Split patterns are replaced by {@link DeepSeekV3Split}, an exact hand-written matcher, when
     * {@code fast} is true.
     */
    static Steps parse(JsonNode node, boolean fast) {
        List<JsonNode> nodes = new ArrayList<>();
        if (node != null && !node.isNull()) {
            if ("Sequence".equals(node.path("type").asText())) {
                node.path("pretokenizers").forEach(nodes::add);
            } else {
                nodes.add(node);
            }
        }
        List<PreTokenizer> steps = new ArrayList<>();
        boolean byteLevel = false;
        boolean prefixSpace = false;
        for (int i = 0; i < nodes.size(); i++) {
            JsonNode n = nodes.get(i);
            String type = n.path("type").asText();
            switch (type) {
                case "Split" -> steps.add(RegexSplit.of(n));
                case "ByteLevel" -> {
                    if (byteLevel) {
                        throw new TokenizerFormatException("pre_tokenizer has ByteLevel twice");
                    }
                    byteLevel = true;
                    if (n.path("add_prefix_space").asBoolean(false)) {
                        if (i != 0) {
                            throw new TokenizerFormatException("pre_tokenizer: ByteLevel with add_prefix_space after other steps is not supported");
                        }
                        prefixSpace = true;
                    }
                    if (n.path("use_regex").asBoolean(true)) {
                        steps.add(new RegexSplit(Pattern.compile(RegexSplit.GPT2, Pattern.UNICODE_CHARACTER_CLASS), false, RegexSplit.GPT2));
                    }
                }
                case "Digits" -> {
                    if (!n.path("individual_digits").asBoolean(false)) {
                        throw new TokenizerFormatException("pre_tokenizer: Digits with individual_digits false is not supported");
                    }
                    steps.add(new RegexSplit(Pattern.compile("\\p{Nd}"), false, "\\p{Nd}"));
                }
                default -> throw new TokenizerFormatException("pre_tokenizer type '" + type + "' is not supported (supported: Sequence, Split, ByteLevel, Digits)");
            }
        }
        if (!byteLevel) {
            throw new TokenizerFormatException("pre_tokenizer has no ByteLevel step: only byte-level BPE tokenizers are supported");
        }
        if (fast) {
            steps = DeepSeekV3Split.replace(steps);
        }
        return new Steps(List.copyOf(steps), prefixSpace);
    }

    /** The parsed steps, and whether ByteLevel adds a space in front of each text segment. */
    record Steps(List<PreTokenizer> steps, boolean addPrefixSpace) {

        /** Pieces of {@code text[start, end)} after all steps; {@code a} and {@code b} are reused buffers, one is returned. */
        Pieces run(String text, int start, int end, Pieces a, Pieces b) {
            a.clear();
            a.add(start, end);
            for (PreTokenizer step : steps) {
                b.clear();
                for (int i = 0; i < a.size; i++) {
                    step.split(text, a.start(i), a.end(i), b);
                }
                Pieces t = a;
                a = b;
                b = t;
            }
            return a;
        }
    }

    /** A {@code Split} step with a regex, behavior Isolated (matches and the gaps between them are pieces) or Removed. */
    final class RegexSplit implements PreTokenizer {

        /** GPT-2's pattern, which ByteLevel with use_regex applies. */
        static final String GPT2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

        final Pattern pattern;
        final boolean removed;
        final String source;

        RegexSplit(Pattern pattern, boolean removed, String source) {
            this.pattern = pattern;
            this.removed = removed;
            this.source = source;
        }

        static RegexSplit of(JsonNode n) {
            JsonNode p = n.path("pattern");
            String regex;
            if (p.has("Regex")) {
                regex = p.get("Regex").asText();
            } else if (p.has("String")) {
                regex = Pattern.quote(p.get("String").asText());
            } else {
                throw new TokenizerFormatException("pre_tokenizer Split has no pattern.Regex or pattern.String");
            }
            if (n.path("invert").asBoolean(false)) {
                throw new TokenizerFormatException("pre_tokenizer Split with invert true is not supported");
            }
            String behavior = n.path("behavior").asText();
            if (!behavior.equals("Isolated") && !behavior.equals("Removed")) {
                throw new TokenizerFormatException("pre_tokenizer Split behavior '" + behavior + "' is not supported (supported: Isolated, Removed)");
            }
            try {
                return new RegexSplit(Pattern.compile(regex, Pattern.UNICODE_CHARACTER_CLASS), behavior.equals("Removed"), regex);
            } catch (PatternSyntaxException e) {
                throw new TokenizerFormatException("pre_tokenizer Split pattern cannot be compiled: " + e.getDescription());
            }
        }

        @Override
        public void split(String text, int start, int end, Pieces out) {
            // Opaque region bounds: lookaheads such as (?!\S) see the piece's end, not the text after it.
            Matcher m = pattern.matcher(text).region(start, end);
            int gap = start;
            while (m.find()) {
                if (m.start() == m.end()) {
                    continue;
                }
                if (!removed) {
                    out.add(gap, m.start());
                    out.add(m.start(), m.end());
                } else {
                    out.add(gap, m.start());
                }
                gap = m.end();
            }
            out.add(gap, end);
        }
    }
}
