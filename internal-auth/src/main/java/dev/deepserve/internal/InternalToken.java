package dev.deepserve.internal;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.Base64;
import java.util.Optional;

/**
 * The service credential of deepserve's internal surfaces (the engines' and the tokenizer's HTTP routes, the
 * expert-parallel TCP protocol): one shared secret that every service is given ({@code DEEPSERVE_INTERNAL_TOKEN}; the
 * stack generates a new one at every start, Kubernetes mounts it from a Secret) and that callers present in
 * {@link #HEADER}. Compared in constant time; never printed ({@link #toString()} is redacted).
 */
public final class InternalToken {

    /** The header an internal HTTP call carries the token in. */
    public static final String HEADER = "X-Deepserve-Internal-Token";
    /** The environment variable (and, lower-cased with dots, the config key {@code deepserve.internal-token}). */
    public static final String ENV = "DEEPSERVE_INTERNAL_TOKEN";
    /** A token shorter than this is refused at start: it could be guessed. */
    public static final int MIN_LENGTH = 24;
    /** A presented token longer than this is not even compared (and the EP handshake reads no more). */
    public static final int MAX_LENGTH = 256;

    private static final SecureRandom RANDOM = new SecureRandom();

    private final byte[] secret;

    private InternalToken(byte[] secret) {
        this.secret = secret;
    }

    /** A configured token; refused when too short, too long, or not printable ASCII (it travels in a header). */
    public static InternalToken of(String value) {
        if (value == null || value.length() < MIN_LENGTH || value.length() > MAX_LENGTH) {
            throw new IllegalArgumentException(ENV + " must be " + MIN_LENGTH + " to " + MAX_LENGTH + " characters long");
        }
        for (int i = 0; i < value.length(); i++) {
            char c = value.charAt(i);
            if (c <= ' ' || c > '~') {
                throw new IllegalArgumentException(ENV + " must be printable ASCII without spaces");
            }
        }
        return new InternalToken(value.getBytes(StandardCharsets.US_ASCII));
    }

    /** The token configured in this process's environment, if any (a blank value counts as none). */
    public static Optional<InternalToken> fromEnvironment() {
        return configured(System.getenv(ENV));
    }

    /** A configured value as a token: empty when unset or blank, refused (see {@link #of}) when unfit. */
    public static Optional<InternalToken> configured(String value) {
        return value == null || value.isBlank() ? Optional.empty() : Optional.of(of(value.strip()));
    }

    /** A fresh random token (256 bits). */
    public static InternalToken generate() {
        byte[] bytes = new byte[32];
        RANDOM.nextBytes(bytes);
        return of("dsint-" + Base64.getUrlEncoder().withoutPadding().encodeToString(bytes));
    }

    /** The secret itself, for a caller to send or a parent to hand to its child process. */
    public String value() {
        return new String(secret, StandardCharsets.US_ASCII);
    }

    /** Whether {@code presented} is this token, in time that does not depend on where they differ. */
    public boolean accepts(String presented) {
        return presented != null && presented.length() <= MAX_LENGTH
                && MessageDigest.isEqual(secret, presented.getBytes(StandardCharsets.UTF_8));
    }

    /** Whether {@code presented} bytes are this token, in constant time. */
    public boolean accepts(byte[] presented) {
        return presented != null && MessageDigest.isEqual(secret, presented);
    }

    /** Why an internal HTTP call is refused, or {@code null} when it may pass. */
    public record Refusal(int status, String message) {
    }

    /**
     * The verdict on one internal call: 503 when this service has no token (its internal API is off, like the admin API
     * without an admin key), 401 without the header, 403 with a wrong one, {@code null} when it is this token.
     */
    public static Refusal check(Optional<InternalToken> expected, String presented) {
        if (expected.isEmpty()) {
            return new Refusal(503, "the internal API is disabled: set " + ENV);
        }
        if (presented == null || presented.isEmpty()) {
            return new Refusal(401, "missing service credential: internal calls carry " + HEADER);
        }
        return expected.get().accepts(presented) ? null : new Refusal(403, "invalid service credential");
    }

    @Override
    public String toString() {
        return "InternalToken[redacted]";
    }
}
