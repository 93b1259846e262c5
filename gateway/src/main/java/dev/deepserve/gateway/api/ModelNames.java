package dev.deepserve.gateway.api;

import dev.deepserve.gateway.OpenAiError;
/**
 * What a model name may be, checked where it enters (a request's {@code model}, an upstream's model list): 1 to 256
 * characters of {@code A-Z a-z 0-9 . _ - : / @ +}. A model name is written into every usage event, the ledger and
 * its indexes, Kafka records and metric tags; bounding it at the edge keeps a NUL byte, an unpaired surrogate or a
 * megabyte of text from ever reaching them.
 */
public final class ModelNames {

    public static final int MAX_LENGTH = 256;

    private ModelNames() {
    }

    public static boolean valid(String name) {
        if (name == null || name.isEmpty() || name.length() > MAX_LENGTH) {
            return false;
        }
        for (int i = 0; i < name.length(); i++) {
            char c = name.charAt(i);
            boolean ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || ".-_:/@+".indexOf(c) >= 0;
            if (!ok) {
                return false;
            }
        }
        return true;
    }

    /** A request's {@code model}: a 400 naming the field unless it is a valid name. */
    public static String check(Object model) {
        if (model == null) {
            throw OpenAiError.invalid("model", "model is required");
        }
        if (!(model instanceof String name) || !valid(name)) {
            throw OpenAiError.invalid("model", "model must be a name of 1-" + MAX_LENGTH + " characters from A-Z a-z 0-9 . _ - : / @ +");
        }
        return name;
    }
}
