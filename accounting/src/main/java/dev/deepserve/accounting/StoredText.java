package dev.deepserve.accounting;

/**
 * Free text on its way into PostgreSQL (whose text and jsonb refuse a NUL), Kafka records and logs: whether it can be
 * stored as it is, and a bounded copy that always can. Shared by the gateway's usage events and billing's checks, so
 * both sides of the usage pipeline agree on what storable means.
 */
public final class StoredText {

    private StoredText() {
    }

    /** Why {@code s} cannot be stored as it is — "a control character" or "an unpaired surrogate" — or null when it can. */
    public static String flaw(String s) {
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (Character.isISOControl(c)) {
                return "a control character";
            }
            if (Character.isHighSurrogate(c) && i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
                i++;
            } else if (Character.isSurrogate(c)) {
                return "an unpaired surrogate";
            }
        }
        return null;
    }

    /** At most {@code max} characters of {@code s}, control characters and unpaired surrogates replaced by U+FFFD. */
    public static String clean(String s, int max) {
        int n = Math.min(s.length(), max);
        StringBuilder out = new StringBuilder(n);
        for (int i = 0; i < n; i++) {
            char c = s.charAt(i);
            if (Character.isHighSurrogate(c) && i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
                out.append(c).append(s.charAt(++i));
            } else if (Character.isISOControl(c) || Character.isSurrogate(c)) {
                out.append('\uFFFD');
            } else {
                out.append(c);
            }
        }
        return out.toString();
    }
}
