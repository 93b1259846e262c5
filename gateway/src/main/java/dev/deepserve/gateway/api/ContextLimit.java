package dev.deepserve.gateway.api;

import dev.deepserve.gateway.OpenAiError;

import java.util.OptionalInt;

/**
 * DeepSeek's context rule for one request, checked before any work: the prompt and the output it asks for must fit
 * the model's context. A request that names {@code max_tokens} is refused when they do not (with DeepSeek's wording
 * and the real numbers); one that does not gets the default cut to what its prompt leaves, as DeepSeek's API and vLLM
 * do. An operator may also cap prompts alone ({@code DEEPSERVE_MAX_PROMPT_TOKENS}). Pure: numbers in, a number or a
 * 400 out.
 */
final class ContextLimit {

    private ContextLimit() {
    }

    /**
     * The max_tokens the request gets.
     *
     * @param context   the engines' context, empty while unknown (then only their own check applies)
     * @param promptCap the operator's cap on prompt tokens, empty when none
     * @param field     the request field that holds the prompt ({@code messages} or {@code prompt}), named in the error
     * @param asked     max_tokens as the request gave it, or the default when {@code given} is false
     */
    static int maxTokens(OptionalInt context, OptionalInt promptCap, String field, int prompt, int asked, boolean given) {
        if (promptCap.isPresent() && prompt > promptCap.getAsInt()) {
            throw OpenAiError.invalid(field, "This deployment accepts at most " + promptCap.getAsInt() + " prompt tokens. However, your "
                    + noun(field) + " resulted in " + prompt + " tokens. Please reduce the length of the " + noun(field) + ".");
        }
        if (context.isEmpty()) {
            return asked;
        }
        int limit = context.getAsInt();
        if (prompt >= limit || given && (long) prompt + asked > limit) {
            throw OpenAiError.invalid(field, given
                    ? "This model's maximum context length is " + limit + " tokens. However, you requested " + ((long) prompt + asked) + " tokens ("
                      + prompt + " in the " + noun(field) + ", " + asked + " in the completion). Please reduce the length of the " + noun(field)
                      + " or completion."
                    : "This model's maximum context length is " + limit + " tokens. However, your " + noun(field) + " resulted in " + prompt
                      + " tokens. Please reduce the length of the " + noun(field) + ".");
        }
        return Math.min(asked, limit - prompt);
    }

    private static String noun(String field) {
        return field.equals("messages") ? "messages" : "prompt";
    }
}
