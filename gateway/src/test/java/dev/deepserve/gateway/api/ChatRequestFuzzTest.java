package dev.deepserve.gateway.api;

import dev.deepserve.gateway.OpenAiError;
import com.code_intelligence.jazzer.junit.FuzzTest;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.json.DecodeException;
import io.vertx.core.json.JsonObject;

/**
 * Fuzz target: the chat and legacy completion request parser, from raw body bytes as a client sends them. A body is
 * either not JSON (the route answers 400), refused with an {@link OpenAiError} (a 4xx naming the field), or parsed into
 * a request whose every bound holds; nothing else may escape. Regression inputs: ChatRequestFuzzTestInputs.
 */
class ChatRequestFuzzTest {

    @FuzzTest(maxDuration = "10s")
    void parsesOrRefuses(byte[] body) {
        JsonObject json;
        try {
            json = new JsonObject(Buffer.buffer(body));
        } catch (DecodeException | ClassCastException notJson) {
            return;
        }
        for (boolean chat : new boolean[] {true, false}) {
            try {
                ModelNames.check(json.getValue("model"));
                ChatRequest r = ChatRequest.parse(json, chat, 4096, 8192);
                if (r.maxTokens() < 1 || r.maxTokens() > 8192 || r.stop().size() > ChatRequest.MAX_STOPS
                        || r.stop().stream().anyMatch(s -> s.isEmpty() || s.length() > ChatRequest.MAX_STOP_CHARS)
                        || r.tools() != null && r.tools().size() > ChatRequest.MAX_TOOLS) {
                    throw new AssertionError("a parsed request outside its bounds: " + r);
                }
                r.tokenizeBody().encode();
            } catch (OpenAiError refused) {
                if (refused.status < 400 || refused.status >= 500) {
                    throw new AssertionError("a bad request answered " + refused.status, refused);
                }
            }
        }
    }
}
