package dev.deepserve.billing.api;

import com.fasterxml.jackson.databind.JsonNode;
import dev.deepserve.accounting.Money;
import dev.deepserve.accounting.Price;
import dev.deepserve.billing.store.CatalogStore;
import dev.deepserve.billing.store.UniqueViolation;
import io.smallrye.mutiny.Uni;
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
import java.time.format.DateTimeParseException;
import java.util.Map;

/**
 * The pricing catalog: {@code GET /admin/prices} and {@code POST /admin/prices} to add a row — a new price takes
 * effect at its {@code effective_from} (prices are never edited in place, so past requests keep the price they had).
 */
@Path("/admin/prices")
@Produces(MediaType.APPLICATION_JSON)
@Consumes(MediaType.APPLICATION_JSON)
public class PriceResource {

    private final CatalogStore catalog;

    PriceResource(CatalogStore catalog) {
        this.catalog = catalog;
    }

    @GET
    public Uni<Map<String, Object>> list() {
        return catalog.list().map(rows -> Map.of("data", rows));
    }

    @POST
    public Uni<Response> add(JsonNode body) {
        AdminInput.object(body);
        String model = AdminInput.text(body, "model", true);
        // a price is charged only to accounts of its currency (the gateway refuses the others rather than mix money)
        String currency = AdminInput.currency(body);
        Instant from;
        try {
            from = body.hasNonNull("effective_from") ? OffsetDateTime.parse(AdminInput.text(body, "effective_from", true)).toInstant() : Instant.now();
        } catch (DateTimeParseException e) {
            throw ApiError.badRequest("effective_from must be an ISO-8601 instant such as 2026-12-01T00:00:00Z");
        }
        LocalTime ws;
        LocalTime we;
        try {
            ws = body.hasNonNull("window_start") ? LocalTime.parse(AdminInput.text(body, "window_start", true)) : null;
            we = body.hasNonNull("window_end") ? LocalTime.parse(AdminInput.text(body, "window_end", true)) : null;
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
        return catalog.currencyOf(model).chain(existing -> {
            if (existing.isPresent() && !existing.get().equals(currency)) {
                throw new ApiError(409, "invalid_request_error", "the prices of " + model + " are in " + existing.get()
                        + "; a model is priced in one currency");
            }
            return catalog.add(price);
        }).onFailure(UniqueViolation::is).recoverWithItem(false).map(added -> {
            if (!added) {
                throw new ApiError(409, "invalid_request_error", "a price for " + model + " from " + from + " in that window already exists");
            }
            return Response.status(201).entity(Map.of("model", model, "effective_from", from.toString(),
                    "output_per_million", Money.plain(price.outputPerMillion()))).build();
        });
    }

    private static BigDecimal amount(JsonNode body, String field) {
        BigDecimal v = AdminInput.amount(body.get(field), field);
        if (v.signum() < 0 || v.scale() > 8 || v.precision() - v.scale() > 12) {
            throw ApiError.badRequest(field + " must be a decimal amount per 1M tokens between 0 and 999999999999.99999999, e.g. \"0.27\"");
        }
        return v;
    }
}
