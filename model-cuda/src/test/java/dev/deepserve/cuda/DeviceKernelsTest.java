package dev.deepserve.cuda;

import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.weights.Bf16;

import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.Gate;
import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.engine.Rope;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.sampling.Sampler;
import dev.deepserve.model.tiny.TinyCheckpoint;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.SplittableRandom;

import static dev.deepserve.cuda.TestWeights.assertClose;
import static dev.deepserve.cuda.TestWeights.bf16;
import static dev.deepserve.cuda.TestWeights.fp8;
import static dev.deepserve.cuda.TestWeights.random;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * Each kernel of the decode step against the CPU code it replaces, on every device this machine has (the emulator
 * everywhere, a GPU where present). Tolerances: elementwise kernels 1e-6 relative, reductions and products 1e-5 of the
 * output's magnitude (FP32 sums in another order), attention 1e-5; routing must pick the very same experts.
 */
class DeviceKernelsTest {

    static final CpuOps CPU = CpuOps.create(false, 1, false);

    static List<Devices.Named> devices() {
        return Devices.all();
    }

    @ParameterizedTest
    @MethodSource("devices")
    void rmsNormRopeSwigluResidualAndEmbedding(Devices.Named device) {
        try (Gpu gpu = device.open().get()) {
            DeviceKernels k = new DeviceKernels(gpu);
            int rows = 3;
            int n = 100; // not a multiple of the block
            float[] x = random(rows * n, 1);
            float[] w = random(n, 2);
            float[] expected = new float[rows * n];
            for (int r = 0; r < rows; r++) {
                CPU.rmsNorm(x, r * n, w, 1e-6f, expected, r * n, n);
            }
            long dx = gpu.upload(x);
            long dw = gpu.upload(w);
            long out = gpu.alloc(4L * rows * n);
            k.rmsNorm(dx, n, dw, 1e-6f, out, n, n, rows);
            float[] actual = new float[rows * n];
            gpu.read(out, actual);
            assertClose(expected, actual, 1e-5, "rms_norm");

            ModelConfig c = TinyCheckpoint.preset("tiny-v3");
            Rope rope = new Rope(c);
            rope.ensure(5000);
            int heads = 3;
            int head = 48;
            int offset = 32;
            int pairs = rope.pairs();
            int[] positions = {0, 17, 4999};
            float[] q = random(rows * heads * head, 3);
            float[] rotated = q.clone();
            for (int r = 0; r < rows; r++) {
                for (int h = 0; h < heads; h++) {
                    CPU.rope(rotated, (r * heads + h) * head + offset, rope.cos(), rope.sin(), positions[r] * pairs, pairs);
                }
            }
            long dq = gpu.upload(q);
            k.rope(dq, heads * head, heads, head, offset, pairs, gpu.upload(positions), gpu.upload(rope.cos()), gpu.upload(rope.sin()), rows);
            float[] got = new float[q.length];
            gpu.read(dq, got);
            assertClose(rotated, got, 1e-6, "rope_rows");

            float[] g = random(1000, 4);
            float[] u = random(1000, 5);
            float[] swiglu = g.clone();
            CPU.siluMul(swiglu, u, 1000);
            long dg = gpu.upload(g);
            k.siluMul(dg, gpu.upload(u), 1000);
            float[] gotG = new float[1000];
            gpu.read(dg, gotG);
            assertClose(swiglu, gotG, 1e-6, "silu_mul");

            float[] sum = g.clone();
            CPU.axpy(1f, u, 0, sum, 0, 1000);
            long ds = gpu.upload(g);
            k.addTo(ds, gpu.upload(u), 1000);
            gpu.read(ds, gotG);
            assertClose(sum, gotG, 1e-6, "add_to");

            Linear table = bf16(50, 40, 6);
            int[] ids = {49, 0, 7, 7};
            float[] rowsExpected = new float[ids.length * 40];
            for (int i = 0; i < ids.length; i++) {
                CPU.embedding(table.weight(), ids[i], rowsExpected, i * 40);
            }
            long e = gpu.alloc(4L * rowsExpected.length);
            k.embed("bf16", gpu.upload(table.weight().data()), 40, gpu.upload(ids), e, ids.length);
            float[] rowsGot = new float[rowsExpected.length];
            gpu.read(e, rowsGot);
            assertArrayEquals(rowsExpected, rowsGot, "embed_bf16 is exact");
        }
    }

