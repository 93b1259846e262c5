package dev.deepserve.tokenizer;

/** A tokenizer file this implementation cannot reproduce exactly; the message names the field or feature. */
public final class TokenizerFormatException extends RuntimeException {
    public TokenizerFormatException(String message) {
        super(message);
    }
}
