package dev.deepserve.cuda;

import java.util.ArrayList;
import java.util.List;
import java.util.function.Supplier;

import static org.junit.jupiter.api.Assertions.fail;

/**
 * The devices the GPU tests run on: the CPU emulator of the kernels wherever it was built (always in CI, which
 * installs g++), and a real CUDA GPU when this machine has one. On CI a missing emulator fails rather than skips.
 */
final class Devices {

    record Named(String name, Supplier<Gpu> open) {
        @Override
        public String toString() {
            return name;
        }
    }

    private Devices() {
    }

    static List<Named> all() {
        List<Named> out = new ArrayList<>();
        if (EmulatedGpu.library().isPresent()) {
            out.add(new Named("emulator", EmulatedGpu::new));
        } else if (System.getenv("CI") != null) {
            fail("the CUDA emulator library was not built on CI (g++ missing?): " + System.getProperty("deepserve.cuda.emulator"));
        }
        if (JCudaGpu.unavailable().isEmpty()) {
            out.add(new Named("cuda", () -> new JCudaGpu(0)));
        }
        return out;
    }
}
