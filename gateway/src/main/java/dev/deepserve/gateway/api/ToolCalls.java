package dev.deepserve.gateway.api;

import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;

import java.util.UUID;

/**
 * DeepSeek-V3's tool-call output, as its chat template writes it back:
 * {@code <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>…<｜tool▁calls▁end｜>},
 * turned into OpenAI {@code tool_calls}. Text before the first marker is the message content.
 */
final class ToolCalls {

    static final String CALLS_BEGIN = "<｜tool▁calls▁begin｜>";
    static final String CALLS_END = "<｜tool▁calls▁end｜>";
    static final String CALL_BEGIN = "<｜tool▁call▁begin｜>";
    static final String CALL_END = "<｜tool▁call▁end｜>";
    static final String SEP = "<｜tool▁sep｜>";

    /** The content before the tool calls (null when empty) and the calls; {@code calls} is empty when there are none. */
    record Parsed(String content, JsonArray calls) {
    }

    private ToolCalls() {
    }

    static Parsed parse(String text) {
        int begin = text.indexOf(CALLS_BEGIN);
        if (begin < 0) {
            return new Parsed(text, new JsonArray());
        }
        JsonArray calls = new JsonArray();
        int at = begin + CALLS_BEGIN.length();
        while (true) {
            int start = text.indexOf(CALL_BEGIN, at);
            if (start < 0) {
                break;
            }
            int sep = text.indexOf(SEP, start);
            int end = text.indexOf(CALL_END, start);
            if (sep < 0 || end < 0 || sep > end) {
                break; // cut off (e.g. by max_tokens): only complete calls count
            }
            String type = text.substring(start + CALL_BEGIN.length(), sep).trim();
            String rest = text.substring(sep + SEP.length(), end);
            int newline = rest.indexOf('\n');
            String name = (newline < 0 ? rest : rest.substring(0, newline)).trim();
            String arguments = newline < 0 ? "{}" : stripFence(rest.substring(newline + 1));
            calls.add(new JsonObject().put("id", "call_" + UUID.randomUUID().toString().replace("-", "").substring(0, 24))
                    .put("type", type.isEmpty() ? "function" : type)
                    .put("function", new JsonObject().put("name", name).put("arguments", arguments)));
            at = end + CALL_END.length();
        }
        if (calls.isEmpty()) {
            return new Parsed(text, calls);
        }
        String content = text.substring(0, begin);
        return new Parsed(content.isEmpty() ? null : content, calls);
    }

    private static String stripFence(String s) {
        String t = s.strip();
        if (t.startsWith("```")) {
            int nl = t.indexOf('\n');
            t = nl < 0 ? "" : t.substring(nl + 1);
        }
        if (t.endsWith("```")) {
            t = t.substring(0, t.length() - 3);
        }
        return t.strip();
    }
}
