package dev.deepserve.model.engine.ops;

import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;
import java.util.function.IntConsumer;

/**
 * A fixed team of worker threads for the forward pass's parallel loops. A decode step runs a few hundred short
 * parallel loops (one per matmul), each worth tens of microseconds, so handing work to parked pool threads costs as
 * much as the work; here the calling thread takes part, and workers spin briefly between loops before parking
 * (llama.cpp's thread pool does the same). Items are claimed one at a time from a shared counter, so uneven items
 * balance out. A loop started while another runs (from another thread, or nested inside a body) runs on its caller.
 */
final class WorkerTeam implements AutoCloseable {

    /** How long an idle worker polls for the next loop before parking. */
    private static final long SPIN_NANOS = TimeUnit.MICROSECONDS.toNanos(200);

    private final Thread[] workers;
    private final ReentrantLock running = new ReentrantLock();
    private final AtomicInteger next = new AtomicInteger();
    private final AtomicInteger unfinished = new AtomicInteger();
    private final AtomicReference<Throwable> failure = new AtomicReference<>();
    private volatile long generation;
    private volatile IntConsumer body;
    private volatile int items;
    private volatile boolean closed;

    WorkerTeam(int threads) {
        this.workers = new Thread[threads - 1];
        for (int i = 0; i < workers.length; i++) {
            workers[i] = Thread.ofPlatform().daemon().name("deepserve-cpu-" + (i + 1)).start(this::work);
        }
    }

    int size() {
        return workers.length + 1;
    }

    /** Runs {@code body(i)} for every i in [0, n) across the team and returns when all are done. */
    void run(int n, IntConsumer task) {
        if (!running.tryLock()) {
            serial(n, task);
            return;
        }
        try {
            if (running.getHoldCount() > 1) {
                serial(n, task);
                return;
            }
            failure.set(null);
            next.set(0);
            items = n;
            body = task;
            unfinished.set(workers.length);
            generation++;
            for (Thread w : workers) {
                LockSupport.unpark(w);
            }
            claim(n, task);
            while (unfinished.get() > 0) {
                Thread.onSpinWait();
            }
            body = null;
            Throwable t = failure.get();
            if (t instanceof RuntimeException e) {
                throw e;
            }
            if (t instanceof Error e) {
                throw e;
            }
        } finally {
            running.unlock();
        }
    }

    private static void serial(int n, IntConsumer task) {
        for (int i = 0; i < n; i++) {
            task.accept(i);
        }
    }

    private void claim(int n, IntConsumer task) {
        try {
            for (int i = next.getAndIncrement(); i < n; i = next.getAndIncrement()) {
                task.accept(i);
            }
        } catch (Throwable t) {
            failure.compareAndSet(null, t);
            next.set(n);
        }
    }

    private void work() {
        long seen = 0;
        while (!closed) {
            long deadline = System.nanoTime() + SPIN_NANOS;
            while (generation == seen && !closed) {
                if (System.nanoTime() < deadline) {
                    Thread.onSpinWait();
                } else {
                    LockSupport.parkNanos(this, TimeUnit.MILLISECONDS.toNanos(100));
                }
            }
            if (closed) {
                return;
            }
            seen = generation;
            IntConsumer task = body;
            if (task != null) {
                claim(items, task);
            }
            unfinished.decrementAndGet();
        }
    }

    @Override
    public void close() {
        closed = true;
        for (Thread w : workers) {
            LockSupport.unpark(w);
        }
    }
}
