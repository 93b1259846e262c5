package dev.deepserve.tokenize.api;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.tokenizer.ChatTemplate;
import dev.deepserve.tokenizer.Tokenizer;
import dev.deepserve.tokenize.config.TokenizerConfig;
import dev.deepserve.tokenize.domain.TokenizerHolder;
import io.smallrye.common.annotation.Blocking;
import jakarta.ws.rs.Consumes;
import jakarta.ws.rs.POST;
import jakarta.ws.rs.Path;
import jakarta.ws.rs.Produces;
import jakarta.ws.rs.core.MediaType;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * {@code POST /tokenize} (text, or chat messages rendered through the model's chat template), {@code POST /detokenize}
 * and {@code POST /chat-template}. Special tokens are never added: the chat template writes the BOS itself.
 */
@Path("/")
@Consumes(MediaType.APPLICATION_JSON)
@Produces(MediaType.APPLICATION_JSON)
@Blocking
public class TokenizerResource {

    private static final Set<String> ROLES = Set.of("system", "user", "assistant", "tool");
    private static final ObjectMapper JSON = new ObjectMapper();

    private final TokenizerHolder holder;
    private final TokenizerConfig config;

    TokenizerResource(TokenizerHolder holder, TokenizerConfig config) {
        this.holder = holder;
        this.config = config;
    }

    /** {"text": "..."} or {"messages": [...], "add_generation_prompt": true} → {"ids": [...], "count": n}. */
    @POST
    @Path("tokenize")
    public ObjectNode tokenize(JsonNode body) {
        Tokenizer t = holder.get();
        ObjectNode out = JsonNodeFactory.instance.objectNode();
        String text;
        if (object(body).has("messages")) {
            if (body.has("text")) {
                throw ApiError.badRequest("text", "send either text or messages, not both");
            }
            text = render(t, body);
            out.put("prompt", text);
        } else {
            JsonNode node = body.get("text");
            if (node == null || !node.isTextual()) {
                throw ApiError.badRequest("text", "text must be a string (or send messages)");
            }
            text = node.asText();
            limit(text.length());
        }
        int[] ids = t.encode(text);
        ArrayNode array = out.putArray("ids");
        for (int id : ids) {
            array.add(id);
        }
        out.put("count", ids.length);
        return out;
    }

    /** {"ids": [...], "skip_special_tokens": false} → {"text": "..."}. */
    @POST
    @Path("detokenize")
    public ObjectNode detokenize(JsonNode body) {
        Tokenizer t = holder.get();
        JsonNode ids = object(body).get("ids");
        if (ids == null || !ids.isArray()) {
            throw ApiError.badRequest("ids", "ids must be an array of token ids");
        }
        if (ids.size() > config.maxIds()) {
            throw new ApiError(413, "invalid_request_error", "ids", "at most " + config.maxIds() + " ids per request, got " + ids.size());
        }
        int[] values = new int[ids.size()];
        for (int i = 0; i < values.length; i++) {
            JsonNode id = ids.get(i);
            if (!id.canConvertToInt() || !id.isIntegralNumber() || id.asInt() < 0 || id.asInt() >= t.vocabSize() || t.token(id.asInt()) == null) {
                throw ApiError.badRequest("ids", "ids[" + i + "] = " + id + " is not a token id of this vocabulary (0.." + (t.vocabSize() - 1) + ")");
            }
            values[i] = id.asInt();
        }
        boolean skip = flag(body, "skip_special_tokens", false);
        ObjectNode out = JsonNodeFactory.instance.objectNode();
        out.put("text", t.decode(values, skip));
        return out;
    }

    /** {"messages": [...], "add_generation_prompt": true} → {"prompt": "..."}. */
    @POST
    @Path("chat-template")
    public ObjectNode chatTemplate(JsonNode body) {
        ObjectNode out = JsonNodeFactory.instance.objectNode();
        out.put("prompt", render(holder.get(), object(body)));
        return out;
    }

    private String render(Tokenizer t, JsonNode body) {
        if (!t.hasChatTemplate()) {
            throw new ApiError(422, "invalid_request_error", "messages", "this model's tokenizer_config.json has no chat_template");
        }
        List<Map<String, Object>> messages = messages(body.get("messages"));
        Map<String, Object> extra = new LinkedHashMap<>();
        if (body.has("tools")) {
            extra.put("tools", JSON.convertValue(body.get("tools"), List.class));
        }
        try {
            return t.chatTemplate().render(messages, flag(body, "add_generation_prompt", true), extra);
        } catch (IllegalArgumentException e) {
            throw new ApiError(422, "invalid_request_error", "messages", e.getMessage());
        }
    }

    /** OpenAI-shaped messages; content parts of type text are joined, as the model sees plain text. */
    private List<Map<String, Object>> messages(JsonNode array) {
        if (array == null || !array.isArray() || array.isEmpty()) {
            throw ApiError.badRequest("messages", "messages must be a non-empty array");
        }
        long chars = 0;
        List<Map<String, Object>> out = new ArrayList<>();
        for (int i = 0; i < array.size(); i++) {
            JsonNode m = array.get(i);
            String where = "messages[" + i + "]";
            if (!m.isObject()) {
                throw ApiError.badRequest("messages", where + " must be an object");
            }
            String role = m.path("role").asText(null);
            if (role == null || !ROLES.contains(role)) {
                throw ApiError.badRequest("messages", where + ".role must be one of system, user, assistant, tool");
            }
            Map<String, Object> msg = ChatTemplate.messages(JsonNodeFactory.instance.arrayNode().add(m)).get(0);
            JsonNode content = m.get("content");
            if (content == null || content.isNull()) {
                if (!role.equals("assistant") || !m.has("tool_calls")) {
                    throw ApiError.badRequest("messages", where + ".content is required");
                }
                msg.put("content", null);
            } else if (content.isTextual()) {
                chars += content.asText().length();
            } else if (content.isArray()) {
                StringBuilder sb = new StringBuilder();
                for (JsonNode part : content) {
                    if (!"text".equals(part.path("type").asText()) || !part.path("text").isTextual()) {
                        throw ApiError.badRequest("messages", where + ".content parts must be {\"type\": \"text\", \"text\": ...}");
                    }
                    sb.append(part.get("text").asText());
                }
                chars += sb.length();
                msg.put("content", sb.toString());
            } else {
                throw ApiError.badRequest("messages", where + ".content must be a string or an array of text parts");
            }
            out.add(msg);
        }
        limit(chars);
        return out;
    }

    private void limit(long chars) {
        if (chars > config.maxTextChars()) {
            throw new ApiError(413, "invalid_request_error", null, "text too long: " + chars + " characters, at most " + config.maxTextChars());
        }
    }

    private static JsonNode object(JsonNode body) {
        if (body == null || !body.isObject()) {
            throw ApiError.badRequest(null, "request body must be a JSON object");
        }
        return body;
    }

    private static boolean flag(JsonNode body, String name, boolean fallback) {
        JsonNode v = body.get(name);
        if (v == null || v.isNull()) {
            return fallback;
        }
        if (!v.isBoolean()) {
            throw ApiError.badRequest(name, name + " must be true or false");
        }
        return v.asBoolean();
    }
}
