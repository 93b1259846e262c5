package dev.deepserve.cuda;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.engine.ops.CpuOps;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

import java.util.List;
import java.util.Optional;

import static dev.deepserve.cuda.TestWeights.assertClose;
import static dev.deepserve.cuda.TestWeights.bf16;
import static dev.deepserve.cuda.TestWeights.f32;
import static dev.deepserve.cuda.TestWeights.fp8;
import static dev.deepserve.cuda.TestWeights.random;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The tensor-ops backend on a device against the CPU backend: FP8 with 128×128 block scales (partial blocks at the
 * edges), BF16 and F32 weights, batches below, at and above the kernel's 8-row chunk. Tolerance: 1e-5 relative to the
 * output's magnitude (both accumulate in FP32, in different orders).
 */
class CudaOpsTest {

    static List<Devices.Named> devices() {
        return Devices.all();
    }

    @Test
    void theProbeSaysWhyTheBackendCannotRunInsteadOfFailing() {
        Optional<String> why = CudaOps.unavailable();
        // on a GPU machine this is empty; elsewhere it names what is missing (PTX, driver or device) without throwing
        why.ifPresent(reason -> assertTrue(reason.contains("nvcc") || reason.contains("driver") || reason.contains("device"), reason));
        why.ifPresent(reason -> assertTrue(reason.lines().count() == 1 && reason.length() < 250, "one short line for the log: " + reason));
    }

    @ParameterizedTest
    @MethodSource("devices")
    void productsOnTheDeviceMatchTheCpuBackend(Devices.Named device) {
        CpuOps cpu = CpuOps.create(false, 1, false);
        try (CudaOps gpu = new CudaOps(device.open().get(), CpuOps.best())) {
            Linear[] weights = {fp8(300, 200, 1), fp8(256, 384, 2), bf16(129, 257, 3), f32(64, 96, 4)};
            for (Linear w : weights) {
                for (int batch : new int[] {1, 3, 8, 11}) {
                    float[] x = random(batch * w.in(), batch * 31L + w.out());
                    float[] expected = new float[batch * w.out()];
                    float[] actual = new float[batch * w.out()];
                    cpu.matmul(w, x, expected, batch);
                    gpu.matmul(w, x, actual, batch);
                    assertClose(expected, actual, 1e-5, w.weight().dtype() + " " + w.out() + "×" + w.in() + " batch " + batch);
                }
            }
            assertTrue(gpu.describe().startsWith("cuda ("), gpu.describe());
        }
    }
}
