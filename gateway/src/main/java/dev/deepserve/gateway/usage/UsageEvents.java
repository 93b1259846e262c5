package dev.deepserve.gateway.usage;

import dev.deepserve.gateway.metering.Billable;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.util.ByteArrayBuilder;
import dev.deepserve.accounting.Money;
import dev.deepserve.accounting.StoredText;
import io.vertx.core.json.JsonObject;
import io.vertx.core.json.jackson.DatabindCodec;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.time.ZoneOffset;
import java.util.Map;
import java.util.UUID;

/** The usage event a request leaves — the one record billing charges from — as JSON (see {@link #eventJson}). */
public final class UsageEvents {

    private UsageEvents() {
    }

    /**
     * The usage event as billing reads it, written field by field (no map built, then encoded, per request); the
     * {@code extra} fields follow the fixed ones and must not repeat their names.
     */
    public static String eventJson(UUID eventId, Billable call, int hit, int miss, int completion, BigDecimal cost, String currency, String reason,
                                   Instant completedAt, String error, JsonObject extra) {
        // Vert.x's shared mapper's factory (as AnswerScan reads with): its codec writes any extra value, objects too
        try (ByteArrayBuilder out = new ByteArrayBuilder(640); JsonGenerator g = DatabindCodec.mapper().getFactory().createGenerator(out)) {
            g.writeStartObject();
            g.writeStringField("event_id", eventId.toString());
            g.writeStringField("request_id", call.id());
            g.writeStringField("account_id", call.key().accountId());
            g.writeStringField("api_key_id", call.key().id());
            g.writeStringField("model", call.model());
            g.writeNumberField("prompt_cache_hit_tokens", hit);
            g.writeNumberField("prompt_cache_miss_tokens", miss);
            g.writeNumberField("completion_tokens", completion);
            g.writeStringField("cost", Money.plain(cost));
            g.writeStringField("currency", currency);
            // an upstream's finish_reason and error text are its words, not ours (a hostile upstream chooses them):
            // bounded and cleaned, so billing can always store the event
            g.writeStringField("finish_reason", reason == null ? null : StoredText.clean(reason, 64));
            g.writeBooleanField("streamed", call.streamed());
            g.writeBooleanField("client_disconnected", call.clientGone());
            g.writeNumberField("created", call.created());
            g.writeStringField("completed_at", completedAt.atOffset(ZoneOffset.UTC).toString());
            if (error != null) {
                g.writeStringField("error", StoredText.clean(error, 500));
            }
            if (extra != null) {
                for (Map.Entry<String, Object> e : extra) {
                    g.writeFieldName(e.getKey());
                    g.writeObject(e.getValue());
                }
            }
            g.writeEndObject();
            g.flush();
            return new String(out.toByteArray(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }
}
