package dev.deepserve.billing.api;

import com.fasterxml.jackson.databind.JsonNode;
import dev.deepserve.accounting.Money;
import dev.deepserve.accounting.Price;
import io.smallrye.mutiny.Uni;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.ws.rs.Consumes;
import jakarta.ws.rs.GET;
import jakarta.ws.rs.POST;
import jakarta.ws.rs.Path;
import jakarta.ws.rs.Produces;
import jakarta.ws.rs.core.MediaType;
import jakarta.ws.rs.core.Response;

import java.math.BigDecimal;
import java.time.Instant;
import java.time.LocalTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeParseException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The pricing catalog: {@code GET /admin/prices} and {@code POST /admin/prices} to add a row — a new price takes
 * effect at its {@code effective_from} (prices are never edited in place, so past requests keep the price they had).
 */
@Path("/admin/prices")
@Produces(MediaType.APPLICATION_JSON)
@Consumes(MediaType.APPLICATION_JSON)
public class PriceResource {

    private final Pool pool;

    PriceResource(Pool pool) {
        this.pool = pool;
    }

    @GET
    public Uni<Map<String, Object>> list() {
        return pool.query("SELECT * FROM billing.prices ORDER BY model, effective_from, window_start NULLS FIRST").execute().map(rows -> {
            List<Map<String, Object>> out = new ArrayList<>();
            for (Row r : rows) {
                Map<String, Object> p = new LinkedHashMap<>();
                p.put("model", r.getString("model"));
                p.put("currency", r.getString("currency"));
                p.put("cache_hit_per_million", r.getBigDecimal("cache_hit_per_million").toPlainString());
                p.put("cache_miss_per_million", r.getBigDecimal("cache_miss_per_million").toPlainString());
                p.put("output_per_million", r.getBigDecimal("output_per_million").toPlainString());
                p.put("effective_from", r.getOffsetDateTime("effective_from").withOffsetSameInstant(ZoneOffset.UTC).toString());
                LocalTime ws = r.getLocalTime("window_start");
                LocalTime we = r.getLocalTime("window_end");
                p.put("window_start", ws == null ? null : ws.toString());
                p.put("window_end", we == null ? null : we.toString());
                out.add(p);
            }
            return Map.of("data", out);
        });
    }

    @POST
    public Uni<Response> add(JsonNode body) {
        if (body == null || !body.isObject()) {
            throw ApiError.badRequest("request body must be a JSON object");
        }
        String model = text(body, "model");
        String currency = body.hasNonNull("currency") ? text(body, "currency") : "USD";
        Instant from;
        try {
            from = body.hasNonNull("effective_from") ? OffsetDateTime.parse(text(body, "effective_from")).toInstant() : Instant.now();
        } catch (DateTimeParseException e) {
            throw ApiError.badRequest("effective_from must be an ISO-8601 instant such as 2026-12-01T00:00:00Z");
        }
        LocalTime ws;
        LocalTime we;
        try {
            ws = body.hasNonNull("window_start") ? LocalTime.parse(text(body, "window_start")) : null;
            we = body.hasNonNull("window_end") ? LocalTime.parse(text(body, "window_end")) : null;
        } catch (DateTimeParseException e) {
            throw ApiError.badRequest("window_start / window_end must be UTC times such as 16:30");
        }
        Price price;
        try {
            price = new Price(model, currency, amount(body, "cache_hit_per_million"), amount(body, "cache_miss_per_million"),
                    amount(body, "output_per_million"), from, ws, we);
        } catch (IllegalArgumentException e) {
            throw ApiError.badRequest(e.getMessage());
        }
        return pool.preparedQuery("INSERT INTO billing.prices VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING")
                .execute(Tuple.from(new Object[] {price.model(), price.currency(), price.cacheHitPerMillion(), price.cacheMissPerMillion(),
                        price.outputPerMillion(), price.effectiveFrom().atOffset(ZoneOffset.UTC), ws, we}))
                .map(r -> {
                    if (r.rowCount() == 0) {
                        throw new ApiError(409, "invalid_request_error", "a price for " + model + " from " + from + " in that window already exists");
                    }
                    return Response.status(201).entity(Map.of("model", model, "effective_from", from.toString(),
                            "output_per_million", Money.plain(price.outputPerMillion()))).build();
                });
    }

    private static String text(JsonNode body, String field) {
        JsonNode v = body.get(field);
        if (v == null || !v.isTextual() || v.asText().isBlank()) {
            throw ApiError.badRequest(field + " must be a non-empty string");
        }
        return v.asText();
    }

    private static BigDecimal amount(JsonNode body, String field) {
        JsonNode v = body.get(field);
        try {
            if (v != null && v.isTextual()) {
                return new BigDecimal(v.asText());
            }
            if (v != null && v.isNumber()) {
                return v.decimalValue();
            }
        } catch (NumberFormatException e) {
            // fall through
        }
        throw ApiError.badRequest(field + " must be a decimal amount per 1M tokens, e.g. \"0.27\"");
    }
}
