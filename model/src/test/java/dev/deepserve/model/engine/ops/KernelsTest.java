package dev.deepserve.model.engine.ops;

import dev.deepserve.model.AllocationProbe;
import dev.deepserve.model.weights.Bf16;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Fp8E4M3;
import dev.deepserve.model.weights.Tensor;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.time.Duration;
import java.util.SplittableRandom;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The vectorized decoders against the FP8/BF16 definitions, element by element, and dot products against the scalar kernels. */
class KernelsTest {

    static Kernels vector() {
        Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        return new VectorKernels();
    }

    static byte code(int i) {
        int c = (i * 7 + 3) & 0xFF;
        return (byte) ((c & 0x7F) == 0x7F ? 0 : c);
    }

    /**
     * A row of 2·256 + 37 FP8 codes: every finite bit pattern (both zeros, subnormals, ±448) twice and a tail, with
     * per-128 block scales. NaN codes never reach the vector decoder: CpuOps routes such tensors to the scalar path.
     */
    @Test
    void fp8RowsDecodeEveryFiniteCodeExactlyIncludingTheTail() {
        Kernels k = vector();
        int n = 2 * 256 + 37;
        Arena arena = Arena.ofAuto();
        MemorySegment codes = arena.allocate(n);
        for (int i = 0; i < n; i++) {
            codes.set(ValueLayout.JAVA_BYTE, i, code(i));
        }
        int blocks = (n + 127) / 128;
        MemorySegment scales = arena.allocate(blocks * 4L);
        for (int b = 0; b < blocks; b++) {
            scales.set(ValueLayout.JAVA_FLOAT_UNALIGNED, b * 4L, 0.5f + b);
        }
        Tensor w = new Tensor("w", DType.F8_E4M3, new long[] {1, n}, codes);
        Tensor s = new Tensor("s", DType.F32, new long[] {1, blocks}, scales);
        float[] laid = new float[n];
        float[] decoded = new float[n];
        k.decodeRow(w, 0, n, s, 0, 128, laid, 0);
        k.fromLayout(DType.F8_E4M3, 128, laid, 0, n, decoded, 0);
        for (int i = 0; i < n; i++) {
            float expected = Fp8E4M3.decode(code(i)) * (0.5f + i / 128);
            assertEquals(expected, decoded[i], 0f, "element " + i + " code " + (code(i) & 0xFF));
        }
    }

    @Test
    void layoutRoundTripsAndDotProductsMatchTheScalarKernels() {
        Kernels k = vector();
        Kernels ref = new ScalarKernels();
        SplittableRandom r = new SplittableRandom(9);
        for (int n : new int[] {1, 31, 64, 200, 256, 300, 1000}) {
            float[] x = new float[n];
            for (int i = 0; i < n; i++) {
                x[i] = (float) r.nextGaussian();
            }
            Arena arena = Arena.ofAuto();
            MemorySegment bf = arena.allocate(2L * n);
            MemorySegment f8 = arena.allocate(n);
            for (int i = 0; i < n; i++) {
                bf.set(ValueLayout.JAVA_SHORT_UNALIGNED, 2L * i, Bf16.encode((float) r.nextGaussian()));
                f8.set(ValueLayout.JAVA_BYTE, i, Fp8E4M3.encode((float) r.nextGaussian() * 100));
            }
            Tensor s = blockScales(arena, n);
            for (Tensor w : new Tensor[] {new Tensor("b", DType.BF16, new long[] {1, n}, bf), new Tensor("f", DType.F8_E4M3, new long[] {1, n}, f8)}) {
                Tensor scales = w.dtype() == DType.F8_E4M3 ? s : null;
                float[] laid = new float[n];
                float[] back = new float[n];
                k.toLayout(w.dtype(), 128, x, 0, n, laid, 0);
                k.fromLayout(w.dtype(), 128, laid, 0, n, back, 0);
                for (int i = 0; i < n; i++) {
                    assertEquals(x[i], back[i], 0f);
                }
                float expected = ref.dotRow(w, 0, n, scales, 0, 128, x, 0);
                float actual = k.dotRow(w, 0, n, scales, 0, 128, laid, 0);
                assertEquals(expected, actual, 1e-4f * Math.max(1, Math.abs(expected)), w.dtype() + " n=" + n);
                // four vectors at once: x, 2x, -x, x+1 (each in the layout)
                float[] four = new float[4 * n];
                float[] natural = new float[4 * n];
                for (int i = 0; i < n; i++) {
                    natural[i] = x[i];
                    natural[n + i] = 2 * x[i];
                    natural[2 * n + i] = -x[i];
                    natural[3 * n + i] = x[i] + 1;
                }
                for (int q = 0; q < 4; q++) {
                    k.toLayout(w.dtype(), 128, natural, q * n, n, four, q * n);
                }
                float[] out = new float[8];
                k.dotRow4(w, 0, n, scales, 0, 128, four, 0, n, out, 1, 2);
                for (int q = 0; q < 4; q++) {
                    float e = ref.dotRow(w, 0, n, scales, 0, 128, natural, q * n);
                    assertEquals(e, out[1 + 2 * q], 1e-4f * Math.max(1, Math.abs(e)), w.dtype() + " n=" + n + " vector " + q);
                }
            }
        }
    }

