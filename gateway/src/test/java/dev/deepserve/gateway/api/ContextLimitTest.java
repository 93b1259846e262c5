package dev.deepserve.gateway.api;

import dev.deepserve.gateway.OpenAiError;
import org.junit.jupiter.api.Test;

import java.util.OptionalInt;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * DeepSeek's context rule: prompt + max_tokens within the context, refused with DeepSeek's wording and the real numbers
 * when a given max_tokens does not fit, the default cut to what the prompt leaves when none was given, the operator's
 * prompt cap, and no gateway check while the engines' context is unknown.
 */
class ContextLimitTest {

    static final OptionalInt CONTEXT = OptionalInt.of(163_840);
    static final OptionalInt NONE = OptionalInt.empty();

    @Test
    void whatFitsIsTakenAsAsked() {
        assertEquals(4096, ContextLimit.maxTokens(CONTEXT, NONE, "messages", 16_800, 4096, true));
        assertEquals(4096, ContextLimit.maxTokens(CONTEXT, NONE, "messages", 16_800, 4096, false));
        assertEquals(1, ContextLimit.maxTokens(CONTEXT, NONE, "messages", 163_839, 1, true), "the last token of the context");
    }

    @Test
    void aGivenMaxTokensThatDoesNotFitIsRefusedInDeepSeeksWords() {
        OpenAiError e = assertThrows(OpenAiError.class, () -> ContextLimit.maxTokens(CONTEXT, NONE, "messages", 160_000, 8000, true));
        assertEquals(400, e.status);
        assertEquals("This model's maximum context length is 163840 tokens. However, you requested 168000 tokens (160000 in the messages, "
                + "8000 in the completion). Please reduce the length of the messages or completion.", e.getMessage());
        assertEquals("messages", e.body().getJsonObject("error").getString("param"));
        OpenAiError legacy = assertThrows(OpenAiError.class, () -> ContextLimit.maxTokens(OptionalInt.of(100), NONE, "prompt", 90, 20, true));
        assertEquals("This model's maximum context length is 100 tokens. However, you requested 110 tokens (90 in the prompt, 20 in the "
                + "completion). Please reduce the length of the prompt or completion.", legacy.getMessage());
    }

    @Test
    void withoutMaxTokensTheDefaultIsCutToWhatThePromptLeaves() {
        assertEquals(3840, ContextLimit.maxTokens(CONTEXT, NONE, "messages", 160_000, 4096, false));
        OpenAiError full = assertThrows(OpenAiError.class, () -> ContextLimit.maxTokens(CONTEXT, NONE, "messages", 163_840, 4096, false));
        assertEquals("This model's maximum context length is 163840 tokens. However, your messages resulted in 163840 tokens. "
                + "Please reduce the length of the messages.", full.getMessage());
    }

    @Test
    void theOperatorsPromptCapComesFirstAndAnUnknownContextLeavesTheCheckToTheEngine() {
        OpenAiError capped = assertThrows(OpenAiError.class, () -> ContextLimit.maxTokens(CONTEXT, OptionalInt.of(8192), "messages", 8193, 10, true));
        assertEquals("This deployment accepts at most 8192 prompt tokens. However, your messages resulted in 8193 tokens. "
                + "Please reduce the length of the messages.", capped.getMessage());
        assertEquals(10, ContextLimit.maxTokens(CONTEXT, OptionalInt.of(8192), "messages", 8192, 10, true));
        assertEquals(1_000_000, ContextLimit.maxTokens(NONE, NONE, "messages", 500_000, 1_000_000, true), "the engine checks it then");
        assertEquals(Integer.MAX_VALUE - 1, ContextLimit.maxTokens(OptionalInt.of(Integer.MAX_VALUE), NONE, "messages", 1, Integer.MAX_VALUE - 1, true));
        assertThrows(OpenAiError.class, () -> ContextLimit.maxTokens(OptionalInt.of(Integer.MAX_VALUE), NONE, "messages", 2, Integer.MAX_VALUE, true),
                "no int overflow near the top: the sum is taken in long");
    }
}
