package dev.deepserve.accounting;

import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.util.HexFormat;

/**
 * API key secrets: {@code sk-} and 64 hex digits (256 bits from a CSPRNG). Only the SHA-256 of the secret is stored —
 * with 256 random bits a slow password hash adds nothing — and a short prefix for display.
 */
public final class ApiKeys {

    private static final SecureRandom RANDOM = new SecureRandom();
    private static final HexFormat HEX = HexFormat.of();

    private ApiKeys() {
    }

    public static String newSecret() {
        byte[] b = new byte[32];
        RANDOM.nextBytes(b);
        return "sk-" + HEX.formatHex(b);
    }

    /** A random id with a type prefix, e.g. {@code key_3f9a…} or {@code acct_…}. */
    public static String newId(String type) {
        byte[] b = new byte[12];
        RANDOM.nextBytes(b);
        return type + "_" + HEX.formatHex(b);
    }

    public static byte[] sha256(String secret) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(secret.getBytes(StandardCharsets.UTF_8));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    /** What may be shown of a key after creation: {@code sk-1a2b3c4d…}. */
    public static String prefix(String secret) {
        return secret.substring(0, Math.min(secret.length(), 11)) + "…";
    }

    /** Whether a bearer token is shaped like one of our secrets (cheap check before any lookup). */
    public static boolean wellFormed(String token) {
        if (token == null || token.length() != 67 || !token.startsWith("sk-")) {
            return false;
        }
        for (int i = 3; i < token.length(); i++) {
            char c = token.charAt(i);
            if (!(c >= '0' && c <= '9' || c >= 'a' && c <= 'f')) {
                return false;
            }
        }
        return true;
    }

    /** Constant-time comparison of two secrets (for the admin key). */
    public static boolean sameSecret(String a, String b) {
        if (a == null || b == null) {
            return false;
        }
        return MessageDigest.isEqual(sha256(a), sha256(b));
    }
}
