package dev.deepserve.tokenizer;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.hubspot.jinjava.Jinjava;
import com.hubspot.jinjava.JinjavaConfig;
import com.hubspot.jinjava.interpret.RenderResult;
import com.hubspot.jinjava.interpret.TemplateError;

import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The model's chat template ({@code tokenizer_config.json} {@code chat_template}), rendered with Jinjava, a maintained
 * Jinja engine for Java. Messages are plain maps shaped like the OpenAI request: role, content (string or null),
 * tool_calls ({@code [{type, function: {name, arguments}}]}), tool_call_id.
 */
public final class ChatTemplate {

    private static final ObjectMapper JSON = new ObjectMapper();

    private final String source;
    private final String bosToken;
    private final String eosToken;
    private final Jinjava jinjava;

    private ChatTemplate(String source, String bosToken, String eosToken) {
        this.source = source;
        this.bosToken = bosToken;
        this.eosToken = eosToken;
        // trim_blocks and lstrip_blocks: the whitespace rules Hugging Face renders chat templates with. Nested
        // interpretation off: message text containing "{{ }}" or "{% %}" is data, never template code.
        this.jinjava = new Jinjava(JinjavaConfig.newBuilder().withFailOnUnknownTokens(false).withTrimBlocks(true).withLstripBlocks(true)
                .withNestedInterpretationEnabled(false).build());
    }

    static ChatTemplate from(JsonNode config, String bos, String eos) {
        JsonNode t = config.get("chat_template");
        if (t == null || t.isNull()) {
            return null;
        }
        if (t.isArray()) {
            for (JsonNode named : t) {
                if ("default".equals(named.path("name").asText())) {
                    return new ChatTemplate(named.path("template").asText(), bos, eos);
                }
            }
            throw new TokenizerFormatException("tokenizer_config.json chat_template list has no template named 'default'");
        }
        return new ChatTemplate(t.asText(), bos, eos);
    }

    public String source() {
        return source;
    }

    /**
     * Renders a conversation.
     *
     * @param messages            OpenAI-shaped messages as maps (JSON objects converted with Jackson are fine)
     * @param addGenerationPrompt end with the assistant prefix so the model answers
     * @param extra               further template variables (e.g. {@code tools}); may be empty
     */
    public String render(List<Map<String, Object>> messages, boolean addGenerationPrompt, Map<String, Object> extra) {
        Map<String, Object> context = new HashMap<>(extra);
        context.put("messages", messages);
        context.put("add_generation_prompt", addGenerationPrompt);
        context.put("bos_token", bosToken == null ? "" : bosToken);
        context.put("eos_token", eosToken == null ? "" : eosToken);
        RenderResult r = jinjava.renderForResult(source, context);
        for (TemplateError e : r.getErrors()) {
            if (e.getSeverity() == TemplateError.ErrorType.FATAL) {
                throw new IllegalArgumentException("chat template failed: " + e.getMessage());
            }
        }
        return r.getOutput();
    }

    /** Converts JSON messages (as a client sends them) into the maps {@link #render} takes. */
    @SuppressWarnings("unchecked")
    public static List<Map<String, Object>> messages(JsonNode array) {
        return JSON.convertValue(array, List.class);
    }
}