    /** One row's per-128-column block scales, 0.01, 0.02, … */
    private static Tensor blockScales(Arena arena, int n) {
        int blocks = (n + 127) / 128;
        MemorySegment sc = arena.allocate(4L * blocks);
        for (int b = 0; b < blocks; b++) {
            sc.set(ValueLayout.JAVA_FLOAT_UNALIGNED, 4L * b, 0.01f * (b + 1));
        }
        return new Tensor("s", DType.F32, new long[] {1, blocks}, sc);
    }

    /**
     * Four FP8 rows at once give the very floats of one at a time, with and without a scalar tail, so a row's logits
     * do not depend on its batch; both stay within rounding of the scalar definition.
     */
    @Test
    void fp8RowsSumBitForBitOneAtATimeAndFourAtOnce() {
        Kernels ref = new ScalarKernels();
        Kernels k = vector();
        SplittableRandom r = new SplittableRandom(17);
        Arena arena = Arena.ofAuto();
        for (int n : new int[] {37, 64, 128, 192, 1000, 1024, 2048 + 64, 2048 + 37}) {
            MemorySegment f8 = arena.allocate(n);
            for (int i = 0; i < n; i++) {
                f8.set(ValueLayout.JAVA_BYTE, i, Fp8E4M3.encode((float) r.nextGaussian() * 100));
            }
            Tensor w = new Tensor("f", DType.F8_E4M3, new long[] {1, n}, f8);
            Tensor s = blockScales(arena, n);
            float[] four = new float[4 * n];
            for (int i = 0; i < four.length; i++) {
                four[i] = (float) r.nextGaussian();
            }
            float[] out = new float[4];
            k.dotRow4(w, 0, n, s, 0, 128, four, 0, n, out, 0, 1);
            float[] natural = new float[4 * n];
            for (int q = 0; q < 4; q++) {
                k.fromLayout(DType.F8_E4M3, 128, four, q * n, n, natural, q * n);
            }
            for (int q = 0; q < 4; q++) {
                float one = k.dotRow(w, 0, n, s, 0, 128, four, q * n);
                assertEquals(Float.floatToRawIntBits(one), Float.floatToRawIntBits(out[q]), "n=" + n + " row " + q + " of four");
                float e = ref.dotRow(w, 0, n, s, 0, 128, natural, q * n);
                assertEquals(e, one, 1e-4f * Math.max(1, Math.abs(e)), "n=" + n);
            }
        }
    }

    /** {@code rows} FP8 rows of n codes: every fifth from the all-codes pattern ({@link #code}), the rest random. */
    static Tensor mixedFp8Rows(Arena arena, int rows, int n, SplittableRandom r) {
        MemorySegment f8 = arena.allocate((long) rows * n);
        for (int i = 0; i < rows * n; i++) {
            f8.set(ValueLayout.JAVA_BYTE, i, i % 5 == 0 ? code(i) : Fp8E4M3.encode((float) r.nextGaussian() * 100));
        }
        return new Tensor("f", DType.F8_E4M3, new long[] {rows, n}, f8);
    }

