package dev.deepserve.model.engine.ops;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;

/**
 * Zeroed off-heap memory for large repacked weights, asking Linux for transparent huge pages ({@code madvise
 * MADV_HUGEPAGE}, which this kernel's {@code madvise} THP mode requires): one page fault per 2 MiB instead of per
 * 4 KiB when the weight is first written — in a microVM each 4 KiB fault costs ~16 µs, so a 66 MB lm_head took 0.25 s
 * to allocate — and one TLB entry per 2 MiB when every step sweeps it. Elsewhere, or if the calls fail, it is an
 * ordinary allocation. Freed when the segment is no longer reachable.
 */
final class HugePageMemory {

    private static final long PAGE = 2L << 20;
    private static final int PROT_READ_WRITE = 0x1 | 0x2;
    private static final int MAP_PRIVATE_ANONYMOUS = 0x02 | 0x20;
    private static final int MADV_HUGEPAGE = 14;
    private static final MethodHandle MMAP;
    private static final MethodHandle MADVISE;
    private static final MethodHandle MUNMAP;

    static {
        MethodHandle mmap = null;
        MethodHandle madvise = null;
        MethodHandle munmap = null;
        if (System.getProperty("os.name", "").startsWith("Linux")) {
            try {
                Linker linker = Linker.nativeLinker();
                var libc = linker.defaultLookup();
                mmap = linker.downcallHandle(libc.find("mmap").orElseThrow(), FunctionDescriptor.of(ValueLayout.ADDRESS,
                        ValueLayout.ADDRESS, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG));
                madvise = linker.downcallHandle(libc.find("madvise").orElseThrow(),
                        FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT));
                munmap = linker.downcallHandle(libc.find("munmap").orElseThrow(),
                        FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_LONG));
            } catch (RuntimeException | Error e) {
                mmap = null; // no native access here: ordinary allocations
            }
        }
        MMAP = mmap;
        MADVISE = madvise;
        MUNMAP = munmap;
    }

    private HugePageMemory() {
    }

    /** {@code bytes} of zeroed memory, 64-byte aligned at least. */
    static MemorySegment allocate(long bytes) {
        MemorySegment huge = bytes >= PAGE ? mapHuge(bytes) : null;
        return huge != null ? huge : Arena.ofAuto().allocate(bytes, 64);
    }

    /** {@code bytes} (at least a huge page) of zeroed memory on 2 MiB boundaries, advised huge; null where mmap fails. */
    private static MemorySegment mapHuge(long bytes) {
        if (MMAP != null) {
            long size = Math.ceilDiv(bytes, PAGE) * PAGE;
            MemorySegment mapped = null;
            try {
                // one huge page more than needed, then the unaligned head and the tail given back: the kept range
                // starts on a 2 MiB boundary, so every page of it can be huge
                mapped = (MemorySegment) MMAP.invokeExact(MemorySegment.NULL, size + PAGE, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0L);
                if (mapped.address() != -1L) {
                    long start = Math.ceilDiv(mapped.address(), PAGE) * PAGE;
                    long head = start - mapped.address();
                    MemorySegment at = MemorySegment.ofAddress(start);
                    if (head > 0) {
                        unmap(mapped.reinterpret(head));
                    }
                    if (PAGE - head > 0) {
                        unmap(MemorySegment.ofAddress(start + size).reinterpret(PAGE - head));
                    }
                    mapped = at.reinterpret(size);
                    int ignored = (int) MADVISE.invokeExact(mapped, size, MADV_HUGEPAGE); // a refusal only loses the speed-up
                    return mapped.reinterpret(size, Arena.ofAuto(), HugePageMemory::unmap).asSlice(0, bytes);
                }
            } catch (Throwable e) {
                if (mapped != null && mapped.address() != -1L && mapped.byteSize() == size) {
                    unmap(mapped); // aligned and mapped but not handed out: give it back, then allocate ordinarily
                }
            }
        }
        return null;
    }

    /**
     * Whether this kernel hands out transparent huge pages to {@code madvise}d memory (its mode is {@code always} or
     * {@code madvise}); elsewhere a copy would cost memory and gain nothing.
     */
    static boolean available() {
        return MMAP != null && TransparentHugePages.offered();
    }

    /**
     * Room for many weights on shared huge pages: each copy is a 64-byte-aligned slice of a chunk of at least
     * {@link #SLAB_CHUNK}, so weights smaller than a huge page (an expert's 1 MiB matrices) still sit on one. A chunk is
     * freed once no slice of it is reachable. Not thread-safe: callers serialize their calls.
     */
    static final class Slab {

        private static final long SLAB_CHUNK = 64L << 20;

        private MemorySegment chunk = MemorySegment.NULL;
        private long used;

        /** {@code bytes} of zeroed memory on huge pages, 64-byte aligned; null where none can be mapped. */
        MemorySegment allocate(long bytes) {
            if (bytes > SLAB_CHUNK / 2) { // a mapping of its own: the current chunk keeps its room for the small ones
                return mapHuge(bytes);
            }
            long at = Math.ceilDiv(used, 64) * 64;
            if (at + bytes > chunk.byteSize()) {
                MemorySegment next = mapHuge(Math.max(SLAB_CHUNK, Math.ceilDiv(bytes, PAGE) * PAGE));
                if (next == null) {
                    return null;
                }
                chunk = next;
                at = 0;
            }
            used = at + bytes;
            return chunk.asSlice(at, bytes);
        }
    }

    private static void unmap(MemorySegment at) {
        try {
            int ignored = (int) MUNMAP.invokeExact(at, at.byteSize());
        } catch (Throwable e) {
            // the mapping outlives its segment: nothing more can be done from a cleaner
        }
    }
}
