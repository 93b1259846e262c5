package dev.deepserve.billing.api;

import com.fasterxml.jackson.databind.JsonNode;
import dev.deepserve.billing.store.AccountStore;
import dev.deepserve.billing.store.BalanceEntry;
import io.smallrye.mutiny.Uni;
import jakarta.ws.rs.Consumes;
import jakarta.ws.rs.DELETE;
import jakarta.ws.rs.GET;
import jakarta.ws.rs.HeaderParam;
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

/** The admin API: accounts, top-ups and grants, API keys. Guarded by {@link AdminAuth}. */
@Path("/admin")
@Produces(MediaType.APPLICATION_JSON)
@Consumes(MediaType.APPLICATION_JSON)
public class AdminResource {


    private final AccountStore store;

    AdminResource(AccountStore store) {
        this.store = store;
    }

    @POST
    @Path("accounts")
    public Uni<Response> createAccount(JsonNode body) {
        String name = AdminInput.text(body, "name", true);
        String currency = AdminInput.currency(body);
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
    public Uni<Response> topUp(@PathParam("id") String id, @HeaderParam("Idempotency-Key") String idempotencyKey, JsonNode body) {
        return credit(id, BalanceEntry.Kind.TOP_UP, body, idempotencyKey);
    }

    @POST
    @Path("accounts/{id}/grants")
    public Uni<Response> grant(@PathParam("id") String id, @HeaderParam("Idempotency-Key") String idempotencyKey, JsonNode body) {
        return credit(id, BalanceEntry.Kind.GRANT, body, idempotencyKey);
    }

    /**
     * A top-up or grant; with an {@code Idempotency-Key} header (1-128 printable characters) a retried request credits
     * once: the repeat answers 200 with the first one's entry, a different request under the same key 409.
     */
    private Uni<Response> credit(String id, BalanceEntry.Kind kind, JsonNode body, String idempotencyKey) {
        if (idempotencyKey != null && (idempotencyKey.isBlank() || idempotencyKey.length() > 128 || !AdminInput.printable(idempotencyKey))) {
            throw ApiError.badRequest("Idempotency-Key must be 1 to 128 printable characters");
        }
        BigDecimal amount = AdminInput.amount(AdminInput.object(body).get("amount"), "amount");
        if (amount.signum() <= 0) {
            throw ApiError.badRequest("amount must be positive");
        }
        if (amount.scale() > 8) {
            throw ApiError.badRequest("amount has more than 8 decimal places");
        }
        if (amount.precision() - amount.scale() > 18) {
            throw ApiError.badRequest("amount must be below 10^18");
        }
        String note = AdminInput.text(body, "note", false);
        return store.credit(id, kind, amount, note, idempotencyKey)
                .onFailure(AccountStore.KeyReused.class).transform(e -> new ApiError(409, "invalid_request_error", e.getMessage()))
                .map(r -> {
                    AccountStore.Credit c = r.orElseThrow(() -> ApiError.notFound("no account " + id));
                    return Response.status(c.replayed() ? 200 : 201).entity(c.body()).build();
                });
    }

    @POST
    @Path("accounts/{id}/keys")
    public Uni<Response> createKey(@PathParam("id") String id, JsonNode body) {
        String name = AdminInput.text(body, "name", true);
        List<String> models = null;
        if (body.hasNonNull("models")) {
            if (!body.get("models").isArray() || body.get("models").isEmpty()) {
                throw ApiError.badRequest("models must be a non-empty array of model names (omit it to allow every model)");
            }
            models = new ArrayList<>();
            for (JsonNode m : body.get("models")) {
                if (!m.isTextual() || m.asText().isBlank() || m.asText().length() > AdminInput.MAX_TEXT || !AdminInput.printable(m.asText())) {
                    throw ApiError.badRequest("models must contain model names (at most " + AdminInput.MAX_TEXT + " printable characters)");
                }
                if (models.size() >= 1000) {
                    throw ApiError.badRequest("models may name at most 1000 models");
                }
                models.add(m.asText());
            }
        }
        Integer rpm = positiveInt(body, "rpm");
        Integer tpm = positiveInt(body, "tpm");
        BigDecimal cap = body.hasNonNull("spend_cap") ? AdminInput.amount(body.get("spend_cap"), "spend_cap") : null;
        if (cap != null && (cap.signum() < 0 || cap.scale() > 8 || cap.precision() - cap.scale() > 18)) {
            throw ApiError.badRequest("spend_cap must be a non-negative amount below 10^18 with at most 8 decimal places");
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
