package dev.deepserve.model;

import java.lang.management.ManagementFactory;
import java.time.Duration;

/**
 * Test helper: the bytes this thread allocates per call of some work, once the JIT has had its chance — interpreted
 * or C1-compiled, every Vector API vector is an object, so rounds of calls are measured until one allocates at most
 * what the test allows (or the time is up, and the last round's figure is what the test sees).
 */
public final class AllocationProbe {

    private static final com.sun.management.ThreadMXBean THREADS = (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();

    private AllocationProbe() {
    }

    /** Whether this JVM counts each thread's allocations (the tests skip where it does not). */
    public static boolean available() {
        return THREADS.isThreadAllocatedMemorySupported() && THREADS.isThreadAllocatedMemoryEnabled();
    }

    /** Bytes per call over rounds of {@code calls} calls of {@code work}, until a round's figure is at most {@code enough}. */
    public static long perCall(Runnable work, int calls, long enough, Duration atMost) {
        long perCall = Long.MAX_VALUE;
        long deadline = System.nanoTime() + atMost.toNanos();
        while (perCall > enough && System.nanoTime() < deadline) {
            long before = THREADS.getCurrentThreadAllocatedBytes();
            for (int i = 0; i < calls; i++) {
                work.run();
            }
            perCall = (THREADS.getCurrentThreadAllocatedBytes() - before) / calls;
        }
        return perCall;
    }
}
