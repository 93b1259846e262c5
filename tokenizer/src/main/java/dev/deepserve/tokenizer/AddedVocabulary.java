package dev.deepserve.tokenizer;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Added tokens (special tokens such as {@code <｜begin▁of▁sentence｜>} and extra ones such as {@code <｜User｜>}):
 * found in the input before any pre-tokenization, leftmost first and longest at a position, as Hugging Face does —
 * first the tokens matched on raw text ({@code normalized: false}), then those matched on normalized text.
 */
final class AddedVocabulary {

    record Token(int id, String content, boolean special, boolean lstrip, boolean rstrip, boolean normalized) {
    }

    /** A piece of the input: an added token's id, or -1 for text that goes through the model. */
    record Segment(int start, int end, int id) {
    }

    private final List<Token> tokens;
    private final Map<Integer, Token> byId = new HashMap<>();
    private final Trie raw = new Trie();
    private final Trie normalized = new Trie();

    AddedVocabulary(List<Token> tokens) {
        this.tokens = List.copyOf(tokens);
        for (Token t : tokens) {
            byId.put(t.id(), t);
            (t.normalized() ? normalized : raw).add(t);
        }
    }

    Token byId(int id) {
        return byId.get(id);
    }

    List<Token> all() {
        return tokens;
    }

    /** Cuts {@code text} into added tokens and the text between them. */
    List<Segment> split(String text) {
        List<Segment> first = raw.split(text, 0, text.length(), null);
        List<Segment> out = new ArrayList<>();
        for (Segment s : first) {
            if (s.id() >= 0) {
                out.add(s);
            } else {
                normalized.split(text, s.start(), s.end(), out);
            }
        }
        return out;
    }

    /** A character trie over token contents with leftmost-longest search. */
    private static final class Trie {
        private final Map<Character, Trie> children = new HashMap<>();
        /** The characters some token starts with (root only): any other character is passed over without a map lookup. */
        private java.util.BitSet starts;
        private Token token;
        private boolean empty = true;

        void add(Token t) {
            empty = false;
            if (!t.content().isEmpty()) {
                if (starts == null) {
                    starts = new java.util.BitSet();
                }
                starts.set(t.content().charAt(0));
            }
            Trie node = this;
            for (int i = 0; i < t.content().length(); i++) {
                node = node.children.computeIfAbsent(t.content().charAt(i), c -> new Trie());
            }
            node.token = t;
        }

        List<Segment> split(String text, int start, int end, List<Segment> out) {
            List<Segment> result = out == null ? new ArrayList<>() : out;
            if (empty) {
                result.add(new Segment(start, end, -1));
                return result;
            }
            int gap = start;
            int i = start;
            while (i < end) {
                char first = text.charAt(i);
                Trie node = starts != null && starts.get(first) ? children.get(first) : null;
                if (node == null) {
                    i++;
                    continue;
                }
                Token best = null;
                int bestEnd = -1;
                int j = i + 1;
                while (true) {
                    if (node.token != null) {
                        best = node.token;
                        bestEnd = j;
                    }
                    if (j >= end) {
                        break;
                    }
                    node = node.children.get(text.charAt(j));
                    if (node == null) {
                        break;
                    }
                    j++;
                }
                if (best == null) {
                    i++;
                    continue;
                }
                int s = i;
                int e = bestEnd;
                if (best.lstrip()) {
                    while (s > gap && CharClass.isWhitespace(text.charAt(s - 1))) {
                        s--;
                    }
                }
                if (best.rstrip()) {
                    while (e < end && CharClass.isWhitespace(text.charAt(e))) {
                        e++;
                    }
                }
                if (s > gap) {
                    result.add(new Segment(gap, s, -1));
                }
                result.add(new Segment(s, e, best.id()));
                gap = e;
                i = e;
            }
            if (end > gap) {
                result.add(new Segment(gap, end, -1));
            }
            return result;
        }
    }
}
