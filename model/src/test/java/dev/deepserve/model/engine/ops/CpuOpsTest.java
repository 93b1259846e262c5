package dev.deepserve.model.engine.ops;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Fp8E4M3;
import dev.deepserve.model.weights.Tensor;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * FP8 NaN codes are found wherever they sit in a weight and make only their own output row NaN, on the scalar and
 * vector kernels alike. FP8 activation quantization uses one scale per group of 128: every value becomes an E4M3 code
 * times its group's scale, the group's largest magnitude is kept, zero stays zero, and the relative RMS error stays
 * under 4%. The batched row-band products MLA's absorbed form uses give, vector by vector, exactly the sums of the
 * whole-matrix product (and of the definition, for the transpose), wherever the vectors sit.
 */
class CpuOpsTest {

    @Test
    void fp8NaNCodesAreFoundAnywhereAndPropagateThroughTheMatmul() {
        for (int pos : new int[] {0, 5, 7, 8, 63, 64, 200, 255}) {
            for (byte nan : new byte[] {(byte) 0x7F, (byte) 0xFF}) {
                byte[] codes = new byte[256];
                for (int i = 0; i < codes.length; i++) {
                    codes[i] = (byte) (i % 0x7F);
                }
                codes[pos] = nan;
                Linear w = linear(codes, 2, 128);
                assertTrue(w.nanCodes(), "NaN at " + pos);
                float[] y = new float[2];
                for (CpuOps ops : new CpuOps[] {CpuOps.create(false, 1, false), CpuOps.create(CpuOps.vectorAvailable(), 1, false)}) {
                    ops.matmul(w, filled(128, 1f), y, 1);
                    assertTrue(Float.isNaN(y[pos / 128]), "row with the NaN code");
                    assertTrue(!Float.isNaN(y[1 - pos / 128]), "the other row");
                }
            }
        }
        byte[] finite = new byte[256];
        for (int i = 0; i < finite.length; i++) {
            finite[i] = (byte) (i == 0x7F || i == 0xFF ? 0x7E : i);
        }
        assertTrue(!linear(finite, 2, 128).nanCodes());
    }

