package dev.deepserve.serving;

import java.util.List;

/**
 * Stop sequences over streamed text. Text that could still be the start of a stop string is held back, so a stop
 * string split across tokens is caught and none of it is ever sent; the stop string itself is not part of the output.
 */
final class StopMatcher {

    private final List<String> stops;
    private final StringBuilder held = new StringBuilder();
    private boolean stopped;

    StopMatcher(List<String> stops) {
        this.stops = stops;
    }

    boolean stopped() {
        return stopped;
    }

    /** The part of {@code held + delta} that is safe to emit now; sets {@link #stopped()} when a stop string appears. */
    String accept(String delta) {
        if (stopped) {
            return "";
        }
        held.append(delta);
        if (stops.isEmpty()) {
            String out = held.toString();
            held.setLength(0);
            return out;
        }
        int first = -1;
        for (String s : stops) {
            int at = held.indexOf(s);
            if (at >= 0 && (first < 0 || at < first)) {
                first = at;
            }
        }
        if (first >= 0) {
            stopped = true;
            String out = held.substring(0, first);
            held.setLength(0);
            return out;
        }
        int keep = 0;
        String h = held.toString();
        for (String s : stops) {
            for (int k = Math.min(s.length() - 1, h.length()); k > keep; k--) {
                if (h.regionMatches(h.length() - k, s, 0, k)) {
                    keep = k;
                    break;
                }
            }
        }
        // never split a surrogate pair between what is sent and what is held
        int cut = held.length() - keep;
        if (cut > 0 && cut < held.length() && Character.isHighSurrogate(held.charAt(cut - 1))) {
            cut--;
        }
        String out = held.substring(0, cut);
        held.delete(0, cut);
        return out;
    }

    /** Whatever is held when generation ends for another reason. */
    String flush() {
        String out = stopped ? "" : held.toString();
        held.setLength(0);
        return out;
    }
}
