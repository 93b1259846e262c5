package dev.deepserve.serving;

import dev.deepserve.model.sampling.SampledToken;

/** Where a sequence's output goes (the HTTP stream, or a test). Called from the engine thread. */
public interface TokenSink {

    /** One generated token with the text it completes (possibly empty: a character still unfinished, or held by a stop check). */
    void token(int id, String text, SampledToken sampled);

    /** The end: why, the last text, and the exact counts (completion counts every token the model generated). */
    void done(String finishReason, String text, int promptTokens, int cachedTokens, int completionTokens);

    /** The engine failed on this sequence; counts of what was generated so far. */
    void failed(String message, int promptTokens, int completionTokens);

    /** False while the consumer cannot take more output (a slow reader). */
    default boolean writable() {
        return true;
    }
}
