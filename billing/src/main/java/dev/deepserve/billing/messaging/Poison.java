package dev.deepserve.billing.messaging;

import dev.deepserve.accounting.StoredText;
import io.vertx.pgclient.PgException;

/**
 * Whether a failure to apply usage is the record's own fault — it will fail the same way on every retry, so it must
 * be set aside — or the world's (PostgreSQL away, a deadlock, a restart), which a retry outlives. Only PostgreSQL's
 * data errors are the record's (SQLSTATE class 22: bad text, numbers or times; 23: a broken constraint; 54: a value
 * beyond a limit, such as an index row too big): what {@code UsageEventCheck} could not foresee. An exception of our
 * own code is not — it would otherwise dead-letter every event; it stalls the consumer visibly instead.
 */
final class Poison {

    private Poison() {
    }

    static boolean is(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause() == c ? null : c.getCause()) {
            if (c instanceof PgException pg) {
                String state = pg.getSqlState();
                return state != null && (state.startsWith("22") || state.startsWith("23") || state.startsWith("54"));
            }
        }
        return false;
    }

    /** A one-line reason to store: bounded, and free of what PostgreSQL's text refuses. */
    static String reason(Throwable t) {
        String m = t.getMessage() == null ? t.getClass().getSimpleName() : t.getClass().getSimpleName() + ": " + t.getMessage();
        return clean(m);
    }

    static String clean(String s) {
        return StoredText.clean(s, 500);
    }
}