    @ParameterizedTest
    @MethodSource("devices")
    void greedyPickTakesTheLowestIndexOnTies(Devices.Named device) {
        try (Gpu gpu = device.open().get()) {
            int cols = 1000;
            float[] l = random(3 * cols, 7);
            l[cols + 10] = 5f;
            l[cols + 900] = 5f; // a tie in row 1
            Arrays.fill(l, 2 * cols, 3 * cols, -1f); // row 2 all equal
            long out = gpu.alloc(12);
            new DeviceKernels(gpu).argmax(gpu.upload(l), cols, out, 3);
            int[] got = new int[3];
            gpu.read(out, got);
            for (int r = 0; r < 3; r++) {
                assertEquals(Sampler.argmax(Arrays.copyOfRange(l, r * cols, (r + 1) * cols)), got[r], "row " + r);
            }
            assertEquals(10, got[1]);
            assertEquals(0, got[2]);

            // ids that may never be picked are masked before the pick
            long logits = gpu.upload(l);
            DeviceKernels k = new DeviceKernels(gpu);
            k.maskColumns(logits, cols, gpu.upload(new int[] {10, 0, 1}), 3, 3);
            k.argmax(logits, cols, out, 3);
            gpu.read(out, got);
            assertEquals(900, got[1], "the tie's other half once id 10 is masked");
            assertEquals(2, got[2], "the lowest id left in an all-equal row");
            float[] masked = new float[3 * cols];
            gpu.read(logits, masked);
            assertEquals(Float.NEGATIVE_INFINITY, masked[cols + 10]);
        }
    }

    static ModelConfig routing(String preset, String method, int experts, int topK, int groups, int topkGroup) {
        ObjectNode j = TinyCheckpoint.preset(preset).toJson();
        j.put("topk_method", method).put("n_routed_experts", experts).put("num_experts_per_tok", topK)
                .put("n_group", groups).put("topk_group", topkGroup);
        return ModelConfig.parse(j);
    }

    @ParameterizedTest
    @MethodSource("devices")
    void routerPicksTheSameExpertsAsTheCpuGate(Devices.Named device) {
        ModelConfig[] configs = {
                routing("tiny-v3", "noaux_tc", 256, 8, 8, 4), // DeepSeek-V3's own routing shape
                routing("tiny-v3", "noaux_tc", 16, 4, 4, 2),
                routing("tiny-v2lite", "greedy", 64, 6, 1, 1), // V2-Lite: softmax, no groups, not normalised
                routing("tiny-v2lite", "group_limited_greedy", 160, 6, 8, 3), // V2: best groups by their maximum
        };
        try (Gpu gpu = device.open().get()) {
            DeviceKernels k = new DeviceKernels(gpu);
            for (ModelConfig c : configs) {
                int rows = 37;
                int experts = c.nRoutedExperts();
                float[] logits = random(rows * experts, experts);
                for (int i = 0; i < logits.length; i++) {
                    logits[i] *= 40; // spread the scores like a trained router's
                }
                float[] bias = c.isV3() ? random(experts, 99) : null;
                Gate gate = new Gate(c, bias);
                int method = switch (c.topkMethod()) {
                    case "greedy" -> 0;
                    case "noaux_tc" -> 2;
                    default -> 1;
                };
                long ids = gpu.alloc(4L * rows * c.numExpertsPerTok());
                long weights = gpu.alloc(4L * rows * c.numExpertsPerTok());
                k.route(gpu.upload(logits), rows, experts, bias == null ? 0 : gpu.upload(bias), c.nGroup(), c.topkGroup(),
                        c.numExpertsPerTok(), method, c.scoringFunc().equals("sigmoid"), c.normTopkProb(), c.isV3(),
                        (float) c.routedScalingFactor(), ids, weights);
                int[] gotIds = new int[rows * c.numExpertsPerTok()];
                float[] gotWeights = new float[gotIds.length];
                gpu.read(ids, gotIds);
                gpu.read(weights, gotWeights);
                for (int r = 0; r < rows; r++) {
                    Gate.Routing expected = gate.route(logits, r * experts);
                    int topK = c.numExpertsPerTok();
                    String what = c.topkMethod() + " " + experts + " experts, row " + r;
                    assertArrayEquals(expected.experts(), Arrays.copyOfRange(gotIds, r * topK, (r + 1) * topK), what);
                    assertClose(expected.weights(), Arrays.copyOfRange(gotWeights, r * topK, (r + 1) * topK), 1e-6, what);
                }
            }
        }
    }

    /** Rows × topK picks, distinct per row, with some experts picked by nobody. */
    static int[] picks(int rows, int topK, int experts, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        int[] ids = new int[rows * topK];
        for (int row = 0; row < rows; row++) {
            List<Integer> all = new ArrayList<>();
            for (int e = 0; e < experts - 2; e++) { // the last two experts stay idle
                all.add(e);
            }
            Collections.shuffle(all, new java.util.Random(r.nextLong()));
            for (int i = 0; i < topK; i++) {
                ids[row * topK + i] = all.get(i);
            }
        }
        return ids;
    }

