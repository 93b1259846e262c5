package dev.deepserve.model.engine.ops;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * The index of the largest of n floats — the first one when several tie, index 0 when all are NaN or the first is
 * NaN, exactly as a plain {@code l[i] > l[best]} scan decides — without copying them. Over a 129K vocabulary the
 * vector path finds the maximum with lane-wise max and then the first lane equal to it; the scan's answer is kept
 * for NaN logits, where max and equality disagree with it.
 */
public final class Argmax {

    private static final boolean VECTOR = CpuOps.vectorAvailable();

    private Argmax() {
    }

    public static int of(float[] l, int off, int n) {
        if (n <= 0) {
            throw new IllegalArgumentException("argmax of no values");
        }
        return VECTOR && n >= 64 ? Lanes.of(l, off, n) : scan(l, off, n);
    }

    /** The reference: the first index whose value no later value exceeds. */
    static int scan(float[] l, int off, int n) {
        int best = 0;
        for (int i = 1; i < n; i++) {
            if (l[off + i] > l[off + best]) {
                best = i;
            }
        }
        return best;
    }

    /** Loaded only when the Vector API module is present. */
    private static final class Lanes {
        private static final VectorSpecies<Float> F = FloatVector.SPECIES_PREFERRED;

        static int of(float[] l, int off, int n) {
            int full = n - n % F.length();
            FloatVector m = FloatVector.fromArray(F, l, off);
            for (int i = F.length(); i < full; i += F.length()) {
                m = m.max(FloatVector.fromArray(F, l, off + i));
            }
            float max = m.reduceLanes(VectorOperators.MAX);
            for (int i = full; i < n; i++) {
                max = Math.max(max, l[off + i]);
            }
            if (Float.isNaN(max)) {
                return scan(l, off, n);
            }
            for (int i = 0; i < full; i += F.length()) {
                var eq = FloatVector.fromArray(F, l, off + i).compare(VectorOperators.EQ, max);
                if (eq.anyTrue()) {
                    return i + eq.firstTrue();
                }
            }
            for (int i = full; i < n; i++) {
                if (l[off + i] == max) {
                    return i;
                }
            }
            return scan(l, off, n);
        }
    }
}
