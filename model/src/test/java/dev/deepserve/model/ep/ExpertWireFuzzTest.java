package dev.deepserve.model.ep;

import com.code_intelligence.jazzer.junit.FuzzTest;
import dev.deepserve.internal.InternalToken;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;

/**
 * Fuzz target: the expert-parallel wire as a worker reads it from one peer (handshake, HOLD, RUN). Any bytes end in a
 * normal close or an {@link IOException} that closes the connection; nothing else may escape (no allocation from a
 * claimed size, no index error), and an experts call only ever sees blocks of the model's width.
 * Regression inputs: ExpertWireFuzzTestInputs.
 */
class ExpertWireFuzzTest {

    static final InternalToken TOKEN = InternalToken.of("fuzz-token-0123456789abcdef");
    static final int WIDTH = 8;

    @FuzzTest(maxDuration = "10s")
    void readsOrCloses(byte[] stream) {
        ExpertWorker worker = new ExpertWorker((layer, experts, inputs, rows) -> {
            float[][] out = new float[experts.length][];
            for (int g = 0; g < experts.length; g++) {
                if (inputs[g].length != rows[g] * WIDTH) {
                    throw new AssertionError("a block of " + inputs[g].length + " floats for " + rows[g] + " rows reached the experts");
                }
                out[g] = new float[inputs[g].length];
            }
            return out;
        }, null, TOKEN, WIDTH);
        try {
            worker.session(new ExpertWorker.Peer() {
                @Override
                public void readTimeout(int millis) {
                }

                @Override
                public boolean admitted() {
                    return true;
                }

                @Override
                public void close() {
                }
            }, new DataInputStream(new ByteArrayInputStream(stream)), new DataOutputStream(new ByteArrayOutputStream()));
        } catch (IOException closed) {
            // the connection is dropped: the wire reader's one way to say no
        }
    }
}
