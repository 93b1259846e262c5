package dev.deepserve.serving;

import dev.deepserve.model.engine.KvStream;

/**
 * The usual way a KV stream reaches a decode engine: {@link #header} opens the {@link KvIntake} (the subclass decides
 * how: which request, which sink); every section and the END's {@link Handover} then go to it as the reader checks them.
 */
public abstract class IntakeListener implements KvStream.Listener {

    /** Set by {@link #header}. */
    protected KvIntake intake;

    @Override
    public void section(int cache, int layer, int from, int count, byte[] values) {
        intake.section(cache, layer, from, count, values);
    }

    @Override
    public void end(String trailer) {
        intake.end(Handover.parse(trailer));
    }
}
