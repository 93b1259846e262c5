package dev.deepserve.serving;

import dev.deepserve.model.engine.KvCache;

/**
 * A prefill instance's exit: a sequence whose prompt is in {@code main} (and {@code mtp}), with its first token chosen
 * and (when speculating) the draft for the position after it. The decode instance takes it over with
 * {@link DecodeLoop#submitPrefilled}.
 */
public interface Handoff {

    void prefilled(Sequence sequence, int firstToken, int draft, KvCache main, KvCache mtp);
}
