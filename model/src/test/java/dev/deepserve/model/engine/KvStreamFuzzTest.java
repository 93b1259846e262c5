package dev.deepserve.model.engine;

import com.code_intelligence.jazzer.junit.FuzzTest;

/**
 * Fuzz target: the KV stream reader (what decode-service does with a POST /internal/kv body), fed in two pieces split
 * where the input says. Any bytes are either a stream of the expected shape or refused with
 * {@link IllegalArgumentException}; nothing else may escape (no OutOfMemoryError, negative sizes, index errors), and
 * the reader never holds more than one bounded frame, whatever a header claims. Regression inputs:
 * KvStreamFuzzTestInputs.
 */
class KvStreamFuzzTest {

    private static final KvStream.Shape TINY = new KvStream.Shape(2, 1, 4, 2, 64);

    @FuzzTest(maxDuration = "10s")
    void readsOrRefuses(byte[] transfer) {
        for (KvStream.Shape expected : new KvStream.Shape[] {TINY, null}) {
            int split = transfer.length == 0 ? 0 : (transfer[0] & 0xFF) % (transfer.length + 1);
            KvStream.Reader reader = new KvStream.Reader(expected, new KvStream.Listener() {
                KvCache[] caches = new KvCache[2];

                @Override
                public void header(String metadata, KvStream.Layout layout) {
                    if (expected != null && layout.tokens() > expected.maxTokens()) {
                        throw new AssertionError("a stream longer than the model's context was taken");
                    }
                    caches[0] = new KvCache(layout.layers(), layout.kvLoraRank(), layout.ropeDim(), 1, layout.precision());
                    caches[1] = new KvCache(Math.max(1, layout.mtpLayers()), layout.kvLoraRank(), layout.ropeDim(), 1, layout.precision());
                }

                @Override
                public void section(int cache, int layer, int from, int count, byte[] values) {
                    KvStream.write(caches[cache], caches[cache].precision(), layer, from, count, values);
                }

                @Override
                public void end(String trailer) {
                }
            });
            try {
                reader.feed(transfer, 0, split);
                reader.feed(transfer, split, transfer.length - split);
                reader.finish();
            } catch (IllegalArgumentException refused) {
                // the reader's one way to say no
            }
            if (reader.bufferedMost() > transfer.length + 64) {
                throw new AssertionError("the reader held more than it was given");
            }
        }
    }
}
