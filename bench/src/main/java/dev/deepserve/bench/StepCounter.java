package dev.deepserve.bench;

import dev.deepserve.serving.LoopMetrics;

import java.util.concurrent.atomic.AtomicLong;

/** A benchmark's loop metrics: the steps a decode loop ran and the MTP drafts it verified, with how many it accepted. */
class StepCounter implements LoopMetrics {

    final AtomicLong steps = new AtomicLong();
    final AtomicLong drafts = new AtomicLong();
    final AtomicLong accepted = new AtomicLong();

    @Override
    public void step(int sequences, long nanos) {
        steps.incrementAndGet();
    }

    @Override
    public void draft(boolean ok) {
        drafts.incrementAndGet();
        if (ok) {
            accepted.incrementAndGet();
        }
    }

    /** Accepted drafts over verified ones (0 without drafts). */
    double acceptance() {
        return drafts.get() == 0 ? 0 : (double) accepted.get() / drafts.get();
    }
}
