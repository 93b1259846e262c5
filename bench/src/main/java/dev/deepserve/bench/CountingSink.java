package dev.deepserve.bench;

import dev.deepserve.model.sampling.SampledToken;
import dev.deepserve.serving.TokenSink;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/** A benchmark's sink: counts the completion tokens of finished sequences and the sequences done; a failure aborts. */
class CountingSink implements TokenSink {

    private final AtomicLong generated;
    private final AtomicInteger done;

    CountingSink(AtomicLong generated, AtomicInteger done) {
        this.generated = generated;
        this.done = done;
    }

    @Override
    public void token(int id, String text, SampledToken sampled) {
    }

    @Override
    public void done(String finishReason, String text, int promptTokens, int cachedTokens, int completionTokens) {
        generated.addAndGet(completionTokens);
        done.incrementAndGet();
    }

    @Override
    public void failed(String message, int promptTokens, int completionTokens) {
        throw new IllegalStateException(message);
    }
}
