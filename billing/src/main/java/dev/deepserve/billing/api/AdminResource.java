package dev.deepserve.billing.api;

import com.fasterxml.jackson.databind.JsonNode;
import dev.deepserve.billing.store.AccountStore;
import io.smallrye.mutiny.Uni;
import jakarta.ws.rs.Consumes;
import jakarta.ws.rs.DELETE;
import jakarta.ws.rs.GET;
import jakarta.ws.rs.POST;
import jakarta.ws.rs.Path;
import jakarta.ws.rs.PathParam;
import jakarta.ws.rs.Produces;
import jakarta.ws.rs.core.MediaType;
import jakarta.ws.rs.core.Response;

import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;

/** The admin API: accounts, top-ups and grants, API keys. Guarded by {@link AdminAuth}. */
@Path("/admin")
@Produces(MediaType.APPLICATION_JSON)
@Consumes(MediaType.APPLICATION_JSON)
public class AdminResource {

    private static final Set<String> CURRENCIES = Set.of("USD", "CNY", "EUR");

    private final AccountStore store;

    AdminResource(AccountStore store) {
        this.store = store;
    }

    @POST
    @Path("accounts")
    public Uni<Response> createAccount(JsonNode body) {
        String name = text(body, "name", true);
        String currency = body.hasNonNull("currency") ? text(body, "currency", true) : "USD";
        if (!CURRENCIES.contains(currency)) {
            throw ApiError.badRequest("currency must be one of " + CURRENCIES);
        }
        return store.createAccount(name, currency).map(a -> Response.status(201).entity(a).build());
    }

    @GET
    @Path("accounts")
    public Uni<Map<String, Object>> accounts() {
        return store.accounts().map(list -> Map.of("data", list));
    }

    @GET
    @Path("accounts/{id}")
    public Uni<Map<String, Object>> account(@PathParam("id") String id) {
        return store.account(id).map(a -> a.orElseThrow(() -> ApiError.notFound("no account " + id)));
    }

    @POST
    @Path("accounts/{id}/top-ups")
    public Uni<Response> topUp(@PathParam("id") String id, JsonNode body) {
        return credit(id, "top_up", body);
    }

    @POST
    @Path("accounts/{id}/grants")
    public Uni<Response> grant(@PathParam("id") String id, JsonNode body) {
        return credit(id, "grant", body);
    }

    private Uni<Response> credit(String id, String kind, JsonNode body) {
        BigDecimal amount = amount(object(body).get("amount"), "amount");
        if (amount.signum() <= 0) {
            throw ApiError.badRequest("amount must be positive");
        }
        if (amount.scale() > 8) {
            throw ApiError.badRequest("amount has more than 8 decimal places");
        }
        String note = body.hasNonNull("note") ? text(body, "note", false) : null;
        return store.credit(id, kind, amount, note)
                .map(r -> Response.status(201).entity(r.orElseThrow(() -> ApiError.notFound("no account " + id))).build());
    }

    @POST
    @Path("accounts/{id}/keys")
    public Uni<Response> createKey(@PathParam("id") String id, JsonNode body) {
        String name = text(object(body), "name", true);
        List<String> models = null;
        if (body.hasNonNull("models")) {
            if (!body.get("models").isArray() || body.get("models").isEmpty()) {
                throw ApiError.badRequest("models must be a non-empty array of model names (omit it to allow every model)");
            }
            models = new ArrayList<>();
            for (JsonNode m : body.get("models")) {
                if (!m.isTextual() || m.asText().isBlank()) {
                    throw ApiError.badRequest("models must contain model names");
                }
                models.add(m.asText());
            }
        }
        Integer rpm = positiveInt(body, "rpm");
        Integer tpm = positiveInt(body, "tpm");
        BigDecimal cap = body.hasNonNull("spend_cap") ? amount(body.get("spend_cap"), "spend_cap") : null;
        if (cap != null && cap.signum() < 0) {
            throw ApiError.badRequest("spend_cap must not be negative");
        }
        return store.createKey(id, name, models, rpm, tpm, cap)
                .map(k -> Response.status(201).entity(k.orElseThrow(() -> ApiError.notFound("no account " + id))).build());
    }

    @GET
    @Path("accounts/{id}/keys")
    public Uni<Map<String, Object>> keys(@PathParam("id") String id) {
        return store.keys(id).map(list -> Map.of("data", list));
    }

    @DELETE
    @Path("keys/{id}")
    public Uni<Map<String, Object>> revoke(@PathParam("id") String id) {
        return store.revokeKey(id).map(k -> k.orElseThrow(() -> ApiError.notFound("no key " + id)));
    }

    private static JsonNode object(JsonNode body) {
        if (body == null || !body.isObject()) {
            throw ApiError.badRequest("request body must be a JSON object");
        }
        return body;
    }

    private static String text(JsonNode body, String field, boolean required) {
        JsonNode v = object(body).get(field);
        if (v == null || v.isNull()) {
            if (required) {
                throw ApiError.badRequest(field + " is required");
            }
            return null;
        }
        if (!v.isTextual() || v.asText().isBlank() || v.asText().length() > 200) {
            throw ApiError.badRequest(field + " must be a non-empty string of at most 200 characters");
        }
        return v.asText();
    }

    /** Money in requests: a decimal string ("10.50") or a JSON number, read exactly (never through a double). */
    private static BigDecimal amount(JsonNode v, String field) {
        if (v == null || v.isNull()) {
            throw ApiError.badRequest(field + " is required");
        }
        try {
            if (v.isTextual()) {
                return new BigDecimal(v.asText().trim());
            }
            if (v.isNumber()) {
                return v.decimalValue();
            }
        } catch (NumberFormatException e) {
            // fall through
        }
        throw ApiError.badRequest(field + " must be a decimal amount such as \"10.00\"");
    }

    private static Integer positiveInt(JsonNode body, String field) {
        JsonNode v = body.get(field);
        if (v == null || v.isNull()) {
            return null;
        }
        if (!v.canConvertToInt() || !v.isIntegralNumber() || v.asInt() <= 0) {
            throw ApiError.badRequest(field + " must be a positive integer");
        }
        return v.asInt();
    }
}
