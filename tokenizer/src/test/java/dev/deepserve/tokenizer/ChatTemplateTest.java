package dev.deepserve.tokenizer;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.Test;

import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * DeepSeek-V3's chat template rendered by Jinjava against Python's jinja2 as Hugging Face configures it, on hundreds
 * of conversations: system prompts (several, merged), users, assistants with text or tool calls, tool outputs (first
 * and following), with and without the generation prompt.
 */
class ChatTemplateTest {

    static final String[] TEXTS = {"Hi", "What's the weather in Paris?", "多行\n文本\n\n", "  spaces  ", "emoji 😀👍🏽", "{\"json\": [1, 2]}",
            "<｜User｜> inside", "a\tb\r\nc", "", "Line1\nLine2", "quotes ' \" ` and {{ braces }} {% tags %}"};

    static Map<String, Object> message(SplittableRandom r, String role) {
        Map<String, Object> m = new HashMap<>();
        m.put("role", role);
        if (role.equals("assistant") && r.nextInt(3) == 0) {
            m.put("content", null);
            List<Map<String, Object>> calls = new ArrayList<>();
            int n = 1 + r.nextInt(3);
            for (int i = 0; i < n; i++) {
                calls.add(Map.of("type", "function", "id", "call_" + i,
                        "function", Map.of("name", "tool_" + r.nextInt(5), "arguments", "{\"x\": " + r.nextInt(100) + ", \"s\": \"" + TEXTS[r.nextInt(5)] + "\"}")));
            }
            m.put("tool_calls", calls);
        } else {
            m.put("content", TEXTS[r.nextInt(TEXTS.length)]);
        }
        return m;
    }

    static List<Map<String, Object>> conversation(SplittableRandom r) {
        List<Map<String, Object>> messages = new ArrayList<>();
        String[] roles = {"system", "user", "assistant", "tool"};
        int n = 1 + r.nextInt(8);
        for (int i = 0; i < n; i++) {
            messages.add(message(r, roles[r.nextInt(roles.length)]));
        }
        return messages;
    }

    @Test
    void rendersExactlyAsJinja2() throws Exception {
        Tokenizer t = Tokenizer.load(TokenizerFiles.dir());
        ChatTemplate template = t.chatTemplate();
        SplittableRandom r = new SplittableRandom(8);
        ObjectMapper m = new ObjectMapper();
        ObjectNode request = m.createObjectNode();
        request.put("template", template.source());
        request.put("bos_token", t.bosToken());
        request.put("eos_token", t.eosToken());
        ArrayNode cases = request.putArray("cases");
        List<String> ours = new ArrayList<>();
        for (int i = 0; i < 400; i++) {
            List<Map<String, Object>> messages = conversation(r);
            boolean prompt = r.nextBoolean();
            ObjectNode c = cases.addObject();
            c.set("messages", m.valueToTree(messages));
            c.put("add_generation_prompt", prompt);
            // render from the JSON form, as the service receives it
            ours.add(template.render(ChatTemplate.messages(c.get("messages")), prompt, Map.of()));
        }
        List<String> expected = jinja2(m.writeValueAsString(request));
        assertEquals(ours.size(), expected.size());
        for (int i = 0; i < ours.size(); i++) {
            assertEquals(expected.get(i), ours.get(i), "conversation " + i + ": " + cases.get(i).get("messages"));
        }
    }

    @Test
    void aSimpleConversationRendersAsDeepSeekDocuments() {
        ChatTemplate template = Tokenizer.load(TokenizerFiles.dir()).chatTemplate();
        String out = template.render(List.of(Map.of("role", "system", "content", "Be brief."), Map.of("role", "user", "content", "Hi")), true, Map.of());
        assertEquals("<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜>", out);
    }

    static List<String> jinja2(String request) throws Exception {
        Path script = Files.createTempFile("chat_template_oracle", ".py");
        try (InputStream in = ChatTemplateTest.class.getResourceAsStream("/chat_template_oracle.py")) {
            Files.write(script, in.readAllBytes());
        }
        Process p = new ProcessBuilder("python3", script.toString()).redirectError(ProcessBuilder.Redirect.INHERIT).start();
        p.getOutputStream().write(request.getBytes(StandardCharsets.UTF_8));
        p.getOutputStream().close();
        byte[] out = p.getInputStream().readAllBytes();
        assertTrue(p.waitFor(60, TimeUnit.SECONDS));
        assertEquals(0, p.exitValue(), "python3 with jinja2 is needed for this oracle (apt install python3-jinja2)");
        Files.deleteIfExists(script);
        return List.of(new ObjectMapper().readValue(out, String[].class));
    }
}
