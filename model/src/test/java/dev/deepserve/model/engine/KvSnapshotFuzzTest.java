package dev.deepserve.model.engine;

import com.code_intelligence.jazzer.junit.FuzzTest;

/**
 * Fuzz target: the KV snapshot reader (what decode-service does with a POST /internal/kv body). Any bytes are either a
 * snapshot of the expected shape or refused with {@link IllegalArgumentException}; nothing else may escape (no
 * OutOfMemoryError, negative sizes, index errors), whatever a header claims. Regression inputs: KvSnapshotFuzzTestInputs.
 */
class KvSnapshotFuzzTest {

    private static final KvSnapshot.Shape TINY = new KvSnapshot.Shape(2, 1, 4, 2, 64);

    @FuzzTest(maxDuration = "10s")
    void readsOrRefuses(byte[] transfer) {
        for (KvSnapshot.Shape expected : new KvSnapshot.Shape[] {TINY, null}) {
            try {
                KvSnapshot.Contents c = KvSnapshot.decode(transfer, expected);
                if (expected != null && c.main().length() > expected.maxTokens()) {
                    throw new AssertionError("a snapshot longer than the model's context was taken");
                }
            } catch (IllegalArgumentException refused) {
                // the reader's one way to say no
            }
        }
    }
}
