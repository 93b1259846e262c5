package dev.deepserve.gateway.upstream;

import io.vertx.core.buffer.Buffer;
import io.vertx.core.json.JsonObject;
import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;

/**
 * Reshaping an upstream's answer: its usage merged with ours (its counts kept, our cache split and cost added), a
 * non-JSON answer left as it is, reported counts bounded, and the generated text of chat, legacy and tool-call events.
 */
class UpstreamResponsesTest {

    static JsonObject ours() {
        return new JsonObject().put("prompt_tokens", 10).put("completion_tokens", 5).put("total_tokens", 15)
                .put("prompt_cache_hit_tokens", 4).put("prompt_cache_miss_tokens", 6).put("cost", "0.00001234");
    }

    @Test
    void theUpstreamsUsageKeepsItsCountsAndGainsOurSplitAndCost() {
        JsonObject upstream = new JsonObject().put("prompt_tokens", 11).put("completion_tokens", 5).put("total_tokens", 16)
                .put("prompt_tokens_details", new JsonObject()).put("cost", "9.99");
        JsonObject merged = UpstreamResponses.merged(upstream, ours());
        assertEquals(11, merged.getInteger("prompt_tokens"), "the upstream's own count stays");
        assertEquals(4, merged.getInteger("prompt_cache_hit_tokens"));
        assertEquals(4, merged.getJsonObject("prompt_tokens_details").getInteger("cached_tokens"));
        assertEquals("0.00001234", merged.getString("cost"), "the cost is always what we charged");
        assertEquals(new JsonObject().put("prompt_tokens", 11).put("completion_tokens", 5).put("total_tokens", 16)
                .put("prompt_tokens_details", new JsonObject()).put("cost", "9.99"), upstream, "the upstream's object is not changed");
        assertEquals(ours(), UpstreamResponses.merged(null, ours()), "ours alone when the upstream reported none");
        assertSame(upstream, UpstreamResponses.merged(upstream, new JsonObject()));
    }

    @Test
    void aWholeAnswerGetsTheMergedUsageUnlessItIsNotAJsonObject() {
        Buffer answer = new JsonObject().put("id", "x").put("usage", new JsonObject().put("prompt_tokens", 10)).toBuffer();
        JsonObject out = new JsonObject(UpstreamResponses.withOurUsage(answer, ours()));
        assertEquals("x", out.getString("id"));
        assertEquals("0.00001234", out.getJsonObject("usage").getString("cost"));
        Buffer html = Buffer.buffer("<html>not json</html>");
        assertEquals(html, UpstreamResponses.withOurUsage(html, ours()));
    }

    @Test
    void reportedCountsAreBoundedAndGuessesRoundUp() {
        assertEquals(0, UpstreamResponses.intOf(new JsonObject().put("n", -5), "n"));
        assertEquals(100_000_000, UpstreamResponses.intOf(new JsonObject().put("n", Long.MAX_VALUE), "n"));
        assertEquals(0, UpstreamResponses.intOf(new JsonObject().put("n", "12"), "n"), "a string is not a count");
        assertEquals(7, UpstreamResponses.intOf(new JsonObject().put("n", 7.9), "n"));
        assertEquals(1, UpstreamResponses.guess("a"));
        assertEquals(2, UpstreamResponses.guess("héllo"), "bytes, not characters: 6 bytes");
    }

    @Test
    void theGeneratedTextOfEventsIsCollected() {
        StringBuilder out = new StringBuilder();
        UpstreamResponses.collectText(true, Buffer.buffer("data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"think \",\"content\":\"Hi\"}}]}\n\n"), out);
        UpstreamResponses.collectText(true, Buffer.buffer("data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n"), out);
        UpstreamResponses.collectText(true, Buffer.buffer("data: [DONE]\n\n"), out);
        UpstreamResponses.collectText(true, Buffer.buffer("data: not json\n\n"), out);
        assertEquals("think Hif{}", out.toString());
        StringBuilder whole = new StringBuilder();
        UpstreamResponses.collectText(false, Buffer.buffer("{\"choices\":[{\"message\":{\"content\":\"Hello\"}},{\"text\":\" legacy\"}]}"), whole);
        assertEquals("Hello legacy", whole.toString());
    }
}
