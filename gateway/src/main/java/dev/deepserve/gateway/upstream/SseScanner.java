package dev.deepserve.gateway.upstream;

import io.vertx.core.buffer.Buffer;

import java.util.function.Consumer;

/**
 * Splits an upstream's SSE byte stream into whole events (a blank line ends one; {@code \n\n} or {@code \r\n\r\n})
 * without decoding them: the relay forwards events byte for byte and only looks inside the rare one that carries a
 * {@code "usage"} object. Events split across network reads are joined; what follows the last complete event waits
 * for the next read.
 */
public final class SseScanner {

    /** The longest event an upstream may send (a chat chunk is well under 1 KiB): a longer one is a broken stream. */
    public static final int MAX_EVENT_BYTES = 1 << 20;

    /** An upstream sent more than {@link #MAX_EVENT_BYTES} without ending an event. */
    public static final class EventTooLarge extends RuntimeException {
        EventTooLarge() {
            super("an upstream SSE event longer than " + MAX_EVENT_BYTES + " bytes");
        }
    }

    /** Never appended to: bytes left over get a buffer of their own. */
    private static final Buffer NOTHING = Buffer.buffer(0);

    private Buffer pending = NOTHING;

    /**
     * Feeds one network read; {@code onEvent} receives each event completed by it, blank-line terminator included.
     * Throws {@link EventTooLarge} when the unfinished event grows past the bound (nothing is kept of it).
     */
    public void feed(Buffer chunk, Consumer<Buffer> onEvent) {
        Buffer data = pending.length() == 0 ? chunk : pending.appendBuffer(chunk);
        int start = 0;
        int n = data.length();
        for (int i = 0; i < n; i++) {
            if (data.getByte(i) != '\n') {
                continue;
            }
            // a line ends at i; an event ends when the next line is empty (\n or \r\n)
            int next = i + 1;
            if (next < n && data.getByte(next) == '\r') {
                next++;
            }
            if (next < n && data.getByte(next) == '\n') {
                onEvent.accept(data.slice(start, next + 1));
                start = next + 1;
                i = next;
            }
        }
        pending = start == n ? NOTHING : data.getBuffer(start, n);
        if (pending.length() > MAX_EVENT_BYTES) {
            pending = NOTHING;
            throw new EventTooLarge();
        }
    }

    /** Bytes received after the last complete event (an upstream that ended mid-event). */
    public Buffer rest() {
        return pending.copy();
    }

    /**
     * Where the value of a top-level-looking {@code "usage": {...}} starts in this event (the index of its
     * {@code {}), or -1 when the event has no usage object ({@code "usage": null} counts as none).
     */
    public static int usageObject(Buffer event) {
        int n = event.length();
        outer:
        for (int i = 0; i + 7 <= n; i++) {
            for (int k = 0; k < USAGE.length; k++) {
                if (event.getByte(i + k) != USAGE[k]) {
                    continue outer;
                }
            }
            int j = i + USAGE.length;
            while (j < n && isSpace(event.getByte(j))) {
                j++;
            }
            if (j >= n || event.getByte(j) != ':') {
                continue;
            }
            j++;
            while (j < n && isSpace(event.getByte(j))) {
                j++;
            }
            if (j < n && event.getByte(j) == '{') {
                return j;
            }
        }
        return -1;
    }

    private static final byte[] USAGE = "\"usage\"".getBytes(java.nio.charset.StandardCharsets.US_ASCII);

    private static boolean isSpace(byte b) {
        return b == ' ' || b == '\t' || b == '\r' || b == '\n';
    }

    /** The JSON text after {@code data:} in an event, or null when it has no data line (a comment, a keep-alive). */
    public static String data(Buffer event) {
        String s = event.toString(java.nio.charset.StandardCharsets.UTF_8);
        StringBuilder out = null;
        for (String line : s.split("\r?\n")) {
            if (line.startsWith("data:")) {
                String v = line.substring(5);
                v = v.startsWith(" ") ? v.substring(1) : v;
                out = out == null ? new StringBuilder(v) : out.append('\n').append(v);
            }
        }
        return out == null ? null : out.toString();
    }

    private static final byte[] CONTENT = "\"content\":\"".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    private static final byte[] TEXT = "\"text\":\"".getBytes(java.nio.charset.StandardCharsets.US_ASCII);

    /**
     * Whether an event carries generated text: a non-empty {@code "content"} (chat) or {@code "text"} (completions)
     * string, as upstreams write it (no space after the colon). A byte scan, no decoding: it runs on every relayed event.
     */
    public static boolean carriesText(Buffer event) {
        return nonEmptyString(event, CONTENT) || nonEmptyString(event, TEXT);
    }

    private static boolean nonEmptyString(Buffer event, byte[] key) {
        int n = event.length() - key.length;
        outer:
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < key.length; j++) {
                if (event.getByte(i + j) != key[j]) {
                    continue outer;
                }
            }
            if (event.getByte(i + key.length) != '"') {
                return true;
            }
        }
        return false;
    }
}
