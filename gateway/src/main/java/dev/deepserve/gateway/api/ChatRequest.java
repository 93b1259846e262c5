package dev.deepserve.gateway.api;

import dev.deepserve.gateway.OpenAiError;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A {@code /chat/completions} (or legacy {@code /completions}) request, validated field by field with DeepSeek's
 * ranges. Fields the engine cannot honour are refused with a message naming them, never silently ignored.
 */
record ChatRequest(String model, JsonArray messages, String prompt, int maxTokens, boolean maxTokensGiven, double temperature,
                   double topP, List<String> stop, boolean stream, boolean includeUsage, double frequencyPenalty,
                   double presencePenalty, boolean logprobs, int topLogprobs, Long seed, JsonArray tools) {

    private static final Set<String> CHAT_FIELDS = Set.of("model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
            "stop", "stream", "stream_options", "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "seed", "user",
            "response_format", "tools", "tool_choice", "n", "parallel_tool_calls", "logit_bias", "metadata", "store");
    private static final Set<String> COMPLETION_FIELDS = Set.of("model", "prompt", "max_tokens", "temperature", "top_p", "stop", "stream",
            "stream_options", "frequency_penalty", "presence_penalty", "logprobs", "seed", "user", "n", "echo", "suffix", "logit_bias");

    /** Most messages one conversation may carry (each costs template work before any token is counted). */
    static final int MAX_MESSAGES = 10_000;
    /** Most stop sequences, and the longest one (the engine holds back that much text while it matches). */
    static final int MAX_STOPS = 16;
    static final int MAX_STOP_CHARS = 256;
    /** Most tools, and the longest tool name (OpenAI's limits). */
    static final int MAX_TOOLS = 128;
    static final int MAX_TOOL_NAME_CHARS = 64;
    /** Longest end-user id, and most metadata pairs with their key and value lengths (OpenAI's limits). */
    static final int MAX_USER_CHARS = 256;
    static final int MAX_METADATA = 16;
    static final int MAX_METADATA_KEY_CHARS = 64;
    static final int MAX_METADATA_VALUE_CHARS = 512;

    static ChatRequest parse(JsonObject body, boolean chat, int defaultMaxTokens, int maxMaxTokens) {
        for (String field : body.fieldNames()) {
            if (!(chat ? CHAT_FIELDS : COMPLETION_FIELDS).contains(field)) {
                throw OpenAiError.invalid(field, "Unrecognized request argument supplied: " + field);
            }
        }
        String model = string(body, "model");
        if (model == null || model.isBlank()) {
            throw OpenAiError.invalid("model", "model is required");
        }
        JsonArray messages = null;
        String prompt = null;
        if (chat) {
            Object m = body.getValue("messages");
            if (!(m instanceof JsonArray a) || a.isEmpty()) {
                throw OpenAiError.invalid("messages", "messages must be a non-empty array");
            }
            if (a.size() > MAX_MESSAGES) {
                throw OpenAiError.invalid("messages", "messages may hold at most " + MAX_MESSAGES + " messages");
            }
            messages = a;
        } else {
            Object p = body.getValue("prompt");
            if (!(p instanceof String s)) {
                throw OpenAiError.invalid("prompt", "prompt must be a string");
            }
            prompt = s;
            if (isTrue(body, "echo")) {
                throw OpenAiError.unprocessable("echo", "echo is not supported");
            }
            if (body.getValue("suffix") != null) {
                throw OpenAiError.unprocessable("suffix", "suffix (fill-in-the-middle) is not supported by this engine");
            }
        }
        String maxField = body.getValue("max_tokens") != null ? "max_tokens" : "max_completion_tokens";
        Integer max = integer(body, maxField);
        if (max != null && (max < 1 || max > maxMaxTokens)) {
            throw OpenAiError.invalid(maxField, "Invalid max_tokens value, the valid range of max_tokens is [1, " + maxMaxTokens + "]");
        }
        double temperature = number(body, "temperature", 1.0, 0, 2);
        double topP = number(body, "top_p", 1.0, 0, 1);
        if (body.getValue("top_p") != null && topP == 0) {
            throw OpenAiError.invalid("top_p", "top_p must be in (0, 1]");
        }
        double frequency = number(body, "frequency_penalty", 0, -2, 2);
        double presence = number(body, "presence_penalty", 0, -2, 2);
        List<String> stop = new ArrayList<>();
        Object s = body.getValue("stop");
        if (s instanceof String one) {
            stop.add(one);
        } else if (s instanceof JsonArray list) {
            if (list.size() > MAX_STOPS) {
                throw OpenAiError.invalid("stop", "stop may hold at most " + MAX_STOPS + " sequences");
            }
            for (Object o : list) {
                if (!(o instanceof String str)) {
                    throw OpenAiError.invalid("stop", "stop must be a string or a list of strings");
                }
                stop.add(str);
            }
        } else if (s != null) {
            throw OpenAiError.invalid("stop", "stop must be a string or a list of strings");
        }
        stop.removeIf(String::isEmpty);
        if (stop.stream().anyMatch(one -> one.length() > MAX_STOP_CHARS)) {
            throw OpenAiError.invalid("stop", "a stop sequence may be at most " + MAX_STOP_CHARS + " characters long");
        }
        boolean stream = bool(body, "stream");
        boolean includeUsage = false;
        Object so = body.getValue("stream_options");
        if (so != null) {
            if (!(so instanceof JsonObject options)) {
                throw OpenAiError.invalid("stream_options", "stream_options must be an object");
            }
            if (!stream) {
                throw OpenAiError.invalid("stream_options", "stream_options is only allowed when stream is true");
            }
            includeUsage = bool(options, "include_usage");
        }
        boolean logprobs;
        int topLogprobs = 0;
        if (chat) {
            logprobs = bool(body, "logprobs");
            Integer top = integer(body, "top_logprobs");
            if (top != null) {
                if (!logprobs) {
                    throw OpenAiError.invalid("top_logprobs", "top_logprobs requires logprobs to be true");
                }
                if (top < 0 || top > 20) {
                    throw OpenAiError.invalid("top_logprobs", "top_logprobs must be between 0 and 20");
                }
                topLogprobs = top;
            }
        } else {
            Integer lp = integer(body, "logprobs");
            logprobs = lp != null && lp > 0;
            if (lp != null && (lp < 0 || lp > 20)) {
                throw OpenAiError.invalid("logprobs", "logprobs must be between 0 and 20");
            }
            topLogprobs = lp == null ? 0 : lp;
        }
        Integer n = integer(body, "n");
        if (n != null && n != 1) {
            throw OpenAiError.unprocessable("n", "n must be 1: this API returns one choice per request");
        }
        Object bias = body.getValue("logit_bias");
        if (bias != null && !(bias instanceof JsonObject b && b.isEmpty())) {
            throw OpenAiError.unprocessable("logit_bias", "logit_bias is not supported");
        }
        Object rf = body.getValue("response_format");
        if (rf != null) {
            String type = rf instanceof JsonObject o ? o.getString("type") : null;
            if (!"text".equals(type)) {
                throw OpenAiError.unprocessable("response_format", "response_format " + (type == null ? "must be an object with a type" : "'" + type
                        + "' is not supported by this engine (only text)"));
            }
        }
        JsonArray tools = null;
        if (chat && body.getValue("tools") != null) {
            if (!(body.getValue("tools") instanceof JsonArray t)) {
                throw OpenAiError.invalid("tools", "tools must be an array");
            }
            if (t.size() > MAX_TOOLS) {
                throw OpenAiError.invalid("tools", "tools may hold at most " + MAX_TOOLS + " tools");
            }
            for (int i = 0; i < t.size(); i++) {
                Object tool = t.getValue(i);
                JsonObject fn = tool instanceof JsonObject o && "function".equals(o.getValue("type")) && o.getValue("function") instanceof JsonObject f ? f : null;
                if (fn == null || !(fn.getValue("name") instanceof String name) || name.isBlank()) {
                    throw OpenAiError.invalid("tools", "tools[" + i + "] must be {\"type\": \"function\", \"function\": {\"name\": ..., \"parameters\": ...}}");
                }
                if (name.length() > MAX_TOOL_NAME_CHARS) {
                    throw OpenAiError.invalid("tools", "tools[" + i + "].function.name may be at most " + MAX_TOOL_NAME_CHARS + " characters long");
                }
            }
            tools = t;
        }
        Object choice = chat ? body.getValue("tool_choice") : null;
        if (choice != null && !"auto".equals(choice) && !"none".equals(choice)) {
            throw OpenAiError.unprocessable("tool_choice", "tool_choice must be \"auto\" or \"none\" here");
        }
        Object seed = body.getValue("seed");
        if (seed != null && !(seed instanceof Number num && num.doubleValue() == Math.rint(num.doubleValue()))) {
            throw OpenAiError.invalid("seed", "seed must be an integer");
        }
        Object user = body.getValue("user");
        if (user != null && !(user instanceof String)) {
            throw OpenAiError.invalid("user", "user must be a string");
        }
        if (user instanceof String u && u.length() > MAX_USER_CHARS) {
            throw OpenAiError.invalid("user", "user may be at most " + MAX_USER_CHARS + " characters long");
        }
        Object metadata = body.getValue("metadata");
        if (metadata != null) {
            if (!(metadata instanceof JsonObject pairs) || pairs.size() > MAX_METADATA) {
                throw OpenAiError.invalid("metadata", "metadata must be an object of at most " + MAX_METADATA + " string pairs");
            }
            for (String k : pairs.fieldNames()) {
                if (k.length() > MAX_METADATA_KEY_CHARS || !(pairs.getValue(k) instanceof String v) || v.length() > MAX_METADATA_VALUE_CHARS) {
                    throw OpenAiError.invalid("metadata", "metadata keys may be at most " + MAX_METADATA_KEY_CHARS
                            + " characters and values strings of at most " + MAX_METADATA_VALUE_CHARS);
                }
            }
        }
        return new ChatRequest(model, messages, prompt, max == null ? defaultMaxTokens : max, max != null, temperature, topP, List.copyOf(stop),
                stream, includeUsage, frequency, presence, logprobs, topLogprobs, seed == null ? null : ((Number) seed).longValue(), tools);
    }

    private static String string(JsonObject body, String field) {
        Object v = body.getValue(field);
        if (v != null && !(v instanceof String)) {
            throw OpenAiError.invalid(field, field + " must be a string");
        }
        return (String) v;
    }

    private static boolean bool(JsonObject body, String field) {
        Object v = body.getValue(field);
        if (v == null) {
            return false;
        }
        if (!(v instanceof Boolean b)) {
            throw OpenAiError.invalid(field, field + " must be true or false");
        }
        return b;
    }

    private static boolean isTrue(JsonObject body, String field) {
        return Boolean.TRUE.equals(body.getValue(field));
    }

    private static Integer integer(JsonObject body, String field) {
        Object v = body.getValue(field);
        if (v == null) {
            return null;
        }
        if (!(v instanceof Number n) || n.doubleValue() != Math.rint(n.doubleValue()) || Math.abs(n.doubleValue()) > Integer.MAX_VALUE) {
            throw OpenAiError.invalid(field, field + " must be an integer");
        }
        return n.intValue();
    }

    private static double number(JsonObject body, String field, double fallback, double min, double max) {
        Object v = body.getValue(field);
        if (v == null) {
            return fallback;
        }
        if (!(v instanceof Number n)) {
            throw OpenAiError.invalid(field, field + " must be a number");
        }
        double d = n.doubleValue();
        if (!(d >= min && d <= max)) {
            throw OpenAiError.invalid(field, field + " must be between " + fmt(min) + " and " + fmt(max));
        }
        return d;
    }

    private static String fmt(double d) {
        return d == Math.rint(d) ? String.valueOf((long) d) : String.valueOf(d);
    }

    /** The body the tokenizer service renders: messages (text parts are joined there) and tools. */
    JsonObject tokenizeBody() {
        if (messages == null) {
            return new JsonObject().put("text", prompt);
        }
        JsonObject body = new JsonObject().put("messages", messages).put("add_generation_prompt", true);
        if (tools != null) {
            body.put("tools", tools);
        }
        return body;
    }

}
