package dev.deepserve.billing.messaging;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.deepserve.billing.api.ApiError;
import io.smallrye.mutiny.Uni;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.SqlConnection;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.enterprise.context.ApplicationScoped;

import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * What an administrator does with a dead letter, once and in one transaction: replay it (the reader and the ledger
 * take it now — after the cause was fixed) or write it off (it is never charged, and the cost the gateway set aside in
 * the account's {@code reserved} for billing to collect is released, so the account is not left holding it forever).
 */
@ApplicationScoped
public class DeadLetterResolution {

    private final Pool pool;
    private final UsageConsumer consumer;
    private final ObjectMapper json;

    DeadLetterResolution(Pool pool, UsageConsumer consumer, ObjectMapper json) {
        this.pool = pool;
        this.consumer = consumer;
        this.json = json;
    }

    /** Applies the dead letter's payload to the ledger now; a 422 naming why when it still cannot be. */
    public Uni<Map<String, Object>> replay(long id) {
        return pool.withTransaction(tx -> unresolved(tx, id).chain(row -> {
            String payload = new String(row.getBuffer("payload").getBytes(), StandardCharsets.UTF_8);
            Object parsed = consumer.parse(payload);
            if (parsed instanceof UsageConsumer.DeadLetter d) {
                throw new ApiError(422, "invalid_request_error", "dead letter " + id + " still cannot be applied: " + Poison.clean(d.reason()));
            }
            UsageConsumer.Received event = (UsageConsumer.Received) parsed;
            return consumer.apply(tx, List.of(event)).onFailure(Poison::is).transform(e -> new ApiError(422, "invalid_request_error",
                            "dead letter " + id + " still cannot be applied: " + Poison.clean(Poison.reason(e))))
                    .chain(inserted -> resolve(tx, id, "replayed", null, null).map(v -> view(id, "replayed", null, inserted == 0)));
        }));
    }

    /** Never charges the dead letter; releases the cost it had set aside (when its account and cost can be read). */
    public Uni<Map<String, Object>> writeOff(long id, String note) {
        return pool.withTransaction(tx -> unresolved(tx, id).chain(row -> {
            String account = row.getString("account_id");
            BigDecimal cost = cost(row.getBuffer("payload").getBytes());
            Uni<Void> release = account == null || cost == null ? Uni.createFrom().voidItem()
                    : tx.preparedQuery("UPDATE billing.accounts SET reserved = GREATEST(reserved - $2, 0) WHERE id = $1")
                            .execute(Tuple.of(account, cost)).replaceWithVoid();
            BigDecimal amount = cost == null ? BigDecimal.ZERO : cost;
            return release.chain(() -> resolve(tx, id, "written_off", amount, note)).map(v -> view(id, "written_off", amount, false));
        }));
    }

    private static Uni<Row> unresolved(SqlConnection tx, long id) {
        return tx.preparedQuery("SELECT account_id, payload, resolution FROM billing.usage_dead_letters WHERE id = $1 FOR UPDATE")
                .execute(Tuple.of(id)).map(rows -> {
                    if (rows.size() == 0) {
                        throw new ApiError(404, "invalid_request_error", "no dead letter " + id);
                    }
                    Row row = rows.iterator().next();
                    if (row.getString("resolution") != null) {
                        throw new ApiError(409, "invalid_request_error", "dead letter " + id + " is already " + row.getString("resolution").replace('_', ' '));
                    }
                    return row;
                });
    }

    private static Uni<Void> resolve(SqlConnection tx, long id, String resolution, BigDecimal writtenOff, String note) {
        return tx.preparedQuery("UPDATE billing.usage_dead_letters SET resolved_at = now(), resolution = $2, written_off = $3, note = $4 WHERE id = $1")
                .execute(Tuple.of(id, resolution, writtenOff, note)).replaceWithVoid();
    }

    /** The cost a payload names, when it is a readable non-negative amount within the ledger's range; else null. */
    private BigDecimal cost(byte[] payload) {
        try {
            JsonNode cost = json.readTree(payload).get("cost");
            BigDecimal c = cost == null || cost.isNull() ? null : new BigDecimal(cost.asText());
            return c == null || c.signum() < 0 || c.precision() - c.scale() > 18 ? null : c;
        } catch (java.io.IOException | RuntimeException e) {
            return null;
        }
    }

    private static Map<String, Object> view(long id, String resolution, BigDecimal writtenOff, boolean wasInLedger) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("id", id);
        out.put("resolution", resolution);
        if (writtenOff != null) {
            out.put("written_off", writtenOff.toPlainString());
        }
        if (wasInLedger) {
            out.put("note", "the ledger already had this event; nothing was charged twice");
        }
        return out;
    }
}
