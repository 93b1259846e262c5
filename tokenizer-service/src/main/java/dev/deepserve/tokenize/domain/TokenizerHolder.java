package dev.deepserve.tokenize.domain;

import dev.deepserve.tokenizer.Tokenizer;
import dev.deepserve.tokenize.config.TokenizerConfig;
import jakarta.enterprise.context.ApplicationScoped;
import org.jboss.logging.Logger;

/**
 * The service's one tokenizer, loaded from the model directory on first use and kept. A load failure is remembered
 * with its reason (readiness reports it) and retried on the next call, so fixing the files needs no restart.
 */
@ApplicationScoped
public class TokenizerHolder {

    private static final Logger LOG = Logger.getLogger(TokenizerHolder.class);

    private final TokenizerConfig config;
    private volatile Tokenizer tokenizer;
    private volatile String problem;

    TokenizerHolder(TokenizerConfig config) {
        this.config = config;
    }

    /** The tokenizer, or an {@link Unavailable} naming why it cannot be loaded. */
    public Tokenizer get() {
        Tokenizer t = tokenizer;
        if (t != null) {
            return t;
        }
        synchronized (this) {
            if (tokenizer == null) {
                try {
                    long t0 = System.nanoTime();
                    tokenizer = Tokenizer.load(config.modelDir());
                    problem = null;
                    LOG.infof("tokenizer loaded from %s: %d tokens in %d ms", config.modelDir(), tokenizer.vocabSize(), (System.nanoTime() - t0) / 1_000_000);
                } catch (RuntimeException e) {
                    problem = e.getMessage();
                    throw new Unavailable(problem);
                }
            }
            return tokenizer;
        }
    }

    /** Why the tokenizer could not be loaded, or null. */
    public String problem() {
        return problem;
    }

    public static final class Unavailable extends RuntimeException {
        public Unavailable(String message) {
            super(message);
        }
    }
}
