package dev.deepserve.serving;

import dev.deepserve.model.engine.KvCache;

/**
 * A prefill instance's link to decode instances, called on the engine thread: after every step that computed more of
 * a sequence's prompt, {@link #progress} (the caches hold more tokens: send them now, so the transfer overlaps the rest
 * of the prefill); once the prompt is done, {@link #prefilled} with its first token and (when speculating) the draft
 * for the position after it. The caches are the engine's: read them during the call, never keep them. A link that
 * falls behind holds the sequence ({@link Sequence#hold}). The decode instance takes it in with
 * {@link DecodeLoop#receive}.
 */
public interface Handoff {

    /** {@code main} (and {@code mtp}, possibly null) hold more of {@code sequence}'s prompt than before. */
    default void progress(Sequence sequence, KvCache main, KvCache mtp) {
    }

    void prefilled(Sequence sequence, int firstToken, int draft, KvCache main, KvCache mtp);
}
