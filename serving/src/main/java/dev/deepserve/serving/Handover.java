package dev.deepserve.serving;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * What a prefill instance decided once a prompt was done, travelling in the KV stream's END frame: the first token
 * (the decode instance emits it), the MTP draft for the position after it (-1: none) and the prompt tokens served
 * from the prefill instance's prefix cache (billed as cache hits).
 */
public record Handover(int firstToken, int draft, int cachedTokens) {

    private static final ObjectMapper JSON = new ObjectMapper();

    public String json() {
        return JSON.createObjectNode().put("first_token", firstToken).put("draft", draft).put("cached_tokens", cachedTokens).toString();
    }

    /** Reads an END frame's trailer; throws {@link IllegalArgumentException} when it is not one. */
    public static Handover parse(String trailer) {
        JsonNode n;
        try {
            n = JSON.readTree(trailer);
        } catch (java.io.IOException e) {
            throw new IllegalArgumentException("KV transfer: the trailer is not JSON");
        }
        if (n == null || !integer(n.path("first_token")) || !integer(n.path("draft")) || !integer(n.path("cached_tokens"))) {
            throw new IllegalArgumentException("KV transfer: the trailer needs integer first_token, draft and cached_tokens");
        }
        return new Handover(n.get("first_token").intValue(), n.get("draft").intValue(), n.get("cached_tokens").intValue());
    }

    private static boolean integer(JsonNode n) {
        return n.isIntegralNumber() && n.canConvertToInt();
    }
}
