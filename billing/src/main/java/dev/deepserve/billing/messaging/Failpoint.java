package dev.deepserve.billing.messaging;

import org.jboss.logging.Logger;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * A crash on purpose, for the crash tests: with {@code DEEPSERVE_FAILPOINT=<name>:<marker file>} the process halts
 * (like {@code kill -9}: no shutdown hooks, nothing flushed) the first time it reaches the named point while the marker
 * file exists, deleting the file first so a restarted process runs on. Unset, it costs one field read.
 */
final class Failpoint {

    private static final Logger LOG = Logger.getLogger(Failpoint.class);
    private static final String SPEC = System.getenv("DEEPSERVE_FAILPOINT");

    private Failpoint() {
    }

    /** Halts here when this point is armed (see the class comment). */
    static void reach(String name) {
        if (SPEC == null || !SPEC.startsWith(name + ":")) {
            return;
        }
        Path marker = Path.of(SPEC.substring(name.length() + 1));
        try {
            if (Files.deleteIfExists(marker)) {
                LOG.errorf("failpoint %s reached: halting now", name);
                Runtime.getRuntime().halt(137);
            }
        } catch (IOException e) {
            LOG.warnf("failpoint %s: cannot read its marker %s: %s", name, marker, e.getMessage());
        }
    }
}
