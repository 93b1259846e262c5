package dev.deepserve.model.engine;

import dev.deepserve.model.config.ModelConfig;

/**
 * Rotary position embedding for the {@code qk_rope_head_dim} part of queries and keys, with YaRN context extension
 * (DeepSeek-V2 paper appendix B, config {@code rope_scaling}). Frequencies below the correction range keep their
 * original value, those above it are divided by {@code factor}, and a linear ramp blends the ones between. Cosines and
 * sines are scaled by {@code mscale(factor, mscale) / mscale(factor, mscale_all_dim)}; the attention softmax scale gets
 * {@code mscale(factor, mscale_all_dim)²} (see {@link #softmaxScale}).
 */
public final class Rope {

    private final int pairs;
    private final double[] invFreq;
    private final double cosSinScale;
    private final double softmaxScale;
    private volatile float[] cos = new float[0];
    private volatile float[] sin = new float[0];
    private int positions;

    public Rope(ModelConfig config) {
        int dim = config.qkRopeHeadDim();
        this.pairs = dim / 2;
        this.invFreq = inverseFrequencies(config);
        ModelConfig.RopeScaling y = config.ropeScaling();
        double scale = 1 / Math.sqrt(config.qkHeadDim());
        if (y == null) {
            this.cosSinScale = 1;
            this.softmaxScale = scale;
        } else {
            this.cosSinScale = mscale(y.factor(), y.mscale()) / mscale(y.factor(), y.mscaleAllDim());
            double m = y.mscaleAllDim() == 0 ? 1 : mscale(y.factor(), y.mscaleAllDim());
            this.softmaxScale = scale * m * m;
        }
    }

    /** θ_i for i < rope_dim/2, after YaRN's per-frequency blend when rope_scaling is set. */
    public static double[] inverseFrequencies(ModelConfig config) {
        int dim = config.qkRopeHeadDim();
        double base = config.ropeTheta();
        double[] freq = new double[dim / 2];
        for (int i = 0; i < dim / 2; i++) {
            freq[i] = 1.0 / Math.pow(base, 2.0 * i / dim);
        }
        ModelConfig.RopeScaling y = config.ropeScaling();
        if (y == null) {
            return freq;
        }
        double low = Math.max(Math.floor(correctionDim(y.betaFast(), dim, base, y.originalMaxPositionEmbeddings())), 0);
        double high = Math.min(Math.ceil(correctionDim(y.betaSlow(), dim, base, y.originalMaxPositionEmbeddings())), dim - 1);
        if (low == high) {
            high += 0.001;
        }
        for (int i = 0; i < dim / 2; i++) {
            double ramp = Math.clamp((i - low) / (high - low), 0.0, 1.0);
            double extrapolation = 1 - ramp;
            freq[i] = freq[i] / y.factor() * (1 - extrapolation) + freq[i] * extrapolation;
        }
        return freq;
    }

    /** The dimension index at which a frequency completes {@code rotations} turns over the original context. */
    static double correctionDim(double rotations, int dim, double base, int originalMax) {
        return dim * Math.log(originalMax / (rotations * 2 * Math.PI)) / (2 * Math.log(base));
    }

    /** YaRN's attention temperature: {@code 0.1·m·ln(factor) + 1}, or 1 when not extending. */
    public static double mscale(double factor, double m) {
        return factor <= 1 ? 1.0 : 0.1 * m * Math.log(factor) + 1.0;
    }

    /** {@code 1/sqrt(qk_head_dim)}, times YaRN's mscale² when extending. */
    public double softmaxScale() {
        return softmaxScale;
    }

    public int pairs() {
        return pairs;
    }

    /** Makes the tables cover positions {@code [0, n)}; call before using {@link #cos()} / {@link #sin()} beyond them. */
    public synchronized void ensure(int n) {
        if (n <= positions) {
            return;
        }
        int size = Math.max(n, positions * 2);
        float[] c = java.util.Arrays.copyOf(cos, size * pairs);
        float[] s = java.util.Arrays.copyOf(sin, size * pairs);
        for (int p = positions; p < size; p++) {
            for (int i = 0; i < pairs; i++) {
                double angle = p * invFreq[i];
                c[p * pairs + i] = (float) (Math.cos(angle) * cosSinScale);
                s[p * pairs + i] = (float) (Math.sin(angle) * cosSinScale);
            }
        }
        cos = c;
        sin = s;
        positions = size;
    }

    /** Cosines, {@code [position, pair]}. */
    public float[] cos() {
        return cos;
    }

    public float[] sin() {
        return sin;
    }
}
