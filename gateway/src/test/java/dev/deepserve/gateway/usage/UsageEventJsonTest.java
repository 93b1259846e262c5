package dev.deepserve.gateway.usage;

import dev.deepserve.gateway.api.ModelNames;
import dev.deepserve.gateway.auth.ApiKey;
import dev.deepserve.gateway.metering.Billable;
import dev.deepserve.accounting.EventIds;
import io.vertx.core.json.JsonObject;
import org.junit.jupiter.api.Test;

import java.math.BigDecimal;
import java.time.Instant;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The usage event written field by field reads back as exactly the fields billing expects. */
class UsageEventJsonTest {

    static final class Call extends Billable {
        Call(ApiKey key) {
            super(key);
        }

        @Override
        public String model() {
            return "mock/chat \"ü\"";
        }

        @Override
        public boolean streamed() {
            return true;
        }
    }

    @Test
    void everyFieldReadsBackExactly() {
        ApiKey key = new ApiKey("key-1", "acct \u00e9\u4e2d\"\\", "USD", null, null, null, null);
        Call call = new Call(key);
        call.clientLeft();
        UUID id = EventIds.next();
        Instant at = Instant.parse("2026-11-24T21:09:48.123456Z");
        String error = "upstream said \"no\"\n\ttab \u0001 and \ud83d\ude00";
        JsonObject extra = new JsonObject().put("estimated", true).put("upstream", "mock").put("upstream_model", "chat")
                .put("route", new JsonObject().put("tried", new io.vertx.core.json.JsonArray().add("a").add(2)));

        JsonObject read = new JsonObject(UsageEvents.eventJson(id, call, 7, 12, 30, new BigDecimal("0.00004512"), "USD", "length", at, error, extra));

        JsonObject expected = new JsonObject().put("event_id", id.toString()).put("request_id", call.id()).put("account_id", key.accountId())
                .put("api_key_id", "key-1").put("model", "mock/chat \"ü\"").put("prompt_cache_hit_tokens", 7).put("prompt_cache_miss_tokens", 12)
                .put("completion_tokens", 30).put("cost", "0.00004512").put("currency", "USD").put("finish_reason", "length").put("streamed", true)
                .put("client_disconnected", true).put("created", call.created()).put("completed_at", "2026-11-24T21:09:48.123456Z")
                .put("error", "upstream said \"no\"\uFFFD\uFFFDtab \uFFFD and \ud83d\ude00").put("estimated", true).put("upstream", "mock").put("upstream_model", "chat")
                .put("route", new JsonObject().put("tried", new io.vertx.core.json.JsonArray().add("a").add(2)));
        assertEquals(expected, read);
    }

    @Test
    void hostileErrorTextIsBoundedAndStorable() {
        Call call = new Call(new ApiKey("k", "a", "USD", null, null, null, null));
        String hostile = "a\u0000b\ud800c" + "x".repeat(1_000_000);
        JsonObject read = new JsonObject(UsageEvents.eventJson(EventIds.next(), call, 0, 5, 1, BigDecimal.ONE, "USD", "error", Instant.now(), hostile, null));
        String error = read.getString("error");
        assertEquals(500, error.length());
        assertTrue(error.startsWith("a\uFFFDb\uFFFDc"), error.substring(0, 10));
    }

    @Test
    void modelNamesAreBoundedToASafeCharset() {
        assertTrue(ModelNames.valid("deepseek-chat"));
        assertTrue(ModelNames.valid("ds/accounts/fireworks/models/deepseek-v3@2025-01:free+x_y.z"));
        for (String bad : new String[] {"", "a\u0000b", "x\ud800", "a b", "é", "m".repeat(257), "a\nb", "a\"b"}) {
            assertFalse(ModelNames.valid(bad), bad);
        }
        assertTrue(ModelNames.valid("m".repeat(256)));
    }

    @Test
    void noErrorAndNoExtraLeaveThoseFieldsOut() {
        Call call = new Call(new ApiKey("k", "a", "USD", null, null, null, null));
        JsonObject read = new JsonObject(UsageEvents.eventJson(EventIds.next(), call, 0, 5, 1, new BigDecimal("1E-8"), "USD", "stop", Instant.now(), null, null));
        assertFalse(read.containsKey("error"));
        assertFalse(read.containsKey("estimated"));
        assertEquals("0.00000001", read.getString("cost"));
        assertEquals(15, read.size());
    }

    @Test
    void requestIdsAreChatcmplAnd32HexDigitsAndDistinct() {
        java.util.Set<String> seen = new java.util.HashSet<>();
        for (int i = 0; i < 100_000; i++) {
            String id = Billable.requestId();
            assertTrue(id.matches("chatcmpl-[0-9a-f]{32}"), id);
            assertTrue(seen.add(id), "repeated " + id);
        }
    }
}
