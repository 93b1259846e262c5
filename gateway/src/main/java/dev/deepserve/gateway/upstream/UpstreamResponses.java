package dev.deepserve.gateway.upstream;

import dev.deepserve.gateway.OpenAiError;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;

import java.nio.charset.StandardCharsets;
import java.util.regex.Pattern;

/**
 * Reading and reshaping what an upstream answers, without I/O: its errors in DeepSeek's shape (credentials
 * redacted), its usage merged with ours so every model reports the same usage fields, its token counts bounded, and
 * the generated text of its events for counting when it reports no usage.
 */
public final class UpstreamResponses {

    private static final Pattern SECRET = Pattern.compile("(?i)(sk-|key-|bearer\\s+)[A-Za-z0-9_*.\\-]{6,}");

    private UpstreamResponses() {
    }

    /** The upstream's error in DeepSeek's shape with the upstream's status; its credentials problems are ours (502). */
    public static OpenAiError upstreamError(Upstream u, int status, Buffer body, String retryAfter) {
        if (status == 401 || status == 403) {
            return new OpenAiError(502, "api_error", null, "upstream_auth_failed",
                    "upstream " + u.name() + " refused the gateway's credentials (HTTP " + status + "); an administrator must fix its API key", 0);
        }
        String message = null;
        String type = status == 429 ? "rate_limit_error" : status >= 500 ? "api_error" : "invalid_request_error";
        String param = null;
        String code = null;
        try {
            JsonObject json = body == null || body.length() == 0 ? null : new JsonObject(body);
            Object err = json == null ? null : json.getValue("error");
            if (err instanceof JsonObject e) {
                message = e.getValue("message") instanceof String m ? m : null;
                type = e.getValue("type") instanceof String t ? t : type;
                param = e.getValue("param") instanceof String p ? p : null;
                code = e.getValue("code") == null ? null : String.valueOf(e.getValue("code"));
            } else if (err instanceof String s) {
                message = s;
            } else if (json != null && json.getValue("detail") instanceof String d) {
                message = d;
            }
        } catch (RuntimeException notJson) {
            String text = body.toString(StandardCharsets.UTF_8);
            message = text.length() > 300 ? text.substring(0, 300) + "…" : text;
        }
        if (message == null || message.isBlank()) {
            message = "upstream " + u.name() + " answered HTTP " + status;
        }
        long wait = RetryDelay.retryAfterMillis(retryAfter, System.currentTimeMillis());
        long retryAfterSeconds = wait <= 0 ? 0 : Math.min(86_400, (wait + 999) / 1000);
        return new OpenAiError(status, type, param, code == null ? "upstream_error" : code, redact(u.redact(message)), retryAfterSeconds);
    }

    /** Masks anything shaped like a credential (sk-…, key-…, a bearer token) in an upstream's words. */
    public static String redact(String message) {
        return message == null ? null : SECRET.matcher(message).replaceAll("$1[redacted]");
    }

    /**
     * The upstream's usage with what ours has and it lacks — the cache split, {@code prompt_tokens_details} — and
     * our {@code cost}, the amount charged, so a client reads the same usage shape from every model. Ours alone when
     * the upstream reported none (the counts are then our tokenizer's).
     */
    public static JsonObject merged(JsonObject upstream, JsonObject ours) {
        if (ours == null || ours.isEmpty()) {
            return upstream;
        }
        if (upstream == null) {
            return ours.copy();
        }
        JsonObject out = upstream.copy();
        for (String field : ours.fieldNames()) {
            if (!out.containsKey(field) || out.getValue(field) == null) {
                out.put(field, ours.getValue(field));
            }
        }
        if (out.getValue("prompt_tokens_details") instanceof JsonObject d && !d.containsKey("cached_tokens")) {
            d.put("cached_tokens", ours.getValue("prompt_cache_hit_tokens"));
        }
        return out.put("cost", ours.getValue("cost"));
    }

    /** A non-streamed answer with the merged usage; the upstream's bytes unchanged when it is not a JSON object. */
    public static Buffer withOurUsage(Buffer body, JsonObject usage) {
        if (usage == null || usage.isEmpty()) {
            return body;
        }
        try {
            JsonObject answer = new JsonObject(body);
            return answer.put("usage", merged(answer.getValue("usage") instanceof JsonObject u ? u : null, usage)).toBuffer();
        } catch (RuntimeException notAnObject) {
            return body;
        }
    }

    /** A token count an upstream reported: never negative, never so large that sums of them overflow. */
    public static int intOf(JsonObject o, String field) {
        return o.getValue(field) instanceof Number n ? (int) Math.max(0, Math.min(n.longValue(), 100_000_000L)) : 0;
    }

    /** A token count from bytes alone (about four per token), when no tokenizer can count. */
    public static int guess(String s) {
        return (s.getBytes(StandardCharsets.UTF_8).length + 3) / 4;
    }

    /** Appends the generated text of one streamed event (or of a whole non-streamed answer). */
    public static void collectText(boolean streamed, Buffer event, StringBuilder out) {
        String data = streamed ? SseScanner.data(event) : event.toString(StandardCharsets.UTF_8);
        if (data == null || data.startsWith("[DONE]")) {
            return;
        }
        JsonObject json;
        try {
            json = new JsonObject(data);
        } catch (RuntimeException e) {
            return;
        }
        if (!(json.getValue("choices") instanceof JsonArray choices)) {
            return;
        }
        for (Object c : choices) {
            if (!(c instanceof JsonObject choice)) {
                continue;
            }
            if (choice.getValue("text") instanceof String t) {
                out.append(t);
            }
            Object part = choice.getValue(streamed ? "delta" : "message");
            if (part instanceof JsonObject m) {
                for (String field : new String[] {"reasoning_content", "content"}) {
                    if (m.getValue(field) instanceof String s) {
                        out.append(s);
                    }
                }
                if (m.getValue("tool_calls") instanceof JsonArray calls) {
                    for (Object tc : calls) {
                        if (tc instanceof JsonObject t && t.getValue("function") instanceof JsonObject f) {
                            if (f.getValue("name") instanceof String n) {
                                out.append(n);
                            }
                            if (f.getValue("arguments") instanceof String a) {
                                out.append(a);
                            }
                        }
                    }
                }
            }
        }
    }
}
