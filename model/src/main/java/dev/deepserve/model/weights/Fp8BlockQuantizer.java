package dev.deepserve.model.weights;

/**
 * Block-wise FP8 quantization of a row-major [rows, cols] weight (DeepSeek-V3 §3.3): each blockRows×blockCols tile,
 * edge tiles included, gets one float scale = amax/448, stored as {@code weight_scale_inv} so that
 * {@code weight = fp8 * scale_inv}.
 */
public final class Fp8BlockQuantizer {

    private Fp8BlockQuantizer() {
    }

    public record Quantized(byte[] values, float[] scaleInv, int scaleRows, int scaleCols) {
    }

    public static Quantized quantize(float[] w, int rows, int cols, int blockRows, int blockCols) {
        int sr = (rows + blockRows - 1) / blockRows;
        int sc = (cols + blockCols - 1) / blockCols;
        float[] scales = new float[sr * sc];
        byte[] q = new byte[rows * cols];
        for (int br = 0; br < sr; br++) {
            for (int bc = 0; bc < sc; bc++) {
                int r0 = br * blockRows, r1 = Math.min(rows, r0 + blockRows);
                int c0 = bc * blockCols, c1 = Math.min(cols, c0 + blockCols);
                float amax = 0;
                for (int r = r0; r < r1; r++) {
                    for (int c = c0; c < c1; c++) {
                        amax = Math.max(amax, Math.abs(w[r * cols + c]));
                    }
                }
                float scale = amax == 0 ? 1f : amax / Fp8E4M3.MAX;
                scales[br * sc + bc] = scale;
                for (int r = r0; r < r1; r++) {
                    for (int c = c0; c < c1; c++) {
                        q[r * cols + c] = Fp8E4M3.encode(w[r * cols + c] / scale);
                    }
                }
            }
        }
        return new Quantized(q, scales, sr, sc);
    }
}
