package dev.deepserve.serving;

/** What a {@link DecodeLoop} reports as it steps (the services turn it into Prometheus meters). */
public interface LoopMetrics {

    LoopMetrics NONE = new LoopMetrics() {
    };

    /** One step over {@code sequences} sequences took {@code nanos}. */
    default void step(int sequences, long nanos) {
    }

    /** Tokens streamed. */
    default void tokens(int n) {
    }

    /** Prompt tokens a sequence found in the prefix cache at admission (again at each readmission after a preemption). */
    default void cacheHit(int tokens) {
    }

    /** An MTP draft was verified. */
    default void draft(boolean accepted) {
    }

    /** Prompt tokens run through the model this step (cache hits not counted). */
    default void prefilled(int tokens) {
    }

    /** A sequence gave up its KV blocks to let older ones continue (it is recomputed when readmitted). */
    default void preempted() {
    }
}