    /**
     * Four consecutive FP8 weight rows against one vector give each row's floats of {@code dotRow} (the batch-1 matmul
     * takes rows four at a time, so a row's logits must not depend on that), with and without a scalar tail; rows
     * whose codes include negative zero, subnormals and ±448.
     */
    @Test
    void fourFp8RowsAgainstOneVectorSumBitForBitAsEachRowAlone() {
        Kernels k = vector();
        SplittableRandom r = new SplittableRandom(23);
        Arena arena = Arena.ofAuto();
        for (int n : new int[] {37, 64, 128, 192, 1000, 1024, 2048 + 64, 2048 + 37}) {
            Tensor w = mixedFp8Rows(arena, 4, n, r);
            Tensor s = blockScales(arena, n);
            float[] x = new float[n];
            for (int i = 0; i < n; i++) {
                x[i] = (float) r.nextGaussian();
            }
            float[] out = new float[6];
            k.dotRows4(w, 0, n, s, 0, 128, x, 0, out, 1);
            for (int row = 0; row < 4; row++) {
                float one = k.dotRow(w, (long) row * n, n, s, 0, 128, x, 0);
                assertEquals(Float.floatToRawIntBits(one), Float.floatToRawIntBits(out[1 + row]), "n=" + n + " row " + row + " of four");
            }
            assertEquals(0f, out[0]);
            assertEquals(0f, out[5]);
        }
        // rows further in, their own row of block scales, and the vector further in its array
        int n = 2048 + 37;
        int blocks = Math.ceilDiv(n, 128);
        MemorySegment f8 = arena.allocate(8L * n);
        for (int i = 0; i < 8 * n; i++) {
            f8.set(ValueLayout.JAVA_BYTE, i, Fp8E4M3.encode((float) r.nextGaussian() * 100));
        }
        Tensor w = new Tensor("f", DType.F8_E4M3, new long[] {8, n}, f8);
        MemorySegment sc = arena.allocate(4L * 2 * blocks);
        for (int b = 0; b < 2 * blocks; b++) {
            sc.set(ValueLayout.JAVA_FLOAT_UNALIGNED, 4L * b, 0.003f * (b + 1));
        }
        Tensor s = new Tensor("s", DType.F32, new long[] {2, blocks}, sc);
        float[] x = new float[n + 5];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) r.nextGaussian();
        }
        float[] out = new float[4];
        k.dotRows4(w, 4L * n, n, s, blocks, 128, x, 5, out, 0);
        for (int row = 0; row < 4; row++) {
            float one = k.dotRow(w, (4L + row) * n, n, s, blocks, 128, x, 5);
            assertEquals(Float.floatToRawIntBits(one), Float.floatToRawIntBits(out[row]), "rows 4-7, row " + row);
        }
    }

    /**
     * Two consecutive FP8 weight rows against four vectors give each row's floats of {@code dotRow4} (batches of four
     * and more take rows two at a time), with and without a scalar tail.
     */
    @Test
    void twoFp8RowsAgainstFourVectorsSumBitForBitAsEachRowAlone() {
        Kernels k = vector();
        SplittableRandom r = new SplittableRandom(29);
        Arena arena = Arena.ofAuto();
        for (int n : new int[] {37, 64, 128, 192, 1000, 1024, 2048 + 64, 2048 + 37}) {
            Tensor w = mixedFp8Rows(arena, 2, n, r);
            Tensor s = blockScales(arena, n);
            float[] four = new float[4 * n];
            for (int i = 0; i < four.length; i++) {
                four[i] = (float) r.nextGaussian();
            }
            float[] both = new float[4 * 3]; // out[row + 3k]: one unused slot per vector
            k.dot2Rows4(w, 0, n, s, 0, 128, four, 0, n, both, 0, 3);
            for (int row = 0; row < 2; row++) {
                float[] alone = new float[4];
                k.dotRow4(w, (long) row * n, n, s, 0, 128, four, 0, n, alone, 0, 1);
                for (int q = 0; q < 4; q++) {
                    assertEquals(Float.floatToRawIntBits(alone[q]), Float.floatToRawIntBits(both[row + 3 * q]), "n=" + n + " row " + row + " vector " + q);
                }
            }
            for (int q = 0; q < 4; q++) {
                assertEquals(0f, both[2 + 3 * q]);
            }
        }
    }

    /**
     * A warm FP8 matmul allocates no vectors: when C2 cannot keep a vector in registers (a merge it cannot see
     * through, a call it does not inline) it boxes it, and the kernel ran 4x slower allocating 2.4 KB per 2048-wide
     * row (4.9 MB per call here with the earlier loop, which this test caught). Through {@code CpuOps.matmul}, the
     * engine's path, on a shared arena as mapped weights are, at batch 1 and 4; measured after the JIT has had its
     * chance (rounds until the allocation stops, 30 s at most). What remains is the input's copy into the layout.
     */
    @Test
    void aWarmFp8MatmulAllocatesNoVectors() {
        vector();
        Assumptions.assumeTrue(AllocationProbe.available(), "no allocation counting");
        int rows = 2048;
        int n = 2048;
        Arena arena = Arena.ofShared();
        MemorySegment f8 = arena.allocate((long) rows * n);
        MemorySegment sc = arena.allocate(4L * (rows / 128) * (n / 128));
        SplittableRandom r = new SplittableRandom(3);
        for (long i = 0; i < (long) rows * n; i++) {
            f8.set(ValueLayout.JAVA_BYTE, i, Fp8E4M3.encode((float) r.nextGaussian()));
        }
        for (long b = 0; b < (rows / 128) * (n / 128); b++) {
            sc.set(ValueLayout.JAVA_FLOAT_UNALIGNED, 4L * b, 0.5f);
        }
        dev.deepserve.model.engine.Linear w = new dev.deepserve.model.engine.Linear("w", new Tensor("f", DType.F8_E4M3, new long[] {rows, n}, f8),
                new Tensor("s", DType.F32, new long[] {rows / 128, n / 128}, sc), rows, n, 128, 128);
        CpuOps ops = CpuOps.create(true, 1, false);
        float[] x = new float[4 * n];
        float[] y = new float[4 * rows];
        try {
            for (int batch : new int[] {1, 4}) {
                // the input's copy into the layout and a few small objects; a boxed vector per block is 600x more
                long allowed = (long) batch * n * 4 + 4096;
                long perCall = AllocationProbe.perCall(() -> ops.matmul(w, x, y, batch), 50, allowed, Duration.ofSeconds(30));
                assertTrue(perCall <= allowed, "a warm FP8 matmul at batch " + batch + " allocated " + perCall + " bytes per call");
            }
        } finally {
            ops.close();
            arena.close();
        }
    }

    /**
     * The BF16 latent-KV products against their definition: a query put in the BF16 order and dotted with packed BF16
     * values at any element offset (odd ones take the scalar path), a weighted sum into an order-laid output and back;
     * lengths with and without a tail.
     */
    @Test
    void bf16CacheProductsMatchTheScalarDefinitionAtAnyOffset() {
        Kernels k = vector();
        Kernels scalar = new ScalarKernels();
        SplittableRandom random = new SplittableRandom(5);
        for (int n : new int[] {7, 16, 64, 512 + 64, 600}) {
            for (int off : new int[] {0, 1, 3, 64}) {
                int[] v = new int[Bf16.packedLength(off + n + 5)];
                for (int i = 0; i < off + n + 5; i++) {
                    Bf16.pack(v, i, (float) random.nextGaussian());
                }
                float[] x = new float[n];
                for (int i = 0; i < n; i++) {
                    x[i] = (float) random.nextGaussian();
                }
                double exact = 0;
                for (int i = 0; i < n; i++) {
                    exact += (double) x[i] * Bf16.packed(v, off + i);
                }
                float[] ordered = new float[n];
                k.toLayout(DType.BF16, 1, x, 0, n, ordered, 0);
                assertEquals(exact, k.dotBf16(ordered, 0, v, off, n), 1e-4 * n, "dot, n=" + n + " off=" + off);
                assertEquals(exact, scalar.dotBf16(x, 0, v, off, n), 1e-4 * n, "scalar dot, n=" + n + " off=" + off);

                float[] y = new float[n];
                float[] yScalar = new float[n];
                for (int rep = 0; rep < 3; rep++) {
                    k.axpyBf16(0.5f + rep, v, off + rep, y, 0, n);
                    scalar.axpyBf16(0.5f + rep, v, off + rep, yScalar, 0, n);
                }
                float[] natural = new float[n];
                k.fromLayout(DType.BF16, 1, y, 0, n, natural, 0);
                for (int i = 0; i < n; i++) {
                    assertEquals(yScalar[i], natural[i], 1e-5f * Math.max(1, Math.abs(yScalar[i])), "axpy, n=" + n + " off=" + off + " i=" + i);
                }
            }
        }
    }
}
