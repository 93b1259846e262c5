package dev.deepserve.model.config;

/** A config.json the engine cannot serve, with the offending field named in the message. */
public final class ModelConfigException extends RuntimeException {
    public ModelConfigException(String message) {
        super(message);
    }
}
