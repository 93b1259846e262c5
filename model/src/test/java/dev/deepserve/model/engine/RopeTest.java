package dev.deepserve.model.engine;

import dev.deepserve.model.tiny.TinyCheckpoint;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * YaRN for tiny-v3 (rope dim 16, θ 10000, factor 40, original context 4096, β_fast 32, β_slow 1), by hand:
 * correction range low = floor(16·ln(4096/(32·2π)) / (2·ln 10000)) = floor(2.618) = 2,
 * high = ceil(16·ln(4096/(1·2π)) / (2·ln 10000)) = ceil(5.628) = 6; ramp r_i = clamp((i − 2)/4, 0, 1);
 * θ_i = 10000^(−i/8)·(1 − r_i) + 10000^(−i/8)/40·r_i.
 */
class RopeTest {

    @Test
    void yarnFrequencyTableMatchesTheFormulaWorkedByHand() {
        double[] expected = {
                1.0,                       // i=0: r=0, original
                0.31622776601683794,       // i=1: 10000^(-1/8)
                0.1,                       // i=2: r=0
                0.023914724805023366,      // i=3: r=1/4: 0.0316227766·(0.75 + 0.25/40)
                0.005125,                  // i=4: r=1/2: 0.01·(0.5 + 0.5/40)
                0.000849862121170252,      // i=5: r=3/4
                2.5e-05,                   // i=6: r=1: 0.001/40
                7.905694150420949e-06};    // i=7: r=1
        double[] actual = Rope.inverseFrequencies(TinyCheckpoint.preset("tiny-v3"));
        assertEquals(expected.length, actual.length);
        for (int i = 0; i < expected.length; i++) {
            assertEquals(expected[i], actual[i], expected[i] * 1e-12, "θ_" + i);
        }
    }

    @Test
    void softmaxScaleCarriesMscaleSquared() {
        // mscale = 0.1·1·ln 40 + 1 = 1.3688879454113936; scale = mscale² / sqrt(32 + 16)
        assertEquals(0.2704675577217602, new Rope(TinyCheckpoint.preset("tiny-v3")).softmaxScale(), 1e-12);
        // V2-Lite: mscale = mscale_all_dim = 0.707, so cos/sin are unscaled and the softmax scale uses 0.707
        double m = 0.1 * 0.707 * Math.log(40) + 1;
        assertEquals(m * m / Math.sqrt(48), new Rope(TinyCheckpoint.preset("tiny-v2lite")).softmaxScale(), 1e-12);
    }

    @Test
    void rotationAtPositionZeroIsIdentityAndPairsAreInterleaved() {
        Rope rope = new Rope(TinyCheckpoint.preset("tiny-v3"));
        rope.ensure(3);
        float[] x = {1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0};
        dev.deepserve.model.engine.ops.CpuOps ops = dev.deepserve.model.engine.ops.CpuOps.create(false, 1, false);
        float[] y = x.clone();
        ops.rope(y, 0, rope.cos(), rope.sin(), 0, rope.pairs());
        assertEquals(java.util.Arrays.toString(x), java.util.Arrays.toString(y));
        ops.rope(y, 0, rope.cos(), rope.sin(), 2 * rope.pairs(), rope.pairs());
        // pair 0 = (1, 0) rotated by 2·θ_0 = 2 rad → (cos 2, sin 2)
        assertEquals(Math.cos(2), y[0], 1e-6);
        assertEquals(Math.sin(2), y[1], 1e-6);
    }
}