    @ParameterizedTest
    @MethodSource("devices")
    void moePermutationGroupedExpertsAndCombineMatchPerTokenExperts(Devices.Named device) {
        int rows = 9;
        int experts = 8;
        int topK = 3;
        int hidden = 64;
        int inter = 40;
        Linear[][] w = new Linear[experts][];
        for (int e = 0; e < experts; e++) {
            w[e] = new Linear[] {fp8(inter, hidden, 10 + e), fp8(inter, hidden, 30 + e), fp8(hidden, inter, 50 + e)};
        }
        float[] x = random(rows * hidden, 8);
        float[] shared = random(rows * hidden, 9);
        int[] ids = picks(rows, topK, experts, 3);
        float[] weights = random(rows * topK, 4);
        // CPU: each token's picks in expert order, each expert's MLP run on that token alone, then the shared output
        float[] expected = new float[rows * hidden];
        for (int r = 0; r < rows; r++) {
            Integer[] order = {0, 1, 2};
            final int row = r;
            Arrays.sort(order, (a, b) -> Integer.compare(ids[row * topK + a], ids[row * topK + b]));
            for (int kk : order) {
                Linear[] m = w[ids[r * topK + kk]];
                float[] in = Arrays.copyOfRange(x, r * hidden, (r + 1) * hidden);
                float[] gg = new float[inter];
                float[] uu = new float[inter];
                CPU.matmul(m[0], in, gg, 1);
                CPU.matmul(m[1], in, uu, 1);
                CPU.siluMul(gg, uu, inter);
                float[] y = new float[hidden];
                CPU.matmul(m[2], gg, y, 1);
                CPU.axpy(weights[r * topK + kk], y, 0, expected, r * hidden, hidden);
            }
            CPU.axpy(1f, shared, r * hidden, expected, r * hidden, hidden);
        }
        try (Gpu gpu = device.open().get()) {
            DeviceKernels k = new DeviceKernels(gpu);
            long[][] tables = new long[3][experts];
            long[][] scales = new long[3][experts];
            for (int e = 0; e < experts; e++) {
                for (int p = 0; p < 3; p++) {
                    DeviceLinear d = DeviceLinear.upload(gpu, w[e][p]);
                    tables[p][e] = d.weight();
                    scales[p][e] = d.scale();
                }
            }
            int n = rows * topK;
            long dIds = gpu.upload(ids);
            long offsets = gpu.alloc(4L * (experts + 1));
            long slotOf = gpu.alloc(4L * n);
            long entryOf = gpu.alloc(4L * n);
            k.permute(dIds, n, experts, offsets, slotOf, entryOf);
            int[] off = new int[experts + 1];
            int[] slots = new int[n];
            int[] entries = new int[n];
            gpu.read(offsets, off);
            gpu.read(slotOf, slots);
            gpu.read(entryOf, entries);
            assertEquals(n, off[experts]);
            for (int i = 0; i < n; i++) {
                assertEquals(i, entries[slots[i]], "entryOf inverts slotOf");
                int e = ids[i];
                assertEquals(true, slots[i] >= off[e] && slots[i] < off[e + 1], "entry " + i + " sits in expert " + e + "'s rows");
            }
            assertEquals(off[experts - 2], off[experts], "idle experts own no rows");
            long xp = gpu.alloc(4L * n * hidden);
            long gp = gpu.alloc(4L * n * inter);
            long up = gpu.alloc(4L * n * inter);
            long yp = gpu.alloc(4L * n * hidden);
            long out = gpu.alloc(4L * rows * hidden);
            k.gather(gpu.upload(x), hidden, topK, entryOf, xp, n);
            k.moeGemm("fp8", gpu.upload(tables[0]), gpu.upload(scales[0]), experts, inter, hidden, 128, 128, xp, offsets, gp);
            k.moeGemm("fp8", gpu.upload(tables[1]), gpu.upload(scales[1]), experts, inter, hidden, 128, 128, xp, offsets, up);
            k.siluMul(gp, up, n * inter);
            k.moeGemm("fp8", gpu.upload(tables[2]), gpu.upload(scales[2]), experts, hidden, inter, 128, 128, gp, offsets, yp);
            k.combine(yp, hidden, dIds, gpu.upload(weights), slotOf, topK, gpu.upload(shared), out, rows);
            float[] got = new float[rows * hidden];
            gpu.read(out, got);
            assertClose(expected, got, 1e-5, "moe");
        }
    }

    @ParameterizedTest
    @MethodSource("devices")
    void splitKvAbsorbedAttentionOverPagedBlocksMatchesTheCpuMath(Devices.Named device) {
        for (int heads : new int[] {2, 11}) { // within one group of heads, and over two with a partial one
            for (int splitLen : new int[] {64, 300, 1024}) { // one tile per split; several tiles online; one split
                attention(device, heads, splitLen, KvPrecision.FLOAT32);
            }
        }
        attention(device, 11, 300, KvPrecision.BF16); // the BF16 cache: the same math over the rounded values
    }

