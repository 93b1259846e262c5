package dev.deepserve.tokenizer;

/**
 * Detokenization for streaming: ids arrive one at a time and text leaves only in whole UTF-8 characters, so an
 * emoji or CJK character split across tokens is held back until its last byte arrives and no SSE delta ever carries
 * half a character. The concatenation of everything returned by {@link #next} and {@link #finish} equals
 * {@link Tokenizer#decode} of all the ids.
 *
 * <p>The cut is always placed before a UTF-8 lead byte whose sequence is still incomplete; a replacement character
 * for invalid bytes never spans such a cut, so decoding the pieces separately gives the same text as decoding all at once.
 */
public final class StreamDecoder {

    private final Tokenizer tokenizer;
    private final boolean skipSpecial;
    private final Tokenizer.ByteSink pending = new Tokenizer.ByteSink();

    StreamDecoder(Tokenizer tokenizer, boolean skipSpecial) {
        this.tokenizer = tokenizer;
        this.skipSpecial = skipSpecial;
    }

    /** The text that became complete with this id (possibly empty). */
    public String next(int id) {
        tokenizer.appendBytes(id, skipSpecial, pending);
        int cut = completeUpTo(pending.bytes, pending.size);
        if (cut == 0) {
            return "";
        }
        String text = Tokenizer.lossy(pending.bytes, 0, cut);
        System.arraycopy(pending.bytes, cut, pending.bytes, 0, pending.size - cut);
        pending.size -= cut;
        return text;
    }

    /** Whatever is still held (an unfinished character becomes U+FFFD, as in a full decode). */
    public String finish() {
        String text = Tokenizer.lossy(pending.bytes, 0, pending.size);
        pending.size = 0;
        return text;
    }

    /** Length of the prefix that can be decoded now: all of it unless it ends inside an unfinished sequence. */
    static int completeUpTo(byte[] b, int n) {
        for (int back = 1; back <= Math.min(3, n); back++) {
            int v = b[n - back] & 0xFF;
            if ((v & 0xC0) == 0x80) {
                continue; // continuation byte: keep looking for the lead
            }
            int need = v >= 0xF0 ? 4 : v >= 0xE0 ? 3 : v >= 0xC0 ? 2 : 1;
            return need > back && v < 0xF8 ? n - back : n;
        }
        return n;
    }
}
