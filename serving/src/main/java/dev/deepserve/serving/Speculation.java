package dev.deepserve.serving;

import dev.deepserve.model.engine.KvCache;

/**
 * One sequence's MTP speculation state: the MTP module's KV over its context, the draft proposed for its next
 * position (and, when sampling, the draft distribution q it was drawn from), and how its drafts have fared so far.
 * Touched only by the engine thread.
 */
final class Speculation {

    /** Drafts a sequence gets before its acceptance rate decides whether speculation continues. */
    static final int PROBE_DRAFTS = 32;

    /** The MTP module's KV (null when this sequence does not speculate, or while it holds no KV). */
    KvCache kv;
    /** The token drafted for the position after the last one, or -1. */
    int draft = -1;
    /** The distribution the draft was drawn from (sampling only). */
    float[] draftProbs;
    int proposed;
    int accepted;
    /** False once the sequence decodes plainly (too few drafts accepted, or the KV came without the MTP part). */
    boolean on = true;

    /** Takes the pending draft (the step verifying it has been planned): returns it, leaving none. */
    int takeDraft() {
        int d = draft;
        draft = -1;
        return d;
    }

    /**
     * Counts one verified draft; true when speculation should stop for this sequence: each step costs an MTP pass
     * on top of the main one, and a step gives 1 + (acceptance) tokens, so after the probe window an acceptance below
     * {@code breakEven} (the MTP pass's measured share of a step, {@link Speculator#breakEven}) loses time. The output
     * is the same either way.
     */
    boolean verified(boolean wasAccepted, double breakEven) {
        proposed++;
        accepted += wasAccepted ? 1 : 0;
        return proposed >= PROBE_DRAFTS && (breakEven >= 1 || accepted < breakEven * proposed);
    }

    /** Forgets the pending draft: the next step runs plain for this sequence, which drafts again after it. */
    void dropDraft() {
        draft = -1;
        draftProbs = null;
    }

    /** Forgets the KV and the pending draft (the caller gives the blocks back): after a preemption or at the end. */
    void dropKv() {
        kv = null;
        dropDraft();
    }
}
