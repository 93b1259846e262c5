package dev.deepserve.model.engine;

import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.ops.TensorOps;
import dev.deepserve.model.weights.CheckpointWeights;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.SafetensorsFormatException;
import dev.deepserve.model.weights.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * A projection weight {@code [out, in]} as the checkpoint stores it. FP8 weights keep their E4M3 codes and their
 * {@code weight_scale_inv} block scales (one float per {@code blockRows × blockCols} block, DeepSeek-V3 §3.3); the
 * backend dequantizes block by block inside the matmul.
 */
public record Linear(String name, Tensor weight, Tensor scaleInv, int out, int in, int blockRows, int blockCols, boolean nanCodes) {

    /** A weight without NaN codes (BF16/F32, or FP8 already checked). */
    public Linear(String name, Tensor weight, Tensor scaleInv, int out, int in, int blockRows, int blockCols) {
        this(name, weight, scaleInv, out, in, blockRows, blockCols, false);
    }

    public boolean fp8() {
        return weight.dtype() == DType.F8_E4M3;
    }

    private static final ValueLayout.OfLong LONG = ValueLayout.JAVA_LONG_UNALIGNED;

    public int scaleColumns() {
        return (in + blockCols - 1) / blockCols;
    }

    /** Bytes read from the checkpoint for one pass over this weight. */
    public long bytes() {
        return weight.numel() * weight.dtype().bytes() + (scaleInv == null ? 0 : scaleInv.numel() * 4);
    }

    /** {@link #load(CheckpointWeights, ModelConfig, String, int, int)}, kept where {@code ops} reads it fastest ({@link TensorOps#place}). */
    public static Linear load(CheckpointWeights w, ModelConfig config, String prefix, int out, int in, TensorOps ops) {
        return ops.place(load(w, config, prefix, out, in));
    }

    /**
     * {@link #load(CheckpointWeights, ModelConfig, String, int, int, TensorOps)} for a weight read only through
     * {@link TensorOps#matmul} (projections, dense MLPs), which {@code ops} may first repack ({@link TensorOps#prepare}).
     */
    public static Linear loadForMatmul(CheckpointWeights w, ModelConfig config, String prefix, int out, int in, TensorOps ops) {
        Linear l = load(w, config, prefix, out, in);
        ops.prepare(l);
        return ops.place(l);
    }

    /** {@link #loadForMatmul} for an expert's weight, repacked at its first product ({@link TensorOps#prepareOnFirstUse}). */
    public static Linear loadExpert(CheckpointWeights w, ModelConfig config, String prefix, int out, int in, TensorOps ops) {
        Linear l = load(w, config, prefix, out, in);
        ops.prepareOnFirstUse(l);
        return ops.place(l);
    }

    /** Loads {@code <prefix>.weight} (and its scales when FP8) with the shape the config implies. */
    public static Linear load(CheckpointWeights w, ModelConfig config, String prefix, int out, int in) {
        String name = prefix + ".weight";
        Tensor weight = w.tensor(name, out, in);
        if (weight.dtype() != DType.F8_E4M3) {
            return new Linear(prefix, weight, null, out, in, 1, 1);
        }
        if (config.quantization() == null) {
            throw new SafetensorsFormatException("tensor " + name + " is F8_E4M3 but config.json has no quantization_config");
        }
        int br = config.quantization().blockRows();
        int bc = config.quantization().blockCols();
        Tensor scale = w.tensor(name + "_scale_inv", (out + br - 1) / br, (in + bc - 1) / bc);
        if (scale.dtype() != DType.F32) {
            throw new SafetensorsFormatException("tensor " + name + "_scale_inv is " + scale.dtype() + ", expected F32");
        }
        return new Linear(prefix, weight, scale, out, in, br, bc, hasNanCodes(weight));
    }

    /**
     * Whether any element is an E4M3 NaN (S.1111.111). A trained checkpoint has none; one that does still computes
     * exactly (NaN propagates) on the slower path that decodes every code by table.
     */
    public static boolean hasNanCodes(Tensor fp8) {
        MemorySegment data = fp8.data();
        long n = data.byteSize();
        long i = 0;
        for (; i + 8 <= n; i += 8) {
            long v = data.get(LONG, i);
            // a byte is NaN when its low 7 bits are all ones: (b & 0x7F) + 1 carries into bit 7 exactly then
            long low = v & 0x7F7F7F7F7F7F7F7FL;
            if (((low + 0x0101010101010101L) & 0x8080808080808080L) != 0) {
                return true;
            }
        }
        for (; i < n; i++) {
            if ((data.get(ValueLayout.JAVA_BYTE, i) & 0x7F) == 0x7F) {
                return true;
            }
        }
        return false;
    }
}