    /**
     * {@code place} copies a weight onto huge pages within the process's limit and the copy multiplies to the very floats
     * of the checkpoint's bytes; over the limit, below 64 KiB, with {@code off}, or with repacking turned off it keeps the
     * weight as it is; a limit that is not auto, off or a number is refused.
     */
    @Test
    void placedWeightsAreCopiesWithinTheBudgetThatGiveTheSameFloats() {
        Linear big = fp8(512, 2048, 5); // 1 MiB
        Linear small = fp8(128, 256, 6); // 32 KiB
        float[] x = new float[3 * 2048];
        SplittableRandom r = new SplittableRandom(7);
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) r.nextGaussian();
        }
        String before = System.getProperty(CpuOps.PLACE_PROPERTY);
        try {
            System.setProperty(CpuOps.PLACE_PROPERTY, "off");
            try (CpuOps ops = CpuOps.create(CpuOps.vectorAvailable(), 1, false)) {
                assertTrue(ops.place(big) == big, "off");
            }
            System.setProperty(CpuOps.PLACE_PROPERTY, "auto");
            try (CpuOps ops = CpuOps.create(CpuOps.vectorAvailable(), 1, false)) {
                ops.repack(false);
                assertTrue(ops.place(big) == big, "repacking off (a device computes)");
            }
            System.setProperty(CpuOps.PLACE_PROPERTY, "nonsense");
            org.junit.jupiter.api.Assertions.assertThrows(IllegalArgumentException.class, () -> CpuOps.create(false, 1, false));
            // the limit is the process's: room for one more 1 MiB weight beside what other tests' models still hold
            System.setProperty(CpuOps.PLACE_PROPERTY, String.valueOf(Math.ceilDiv(CpuOps.placedInProcess(), 1 << 20) + 1));
            try (CpuOps ops = CpuOps.create(CpuOps.vectorAvailable(), 2, false)) {
                Linear placed = ops.place(big);
                org.junit.jupiter.api.Assumptions.assumeTrue(placed != big, "no transparent huge pages on this kernel");
                assertTrue(placed.weight().data().address() != big.weight().data().address());
                assertEquals(-1L, placed.weight().data().mismatch(big.weight().data()));
                assertEquals(big.name(), placed.name());
                assertTrue(ops.describe().endsWith(", 1 MiB of weights on huge pages"), ops.describe());
                for (int batch : new int[] {1, 3}) {
                    float[] a = new float[batch * 512];
                    float[] b = new float[batch * 512];
                    ops.matmul(big, x, a, batch);
                    ops.matmul(placed, x, b, batch);
                    for (int i = 0; i < a.length; i++) {
                        assertEquals(Float.floatToRawIntBits(a[i]), Float.floatToRawIntBits(b[i]), "batch " + batch + " output " + i);
                    }
                }
                assertTrue(ops.place(small) == small, "below 64 KiB");
            }
            System.setProperty(CpuOps.PLACE_PROPERTY, "0"); // MiB: no room at all (GC can only give room back, so a test of a full limit is this one)
            try (CpuOps ops = CpuOps.create(CpuOps.vectorAvailable(), 1, false)) {
                assertTrue(ops.place(big) == big, "over the limit");
            }
        } finally {
            if (before == null) {
                System.clearProperty(CpuOps.PLACE_PROPERTY);
            } else {
                System.setProperty(CpuOps.PLACE_PROPERTY, before);
            }
        }
    }

    static float[] filled(int n, float v) {
        float[] x = new float[n];
        java.util.Arrays.fill(x, v);
        return x;
    }

    static Linear linear(byte[] codes, int rows, int cols) {
        MemorySegment data = Arena.ofAuto().allocate(codes.length);
        MemorySegment.copy(codes, 0, data, ValueLayout.JAVA_BYTE, 0, codes.length);
        MemorySegment scales = Arena.ofAuto().allocate(4);
        scales.set(ValueLayout.JAVA_FLOAT_UNALIGNED, 0, 1f);
        Tensor w = new Tensor("w", DType.F8_E4M3, new long[] {rows, cols}, data);
        return new Linear("w", w, new Tensor("s", DType.F32, new long[] {1, 1}, scales), rows, cols, 128, 128, Linear.hasNanCodes(w));
    }

    /** FP8 rows with 128×128 block scales, 2·128 + 40 columns so the vector kernels meet a tail. */
    static Linear fp8(int rows, int cols, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        byte[] codes = new byte[rows * cols];
        for (int i = 0; i < codes.length; i++) {
            codes[i] = Fp8E4M3.encode((float) r.nextGaussian() * 50);
        }
        int sr = Math.ceilDiv(rows, 128);
        int sc = Math.ceilDiv(cols, 128);
        MemorySegment data = Arena.ofAuto().allocate(codes.length);
        MemorySegment.copy(codes, 0, data, ValueLayout.JAVA_BYTE, 0, codes.length);
        MemorySegment scales = Arena.ofAuto().allocate(4L * sr * sc);
        for (int i = 0; i < sr * sc; i++) {
            scales.set(ValueLayout.JAVA_FLOAT_UNALIGNED, 4L * i, 0.01f + i * 0.003f);
        }
        Tensor w = new Tensor("w", DType.F8_E4M3, new long[] {rows, cols}, data);
        return new Linear("w", w, new Tensor("s", DType.F32, new long[] {sr, sc}, scales), rows, cols, 128, 128, Linear.hasNanCodes(w));
    }

    @Test
    void batchedRowBandProductsEqualTheWholeProductAndTheDefinition() {
        int rows = 150;
        int cols = 2 * 128 + 40;
        Linear w = fp8(rows, cols, 3);
        SplittableRandom r = new SplittableRandom(4);
        for (CpuOps ops : new CpuOps[] {CpuOps.create(false, 1, false), CpuOps.create(CpuOps.vectorAvailable(), 2, false)}) {
            for (int count : new int[] {1, 3, 4, 9}) {
                int from = 17;
                int band = 100;
                float[] x = new float[count * cols + 5];
                for (int i = 0; i < x.length; i++) {
                    x[i] = (float) r.nextGaussian();
                }
                // W rows [from, from + band) times each vector
                float[] batched = new float[count * band + 3];
                int[] outs = new int[count];
                for (int k = 0; k < count; k++) {
                    outs[k] = 3 + (count - 1 - k) * band; // scattered, in reverse
                }
                ops.matvecRows(w, from, band, java.util.Arrays.copyOf(x, count * cols), count, batched, outs);
                for (int k = 0; k < count; k++) {
                    // the same rows of the whole-matrix product of this vector alone
                    float[] whole = new float[rows];
                    ops.matmul(w, java.util.Arrays.copyOfRange(x, k * cols, (k + 1) * cols), whole, 1);
                    org.junit.jupiter.api.Assertions.assertArrayEquals(java.util.Arrays.copyOfRange(whole, from, from + band),
                            java.util.Arrays.copyOfRange(batched, outs[k], outs[k] + band), ops.describe() + ", " + count + " vectors, vector " + k);
                }
                // the transpose: Σ_i W[from + i, c] · x_k[i] for a band of 40 rows
                int tBand = 40;
                int[] xOffs = new int[count];
                int[] yOffs = new int[count];
                for (int k = 0; k < count; k++) {
                    xOffs[k] = 5 + k * tBand;
                    yOffs[k] = k * cols;
                }
                float[] tBatched = new float[count * cols];
                ops.matvecRowsTransposed(w, from, tBand, x, xOffs, tBatched, yOffs);
                for (int k = 0; k < count; k++) {
                    float[] one = new float[cols];
                    ops.matvecRowsTransposed(w, from, tBand, java.util.Arrays.copyOfRange(x, xOffs[k], xOffs[k] + tBand), new int[] {0}, one, new int[] {0});
                    org.junit.jupiter.api.Assertions.assertArrayEquals(one, java.util.Arrays.copyOfRange(tBatched, k * cols, (k + 1) * cols),
                            ops.describe() + ", transposed, " + count + " vectors, vector " + k);
                    for (int c = 0; c < cols; c++) { // against the definition, in double precision
                        double expected = 0;
                        for (int i = 0; i < tBand; i++) {
                            int row = from + i;
                            expected += (double) Fp8E4M3.decode(w.weight().fp8((long) row * cols + c)) * w.scaleInv().get((long) (row / 128) * w.scaleColumns() + c / 128)
                                    * x[xOffs[k] + i];
                        }
                        assertEquals(expected, one[c], 1e-4 * (1 + Math.abs(expected)), "transposed, column " + c);
                    }
                }
            }
        }
    }

    @Test
    void activationQuantizationUsesOneScalePerGroupOf128() {
        SplittableRandom random = new SplittableRandom(1);
        int in = 300;
        float[] x = new float[2 * in];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) random.nextGaussian() * (i < 128 ? 100 : 1);
        }
        x[400] = 0;
        float[] q = CpuOps.quantizeActivations(x, 2, in, 128);
        double err = 0;
        double norm = 0;
        for (int b = 0; b < 2; b++) {
            for (int c0 = 0; c0 < in; c0 += 128) {
                int end = Math.min(in, c0 + 128);
                float amax = 0;
                int arg = -1;
                for (int c = c0; c < end; c++) {
                    if (Math.abs(x[b * in + c]) > amax) {
                        amax = Math.abs(x[b * in + c]);
                        arg = b * in + c;
                    }
                }
                float scale = amax / Fp8E4M3.MAX;
                assertEquals(x[arg], q[arg], Math.abs(x[arg]) * 1e-6, "the group's largest value maps to ±448 exactly");
                for (int c = c0; c < end; c++) {
                    float code = q[b * in + c] / scale;
                    assertEquals(Fp8E4M3.decode(Fp8E4M3.encode(code)), code, Math.abs(code) * 1e-5, "value is an FP8 code times the group scale");
                    err += Math.pow(q[b * in + c] - x[b * in + c], 2);
                    norm += Math.pow(x[b * in + c], 2);
                }
            }
        }
        assertEquals(0f, q[400]);
        assertTrue(Math.sqrt(err / norm) < 0.04, "relative RMS error " + Math.sqrt(err / norm));
    }
}
