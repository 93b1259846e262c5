package dev.deepserve.gateway.upstream;

import io.vertx.core.buffer.Buffer;
import io.vertx.core.json.JsonObject;
import org.junit.jupiter.api.Test;

import java.io.IOException;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * Reading an upstream's whole answer: its usage and first finish reason whatever else it carries, and refusing what is
 * not one JSON object.
 */
class AnswerScanTest {

    @Test
    void readsUsageAndTheFirstFinishReasonWhateverElseTheAnswerCarries() throws Exception {
        String body = """
                {"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"{\\"usage\\": 1}","tool_calls":[{"id":"t"}]},
                "finish_reason":"length","logprobs":null},{"index":1,"finish_reason":"stop"}],"extra":{"nested":[1,2,{"usage":{}}]},
                "usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,"prompt_tokens_details":{"cached_tokens":8}}}""";
        AnswerScan a = AnswerScan.of(Buffer.buffer(body));
        assertEquals("length", a.finishReason());
        JsonObject expected = new JsonObject(body).getJsonObject("usage");
        assertEquals(expected, a.usage());
        assertEquals(8, a.usage().getJsonObject("prompt_tokens_details").getInteger("cached_tokens"));
    }

    @Test
    void anAnswerWithoutUsageOrChoicesHasNeither() throws Exception {
        AnswerScan a = AnswerScan.of(Buffer.buffer("{\"choices\":[],\"usage\":null}"));
        assertNull(a.usage());
        assertNull(a.finishReason());
    }

    @Test
    void whatIsNotOneJsonObjectIsRefused() {
        for (String bad : new String[] {"", "[1]", "{\"a\":1", "{\"a\":1} {\"b\":2}", "<html>oops</html>", "{\"choices\":[{\"finish_reason\":\"stop\"}"}) {
            assertThrows(IOException.class, () -> AnswerScan.of(Buffer.buffer(bad)), bad);
        }
    }
}
