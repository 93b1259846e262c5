package dev.deepserve.model.engine;

import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.weights.CheckpointWeights;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.SafetensorsFormatException;
import dev.deepserve.model.weights.Tensor;

/**
 * A projection weight {@code [out, in]} as the checkpoint stores it. FP8 weights keep their E4M3 codes and their
 * {@code weight_scale_inv} block scales (one float per {@code blockRows × blockCols} block, DeepSeek-V3 §3.3); the
 * backend dequantizes block by block inside the matmul.
 */
public record Linear(String name, Tensor weight, Tensor scaleInv, int out, int in, int blockRows, int blockCols) {

    public boolean fp8() {
        return weight.dtype() == DType.F8_E4M3;
    }

    /** The scale that multiplies the FP8 code at (row, col). */
    public float scale(int row, int col) {
        return scaleInv.get((long) (row / blockRows) * scaleColumns() + col / blockCols);
    }

    public int scaleColumns() {
        return (in + blockCols - 1) / blockCols;
    }

    /** Bytes read from the checkpoint for one pass over this weight. */
    public long bytes() {
        return weight.numel() * weight.dtype().bytes() + (scaleInv == null ? 0 : scaleInv.numel() * 4);
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
        return new Linear(prefix, weight, scale, out, in, br, bc);
    }
}
