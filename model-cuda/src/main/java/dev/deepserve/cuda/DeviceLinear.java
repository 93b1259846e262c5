package dev.deepserve.cuda;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.weights.DType;

/**
 * A projection weight on the device, in the checkpoint's format: {@code kernel} is the suffix of the kernels that
 * read it ({@code f32}, {@code bf16} or {@code fp8} with its block scales at {@code scale}).
 */
public record DeviceLinear(String kernel, long weight, long scale, int rows, int cols, int blockRows, int blockCols, long bytes) {

    /** Uploads {@code w} (weight and scales) to the device. */
    public static DeviceLinear upload(Gpu gpu, Linear w) {
        String kernel = kernelOf(w);
        long weight = gpu.upload(w.weight().data());
        long scale = w.fp8() ? gpu.upload(w.scaleInv().data()) : 0;
        return new DeviceLinear(kernel, weight, scale, w.out(), w.in(), w.blockRows(), w.blockCols(), w.bytes());
    }

    /** The kernel suffix for {@code w}'s format; F16 and FP8 with non-F32 scales have no kernels. */
    public static String kernelOf(Linear w) {
        DType t = w.weight().dtype();
        return switch (t) {
            case F32 -> "f32";
            case BF16 -> "bf16";
            case F8_E4M3 -> {
                if (w.scaleInv() == null || w.scaleInv().dtype() != DType.F32) {
                    throw new UnsupportedOperationException(w.name() + ": FP8 weights need F32 block scales on the GPU");
                }
                yield "fp8";
            }
            default -> throw new UnsupportedOperationException(w.name() + ": no GPU kernels for " + t + " weights");
        };
    }

    /** Whether the GPU kernels read {@code w}'s format. */
    public static boolean supported(Linear w) {
        try {
            kernelOf(w);
            return true;
        } catch (UnsupportedOperationException e) {
            return false;
        }
    }

    /** Frees the weight (and its scales) on the device. */
    public void free(Gpu gpu) {
        gpu.free(weight);
        if (scale != 0) {
            gpu.free(scale);
        }
    }
}
