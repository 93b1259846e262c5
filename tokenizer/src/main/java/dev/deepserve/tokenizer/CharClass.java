package dev.deepserve.tokenizer;

/**
 * Unicode classes the pre-tokenizer patterns use, from the JDK's Unicode tables, precomputed for the BMP:
 * letters (\p{L}), marks (\p{M}), numbers (\p{N}), punctuation (\p{P}), symbols (\p{S}), and whitespace as Unicode
 * regexes define \s (the White_Space property).
 */
final class CharClass {

    static final byte OTHER = 0;
    static final byte LETTER = 1;
    static final byte MARK = 2;
    static final byte NUMBER = 3;
    static final byte PUNCT = 4;
    static final byte SYMBOL = 5;
    static final byte SPACE = 6;

    private static final byte[] BMP = new byte[0x10000];

    static {
        for (int cp = 0; cp < 0x10000; cp++) {
            BMP[cp] = compute(cp);
        }
    }

    private CharClass() {
    }

    static byte of(int cp) {
        return cp < 0x10000 ? BMP[cp] : compute(cp);
    }

    static boolean isWhitespace(int cp) {
        return switch (cp) {
            case 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000 -> true;
            default -> cp >= 0x2000 && cp <= 0x200A;
        };
    }

    private static byte compute(int cp) {
        if (isWhitespace(cp)) {
            return SPACE;
        }
        return switch (Character.getType(cp)) {
            case Character.UPPERCASE_LETTER, Character.LOWERCASE_LETTER, Character.TITLECASE_LETTER, Character.MODIFIER_LETTER,
                 Character.OTHER_LETTER -> LETTER;
            case Character.NON_SPACING_MARK, Character.ENCLOSING_MARK, Character.COMBINING_SPACING_MARK -> MARK;
            case Character.DECIMAL_DIGIT_NUMBER, Character.LETTER_NUMBER, Character.OTHER_NUMBER -> NUMBER;
            case Character.CONNECTOR_PUNCTUATION, Character.DASH_PUNCTUATION, Character.START_PUNCTUATION, Character.END_PUNCTUATION,
                 Character.INITIAL_QUOTE_PUNCTUATION, Character.FINAL_QUOTE_PUNCTUATION, Character.OTHER_PUNCTUATION -> PUNCT;
            case Character.MATH_SYMBOL, Character.CURRENCY_SYMBOL, Character.MODIFIER_SYMBOL, Character.OTHER_SYMBOL -> SYMBOL;
            default -> OTHER;
        };
    }
}
