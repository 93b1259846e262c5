package dev.deepserve.gateway.api;

import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;

/**
 * The response shapes of one completion, as DeepSeek's API (OpenAI's wire format) writes them: streamed chunks
 * ({@code chat.completion.chunk}, or {@code text_completion} for the legacy endpoint) framed as server-sent events,
 * and the whole {@code chat.completion} object. Pure: JSON in, JSON out, no I/O.
 *
 * @param id      the request's id ({@code chatcmpl-…})
 * @param created the request's Unix time
 * @param model   the model name the client sent
 * @param chat    chat completions (else the legacy text completions)
 */
public record CompletionResponses(String id, long created, String model, boolean chat) {

    static final String FINGERPRINT = "fp_deepserve_0";

    /** One server-sent event carrying {@code json}. */
    public static String sse(JsonObject json) {
        return "data: " + json.encode() + "\n\n";
    }

    /** What every chunk starts with. */
    public JsonObject chunkBase() {
        return new JsonObject().put("id", id).put("object", chat ? "chat.completion.chunk" : "text_completion")
                .put("created", created).put("model", model).put("system_fingerprint", FINGERPRINT);
    }

    /** The first chat chunk: the assistant's role, no content yet. */
    public JsonObject roleChunk() {
        JsonObject delta = new JsonObject().put("role", "assistant").put("content", "");
        return chunkBase().put("choices", new JsonArray().add(new JsonObject().put("index", 0).put("delta", delta)
                .putNull("logprobs").putNull("finish_reason")));
    }

    /** A chunk with new text (null: none, e.g. the last chunk), its token's logprob entry (or null) and the finish reason (or null). */
    public JsonObject chunk(String text, JsonObject logprob, String finishReason) {
        JsonObject choice = new JsonObject().put("index", 0);
        if (chat) {
            JsonObject delta = new JsonObject();
            if (text != null) {
                delta.put("content", text);
            }
            choice.put("delta", delta);
            choice.put("logprobs", logprob == null ? null : new JsonObject().put("content", new JsonArray().add(logprob)));
        } else {
            choice.put("text", text == null ? "" : text);
            choice.put("logprobs", logprob == null ? null : legacyLogprobs(new JsonArray().add(logprob)));
        }
        choice.put("finish_reason", finishReason);
        return chunkBase().put("choices", new JsonArray().add(choice));
    }

    /** The chunk carrying every tool call at once (each with its {@code index}), parsed from the model's output. */
    public JsonObject toolCallsChunk(JsonArray calls) {
        JsonArray deltas = new JsonArray();
        for (int i = 0; i < calls.size(); i++) {
            deltas.add(calls.getJsonObject(i).copy().put("index", i));
        }
        return chunkBase().put("choices", new JsonArray().add(new JsonObject().put("index", 0)
                .put("delta", new JsonObject().put("tool_calls", deltas)).putNull("logprobs").putNull("finish_reason")));
    }

    /** The last chunk of a stream that asked for {@code stream_options.include_usage}: no choices, the usage. */
    public JsonObject usageChunk(JsonObject usage) {
        return chunkBase().put("choices", new JsonArray()).put("usage", usage);
    }

    /**
     * The whole response of a request that did not stream.
     *
     * @param logprobs the tokens' logprob entries when the request asked for them, else null
     * @param toolCalls the tool calls parsed from {@code text}, or null when the request offered no tools
     */
    public JsonObject complete(String text, JsonArray logprobs, ToolCalls.Parsed toolCalls, String finishReason, JsonObject usage) {
        JsonObject choice = new JsonObject().put("index", 0);
        if (chat) {
            JsonObject message = new JsonObject().put("role", "assistant");
            if (toolCalls != null && !toolCalls.calls().isEmpty()) {
                message.put("content", toolCalls.content()).put("tool_calls", toolCalls.calls());
            } else {
                message.put("content", text);
            }
            choice.put("message", message);
            choice.put("logprobs", logprobs != null ? new JsonObject().put("content", logprobs) : null);
        } else {
            choice.put("text", text);
            choice.put("logprobs", logprobs != null ? legacyLogprobs(logprobs) : null);
        }
        choice.put("finish_reason", finishReason);
        return new JsonObject().put("id", id).put("object", chat ? "chat.completion" : "text_completion").put("created", created)
                .put("model", model).put("choices", new JsonArray().add(choice)).put("usage", usage)
                .put("system_fingerprint", FINGERPRINT);
    }

    /** A token's logprob entry in the chat shape (token, logprob, bytes, top_logprobs), from an engine token event; null without one. */
    public static JsonObject logprob(JsonObject event) {
        if (!event.containsKey("logprob")) {
            return null;
        }
        JsonArray top = new JsonArray();
        for (Object o : event.getJsonArray("top_logprobs", new JsonArray())) {
            JsonObject t = (JsonObject) o;
            top.add(new JsonObject().put("token", t.getString("token")).put("logprob", t.getDouble("logprob")).put("bytes", t.getJsonArray("bytes")));
        }
        return new JsonObject().put("token", event.getString("token")).put("logprob", event.getDouble("logprob"))
                .put("bytes", event.getJsonArray("bytes")).put("top_logprobs", top);
    }

    /** Chat logprob entries in the legacy completions shape: parallel arrays of tokens, logprobs and top alternatives. */
    static JsonObject legacyLogprobs(JsonArray entries) {
        JsonArray tokens = new JsonArray();
        JsonArray values = new JsonArray();
        JsonArray top = new JsonArray();
        for (Object o : entries) {
            JsonObject e = (JsonObject) o;
            tokens.add(e.getString("token"));
            values.add(e.getDouble("logprob"));
            JsonObject alternatives = new JsonObject();
            for (Object t : e.getJsonArray("top_logprobs")) {
                alternatives.put(((JsonObject) t).getString("token"), ((JsonObject) t).getDouble("logprob"));
            }
            top.add(alternatives);
        }
        return new JsonObject().put("tokens", tokens).put("token_logprobs", values).put("top_logprobs", top);
    }
}
