package dev.deepserve.model.engine.ops;

import dev.deepserve.model.engine.Linear;

import java.lang.foreign.Arena;
import java.util.Arrays;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;

/** The checks every kind of {@link Panels} passes, shared by {@code Bf16PanelsTest} and {@code Fp8PanelsTest}. */
final class PanelsChecks {

    /** Batch rows of inputs: {@code batch × in} floats from a seed. */
    interface Inputs {
        float[] make(int batch, int in, long seed);
    }

    private PanelsChecks() {
    }

    /** One input row's outputs are bitwise the same alone and at any place of any batch of 1 to 9, on 1 to 3 threads. */
    static void aRowIsBitwiseTheSameInAnyBatchAndOnAnyThreads(Linear w, Inputs inputs) {
        int out = w.out();
        int in = w.in();
        float[] mine = inputs.make(1, in, 77);
        float[] alone = new float[out];
        try (CpuOps one = CpuOps.create(true, 1, false)) {
            one.prepare(w);
            one.matmul(w, mine, alone, 1);
        }
        for (int batch = 1; batch <= 9; batch++) {
            for (int at = 0; at < batch; at++) {
                float[] x = inputs.make(batch, in, 100 + batch);
                System.arraycopy(mine, 0, x, at * in, in);
                for (int threads : new int[] {1, 2, 3}) {
                    try (CpuOps ops = CpuOps.create(true, threads, false)) {
                        ops.prepare(w);
                        float[] y = new float[batch * out];
                        ops.matmul(w, x, y, batch);
                        assertArrayEquals(alone, Arrays.copyOfRange(y, at * out, (at + 1) * out),
                                "batch " + batch + ", row " + at + ", " + threads + " threads");
                    }
                }
            }
        }
    }

    /**
     * The kernels (four panels at once, one at a time; four batch rows at once, two, one) agree bit for bit: every panel
     * computed alone by the one-panel kernel gives what the product gives through the groups of four.
     */
    static void everyKernelSumsInTheSameOrder(Linear w, Inputs inputs) {
        Panels packed = Panels.pack(w, n -> Arena.ofAuto().allocate(n, 64));
        int out = w.out();
        for (int batch : new int[] {1, 2, 3, 4, 5, 7}) {
            float[] x = inputs.make(batch, w.in(), 3);
            float[] whole = new float[batch * out];
            packed.multiply(new Panels.Input(x, false), batch, whole, 0, packed.slots());
            float[] alone = new float[batch * out];
            for (int p = 0; p < packed.panels(); p++) {
                for (int b = 0; b < batch; b++) {
                    packed.oneByOne(p, x, false, b, alone);
                }
            }
            assertArrayEquals(alone, whole, "batch " + batch);
            Panels.Input scaled = packed.input(x, batch * w.in());
            if (scaled.scaled()) { // the kernels on inputs carrying the decode's factor: the same bits
                float[] wholeScaled = new float[batch * out];
                packed.multiply(scaled, batch, wholeScaled, 0, packed.slots());
                assertArrayEquals(whole, wholeScaled, "batch " + batch + ", scaled inputs");
                float[] aloneScaled = new float[batch * out];
                for (int p = 0; p < packed.panels(); p++) {
                    for (int b = 0; b < batch; b++) {
                        packed.oneByOne(p, scaled.values(), true, b, aloneScaled);
                    }
                }
                assertArrayEquals(whole, aloneScaled, "batch " + batch + ", scaled inputs, one panel at a time");
            }
        }
    }
}