    private void attention(Devices.Named device, int heads, int splitLen, KvPrecision precision) {
        int nope = 16;
        int ropeDim = 8;
        int vDim = 12;
        int rank = 48;
        int qkHead = nope + ropeDim;
        int stride = rank + ropeDim;
        int blockTokens = 16;
        int[] visible = {700, 1, 65}; // a long context over 11 splits, a first token, one past a block edge
        int rows = visible.length;
        float scale = 0.137f;
        Linear kvB = fp8(heads * (nope + vDim), rank, 20);
        // a cache of 64 blocks handed out in shuffled order, so every sequence's table is scattered
        int blocks = 64;
        List<Integer> order = new ArrayList<>();
        for (int b = 0; b < blocks; b++) {
            order.add(b);
        }
        Collections.shuffle(order, new java.util.Random(5));
        int tableStride = (700 + blockTokens - 1) / blockTokens;
        int[] tables = new int[rows * tableStride];
        int next = 0;
        for (int r = 0; r < rows; r++) {
            for (int b = 0; b < (visible[r] + blockTokens - 1) / blockTokens; b++) {
                tables[r * tableStride + b] = order.get(next++);
            }
        }
        float[] cache = random(blocks * blockTokens * stride, 21);
        short[] bf16 = new short[cache.length];
        for (int i = 0; i < cache.length; i++) {
            cache[i] *= 20;
            bf16[i] = Bf16.encode(cache[i]);
            if (precision == KvPrecision.BF16) {
                cache[i] = Bf16.decode(bf16[i]); // what the kernel reads
            }
        }
        float[] q = random(rows * heads * qkHead, 22);
        for (int i = 0; i < q.length; i++) {
            q[i] *= 20;
        }
        float[] expected = new float[rows * heads * vDim];
        for (int r = 0; r < rows; r++) {
            for (int h = 0; h < heads; h++) {
                float[] qLat = new float[rank];
                CPU.matvecRowsTransposed(kvB, h * (nope + vDim), nope, q, (r * heads + h) * qkHead, qLat, 0);
                float[] scores = new float[visible[r]];
                for (int t = 0; t < visible[r]; t++) {
                    int at = (tables[r * tableStride + t / blockTokens] * blockTokens + t % blockTokens) * stride;
                    scores[t] = (CPU.dot(qLat, 0, cache, at, rank) + CPU.dot(q, (r * heads + h) * qkHead + nope, cache, at + rank, ropeDim)) * scale;
                }
                CPU.softmax(scores, 0, scores.length);
                float[] oLat = new float[rank];
                for (int t = 0; t < visible[r]; t++) {
                    int at = (tables[r * tableStride + t / blockTokens] * blockTokens + t % blockTokens) * stride;
                    CPU.axpy(scores[t], cache, at, oLat, 0, rank);
                }
                CPU.matvecRows(kvB, h * (nope + vDim) + nope, vDim, oLat, 0, expected, (r * heads + h) * vDim);
            }
        }
        try (Gpu gpu = device.open().get()) {
            DeviceKernels k = new DeviceKernels(gpu);
            DeviceLinear dkvB = DeviceLinear.upload(gpu, kvB);
            int splits = (700 + splitLen - 1) / splitLen;
            long dq = gpu.upload(q);
            long qLat = gpu.alloc(4L * rows * heads * rank);
            long partO = gpu.alloc(4L * rows * heads * splits * rank);
            long partML = gpu.alloc(8L * rows * heads * splits);
            long oLat = gpu.alloc(4L * rows * heads * rank);
            long out = gpu.alloc(4L * rows * heads * vDim);
            k.absorbQuery(dkvB, dq, heads, nope, vDim, qkHead, qLat, rows);
            long dCache = gpu.alloc((long) precision.bytes() * cache.length);
            if (precision == KvPrecision.BF16) {
                gpu.write(dCache, bf16, 0, bf16.length);
            } else {
                gpu.write(dCache, cache);
            }
            k.attend(qLat, dq, heads, qkHead, nope, rank, ropeDim, dCache, precision, gpu.upload(tables), gpu.upload(new int[] {0, 1, 2}),
                    tableStride, blockTokens, gpu.upload(visible), scale, splitLen, splits, partO, partML, rows);
            k.combineSplits(partO, partML, splits, rank, oLat, heads, rows);
            k.absorbOutput(dkvB, oLat, heads, nope, vDim, out, rows);
            float[] got = new float[expected.length];
            gpu.read(out, got);
            assertClose(expected, got, 1e-5, "absorbed split-KV attention, " + precision.label() + " cache, " + heads + " heads, splits of " + splitLen);
        }
    }
}
