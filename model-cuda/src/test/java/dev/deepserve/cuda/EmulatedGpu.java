package dev.deepserve.cuda;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;

/**
 * The kernels compiled for the CPU (src/test/emu, built by the cuda-emulator profile), behind the same {@link Gpu}
 * interface as a real device: device memory is native memory and a launch calls {@code emu_<kernel>} with the
 * argument block the CUDA driver would get. Copies are bounds-checked against the allocations.
 */
public final class EmulatedGpu implements Gpu {

    private static final Object LOCK = new Object(); // the emulator's scheduler is one global

    /** The built emulator library, or empty with the reason. */
    public static Optional<Path> library() {
        String p = System.getProperty("deepserve.cuda.emulator");
        return p != null && Files.isRegularFile(Path.of(p)) ? Optional.of(Path.of(p)) : Optional.empty();
    }

    private final Arena libraryArena = Arena.ofShared();
    private final SymbolLookup lookup;
    private final MethodHandle error;
    private final Map<String, MethodHandle> kernels = new HashMap<>();
    private final TreeMap<Long, MemorySegment> allocations = new TreeMap<>();
    private final Map<Long, Arena> arenas = new HashMap<>();

    public EmulatedGpu() {
        Path lib = library().orElseThrow(() -> new IllegalStateException("the CUDA emulator library was not built (needs g++)"));
        this.lookup = SymbolLookup.libraryLookup(lib, libraryArena);
        this.error = Linker.nativeLinker().downcallHandle(lookup.find("emu_error").orElseThrow(), FunctionDescriptor.of(ValueLayout.ADDRESS));
    }

    @Override
    public String name() {
        return "CPU emulator";
    }

    @Override
    public synchronized long alloc(long bytes) {
        Arena a = Arena.ofShared();
        MemorySegment s = a.allocate(Math.max(bytes, 4), 256);
        allocations.put(s.address(), s);
        arenas.put(s.address(), a);
        return s.address();
    }

    @Override
    public synchronized void free(long address) {
        Arena a = arenas.remove(address);
        if (a == null) {
            throw new IllegalArgumentException("not an allocation: 0x" + Long.toHexString(address));
        }
        allocations.remove(address);
        a.close();
    }

    private synchronized MemorySegment at(long address, long bytes) {
        Map.Entry<Long, MemorySegment> e = allocations.floorEntry(address);
        if (e == null || address - e.getKey() + bytes > e.getValue().byteSize()) {
            throw new IndexOutOfBoundsException(bytes + " bytes at 0x" + Long.toHexString(address) + " are outside every allocation");
        }
        return e.getValue().asSlice(address - e.getKey(), bytes);
    }

    @Override
    public void write(long dst, float[] src, int off, int n) {
        MemorySegment.copy(src, off, at(dst, 4L * n), ValueLayout.JAVA_FLOAT, 0, n);
    }

    @Override
    public void write(long dst, int[] src) {
        MemorySegment.copy(src, 0, at(dst, 4L * src.length), ValueLayout.JAVA_INT, 0, src.length);
    }

    @Override
    public void write(long dst, long[] src) {
        MemorySegment.copy(src, 0, at(dst, 8L * src.length), ValueLayout.JAVA_LONG, 0, src.length);
    }

    @Override
    public void write(long dst, short[] src, int off, int n) {
        MemorySegment.copy(src, off, at(dst, 2L * n), ValueLayout.JAVA_SHORT, 0, n);
    }

    @Override
    public void write(long dst, MemorySegment src) {
        at(dst, src.byteSize()).copyFrom(src);
    }

    @Override
    public void read(long src, float[] dst, int off, int n) {
        MemorySegment.copy(at(src, 4L * n), ValueLayout.JAVA_FLOAT, 0, dst, off, n);
    }

    @Override
    public void read(long src, short[] dst, int off, int n) {
        MemorySegment.copy(at(src, 2L * n), ValueLayout.JAVA_SHORT, 0, dst, off, n);
    }

    @Override
    public void read(long src, int[] dst) {
        MemorySegment.copy(at(src, 4L * dst.length), ValueLayout.JAVA_INT, 0, dst, 0, dst.length);
    }

    @Override
    public void launch(String kernel, int gridX, int gridY, int gridZ, int blockThreads, int sharedBytes, Object... args) {
        MethodHandle h;
        synchronized (this) {
            h = kernels.computeIfAbsent(kernel, k -> Linker.nativeLinker().downcallHandle(
                    lookup.find("emu_" + k).orElseThrow(() -> new IllegalArgumentException("no kernel " + k + " in the emulator")),
                    FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT,
                            ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.ADDRESS)));
        }
        try (Arena call = Arena.ofConfined()) {
            MemorySegment params = call.allocate(ValueLayout.ADDRESS, Math.max(1, args.length));
            for (int i = 0; i < args.length; i++) {
                MemorySegment cell = call.allocate(8, 8);
                switch (args[i]) {
                    case Long v -> cell.set(ValueLayout.JAVA_LONG, 0, v);
                    case Integer v -> cell.set(ValueLayout.JAVA_INT, 0, v);
                    case Float v -> cell.set(ValueLayout.JAVA_FLOAT, 0, v);
                    default -> throw new IllegalArgumentException("kernel argument " + i + " of " + kernel + " is a " + args[i].getClass().getSimpleName());
                }
                params.setAtIndex(ValueLayout.ADDRESS, i, cell);
            }
            int rc;
            synchronized (LOCK) {
                rc = (int) h.invokeExact(gridX, gridY, gridZ, blockThreads, 1, 1, sharedBytes, params);
                if (rc != 0) {
                    MemorySegment why = (MemorySegment) error.invokeExact();
                    throw new IllegalStateException(kernel + ": " + why.reinterpret(1000).getString(0));
                }
            }
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(t);
        }
    }

    @Override
    public void synchronize() {
        // launches run to completion on the calling thread
    }

    @Override
    public synchronized void close() {
        for (Arena a : arenas.values()) {
            a.close();
        }
        arenas.clear();
        allocations.clear();
    }
}
