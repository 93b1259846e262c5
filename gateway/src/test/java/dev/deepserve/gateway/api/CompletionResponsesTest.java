package dev.deepserve.gateway.api;

import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The completion response shapes the SDKs parse: chat and legacy chunks (with and without logprobs), the tool-call
 * chunk, the usage chunk and the whole non-streamed response, field by field, and the SSE framing.
 */
class CompletionResponsesTest {

    final CompletionResponses chat = new CompletionResponses("chatcmpl-1", 1700000000, "deepseek-chat", true);
    final CompletionResponses legacy = new CompletionResponses("chatcmpl-2", 1700000001, "deepseek-chat", false);

    static JsonObject tokenEvent() {
        return new JsonObject().put("type", "token").put("token", "Hi").put("logprob", -0.25).put("bytes", new JsonArray().add(72).add(105))
                .put("top_logprobs", new JsonArray().add(new JsonObject().put("token", "Hi").put("logprob", -0.25).put("bytes", new JsonArray().add(72).add(105)))
                        .add(new JsonObject().put("token", "Yo").put("logprob", -1.5).put("bytes", new JsonArray().add(89).add(111))));
    }

    @Test
    void aChatChunkCarriesTheDeltaAndTheIdentity() {
        JsonObject c = chat.chunk("Hello", null, null);
        assertEquals("chatcmpl-1", c.getString("id"));
        assertEquals("chat.completion.chunk", c.getString("object"));
        assertEquals(1700000000L, c.getLong("created"));
        assertEquals("deepseek-chat", c.getString("model"));
        assertEquals("fp_deepserve_0", c.getString("system_fingerprint"));
        JsonObject choice = c.getJsonArray("choices").getJsonObject(0);
        assertEquals(0, choice.getInteger("index"));
        assertEquals("Hello", choice.getJsonObject("delta").getString("content"));
        assertTrue(choice.containsKey("logprobs") && choice.getValue("logprobs") == null, "logprobs is present and null");
        assertTrue(choice.containsKey("finish_reason") && choice.getValue("finish_reason") == null);

        JsonObject last = chat.chunk(null, null, "stop").getJsonArray("choices").getJsonObject(0);
        assertFalse(last.getJsonObject("delta").containsKey("content"), "the last chunk's delta is empty");
        assertEquals("stop", last.getString("finish_reason"));

        JsonObject role = chat.roleChunk().getJsonArray("choices").getJsonObject(0).getJsonObject("delta");
        assertEquals("assistant", role.getString("role"));
        assertEquals("", role.getString("content"));
    }

    @Test
    void logprobsTakeTheChatShapeOrTheLegacyParallelArrays() {
        JsonObject lp = CompletionResponses.logprob(tokenEvent());
        assertNull(CompletionResponses.logprob(new JsonObject().put("type", "token")), "no logprob entry without one from the engine");
        JsonObject chatLp = chat.chunk("Hi", lp, null).getJsonArray("choices").getJsonObject(0).getJsonObject("logprobs");
        JsonObject entry = chatLp.getJsonArray("content").getJsonObject(0);
        assertEquals("Hi", entry.getString("token"));
        assertEquals(-0.25, entry.getDouble("logprob"));
        assertEquals(new JsonArray().add(72).add(105), entry.getJsonArray("bytes"));
        assertEquals(2, entry.getJsonArray("top_logprobs").size());

        JsonObject choice = legacy.chunk("Hi", lp, null).getJsonArray("choices").getJsonObject(0);
        assertEquals("text_completion", legacy.chunkBase().getString("object"));
        assertEquals("Hi", choice.getString("text"));
        JsonObject old = choice.getJsonObject("logprobs");
        assertEquals(new JsonArray().add("Hi"), old.getJsonArray("tokens"));
        assertEquals(new JsonArray().add(-0.25), old.getJsonArray("token_logprobs"));
        assertEquals(-1.5, old.getJsonArray("top_logprobs").getJsonObject(0).getDouble("Yo"));
    }

    @Test
    void toolCallsAreIndexedAndUsageComesInAChunkWithoutChoices() {
        JsonArray calls = new JsonArray().add(new JsonObject().put("id", "call_0").put("type", "function")
                .put("function", new JsonObject().put("name", "get_weather").put("arguments", "{\"city\":\"Paris\"}")))
                .add(new JsonObject().put("id", "call_1").put("type", "function").put("function", new JsonObject().put("name", "t").put("arguments", "{}")));
        JsonArray deltas = chat.toolCallsChunk(calls).getJsonArray("choices").getJsonObject(0).getJsonObject("delta").getJsonArray("tool_calls");
        assertEquals(0, deltas.getJsonObject(0).getInteger("index"));
        assertEquals(1, deltas.getJsonObject(1).getInteger("index"));
        assertEquals("get_weather", deltas.getJsonObject(0).getJsonObject("function").getString("name"));
        assertFalse(calls.getJsonObject(0).containsKey("index"), "the parsed calls themselves are not changed");

        JsonObject usage = new JsonObject().put("prompt_tokens", 3).put("completion_tokens", 2).put("total_tokens", 5);
        JsonObject u = chat.usageChunk(usage);
        assertTrue(u.getJsonArray("choices").isEmpty());
        assertEquals(5, u.getJsonObject("usage").getInteger("total_tokens"));
        assertEquals("data: {\"a\":1}\n\n", CompletionResponses.sse(new JsonObject().put("a", 1)));
    }

    @Test
    void theWholeResponseHoldsTheMessageOrTheToolCalls() {
        JsonObject usage = new JsonObject().put("prompt_tokens", 3);
        JsonObject plain = chat.complete("Hello there", null, null, "length", usage);
        assertEquals("chat.completion", plain.getString("object"));
        JsonObject choice = plain.getJsonArray("choices").getJsonObject(0);
        assertEquals("assistant", choice.getJsonObject("message").getString("role"));
        assertEquals("Hello there", choice.getJsonObject("message").getString("content"));
        assertEquals("length", choice.getString("finish_reason"));
        assertNull(choice.getValue("logprobs"));
        assertEquals(usage, plain.getJsonObject("usage"));

        JsonArray calls = new JsonArray().add(new JsonObject().put("id", "call_0"));
        JsonObject tools = chat.complete("ignored raw text", null, new ToolCalls.Parsed("Let me check.", calls), "tool_calls", usage);
        JsonObject message = tools.getJsonArray("choices").getJsonObject(0).getJsonObject("message");
        assertEquals("Let me check.", message.getString("content"));
        assertEquals(calls, message.getJsonArray("tool_calls"));

        JsonArray lps = new JsonArray().add(CompletionResponses.logprob(tokenEvent()));
        JsonObject text = legacy.complete("Hi", lps, null, "stop", usage);
        assertEquals("text_completion", text.getString("object"));
        JsonObject legacyChoice = text.getJsonArray("choices").getJsonObject(0);
        assertEquals("Hi", legacyChoice.getString("text"));
        assertEquals(new JsonArray().add("Hi"), legacyChoice.getJsonObject("logprobs").getJsonArray("tokens"));
    }
}
