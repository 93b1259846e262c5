package dev.deepserve.billing.api;

import com.fasterxml.jackson.databind.JsonNode;
import dev.deepserve.billing.config.BillingConfig;
import dev.deepserve.billing.store.UsageStore;
import dev.deepserve.billing.messaging.DeadLetterResolution;
import io.smallrye.mutiny.Uni;
import jakarta.ws.rs.Consumes;
import jakarta.ws.rs.GET;
import jakarta.ws.rs.POST;
import jakarta.ws.rs.Path;
import jakarta.ws.rs.PathParam;
import jakarta.ws.rs.Produces;
import jakarta.ws.rs.QueryParam;
import jakarta.ws.rs.core.MediaType;
import jakarta.ws.rs.core.Response;

import java.time.OffsetDateTime;
import java.time.YearMonth;
import java.time.format.DateTimeParseException;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/** Usage reports: {@code /admin/usage} (JSON, with totals), {@code /admin/usage.csv}, and monthly statements. */
@Path("/admin")
public class UsageResource {

    private static final Set<String> GROUPS = Set.of("hour", "day", "month");
    private static final String[] COLUMNS = {"period", "account_id", "api_key_id", "model", "requests", "prompt_cache_hit_tokens",
            "prompt_cache_miss_tokens", "completion_tokens", "cost"};

    private final UsageStore store;
    private final BillingConfig config;
    private final DeadLetterResolution deadLetters;

    UsageResource(UsageStore store, BillingConfig config, DeadLetterResolution deadLetters) {
        this.store = store;
        this.config = config;
        this.deadLetters = deadLetters;
    }

    static UsageStore.Filter filter(String account, String key, String model, String from, String to, String group) {
        String g = group == null ? "day" : group;
        if (!GROUPS.contains(g)) {
            throw ApiError.badRequest("group must be hour, day or month");
        }
        return new UsageStore.Filter(blank(account), blank(key), blank(model), time(from, "from"), time(to, "to"), g);
    }

    private static String blank(String s) {
        if (s != null && (s.length() > AdminInput.MAX_TEXT * 2 || !AdminInput.printable(s))) {
            throw ApiError.badRequest("filters must be at most " + AdminInput.MAX_TEXT * 2 + " printable characters");
        }
        return s == null || s.isBlank() ? null : s;
    }

    @GET
    @Path("usage/dead-letters")
    @Produces(MediaType.APPLICATION_JSON)
    public Uni<Map<String, Object>> deadLetters(@QueryParam("limit") Integer limit) {
        int n = limit == null ? 100 : limit;
        if (n < 1 || n > 1000) {
            throw ApiError.badRequest("limit must be between 1 and 1000");
        }
        return store.deadLetters(n);
    }

    /** Applies a dead letter to the ledger now (after its cause was fixed); 422 naming why when it still cannot be. */
    @POST
    @Path("usage/dead-letters/{id}/replay")
    @Produces(MediaType.APPLICATION_JSON)
    public Uni<Map<String, Object>> replay(@PathParam("id") long id) {
        return deadLetters.replay(id);
    }

    /** Never charges a dead letter and releases the cost set aside for it; {@code {"note": "..."}} says why. */
    @POST
    @Path("usage/dead-letters/{id}/write-off")
    @Consumes(MediaType.APPLICATION_JSON)
    @Produces(MediaType.APPLICATION_JSON)
    public Uni<Map<String, Object>> writeOff(@PathParam("id") long id, JsonNode body) {
        String note = body == null || body.isNull() ? null : AdminInput.text(AdminInput.object(body), "note", false);
        return deadLetters.writeOff(id, note);
    }

    private static OffsetDateTime time(String s, String name) {
        if (blank(s) == null) {
            return null;
        }
        try {
            return OffsetDateTime.parse(s);
        } catch (DateTimeParseException e) {
            throw ApiError.badRequest(name + " must be an ISO-8601 instant such as 2026-11-01T00:00:00Z");
        }
    }

    @GET
    @Path("usage")
    @Produces(MediaType.APPLICATION_JSON)
    public Uni<Map<String, Object>> usage(@QueryParam("account") String account, @QueryParam("key") String key, @QueryParam("model") String model,
                                          @QueryParam("from") String from, @QueryParam("to") String to, @QueryParam("group") String group) {
        UsageStore.Filter f = filter(account, key, model, from, to, group);
        return store.rows(f, config.maxUsageRows()).chain(rows -> store.ledgerTotals(f).map(totals -> {
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("group", f.group());
            out.put("data", rows);
            out.put("totals", totals);
            return out;
        }));
    }

    @GET
    @Path("usage.csv")
    @Produces("text/csv")
    public Uni<Response> csv(@QueryParam("account") String account, @QueryParam("key") String key, @QueryParam("model") String model,
                             @QueryParam("from") String from, @QueryParam("to") String to, @QueryParam("group") String group) {
        UsageStore.Filter f = filter(account, key, model, from, to, group);
        return store.rows(f, config.maxUsageRows()).map(rows -> {
            StringBuilder sb = new StringBuilder(String.join(",", COLUMNS)).append("\r\n");
            for (Map<String, Object> r : rows) {
                for (int i = 0; i < COLUMNS.length; i++) {
                    if (i > 0) {
                        sb.append(',');
                    }
                    sb.append(csvField(String.valueOf(r.get(COLUMNS[i]))));
                }
                sb.append("\r\n");
            }
            return Response.ok(sb.toString(), "text/csv; charset=utf-8")
                    .header("Content-Disposition", "attachment; filename=\"usage-" + f.group() + ".csv\"").build();
        });
    }

    static String csvField(String v) {
        // quote when needed; a leading = + - @ is neutralized so spreadsheets do not run it as a formula
        String s = !v.isEmpty() && "=+-@".indexOf(v.charAt(0)) >= 0 && !v.matches("-?[0-9.]+") ? "'" + v : v;
        return s.contains(",") || s.contains("\"") || s.contains("\n") || s.contains("\r") ? "\"" + s.replace("\"", "\"\"") + "\"" : s;
    }

    @GET
    @Path("accounts/{id}/statement")
    @Produces(MediaType.APPLICATION_JSON)
    public Uni<Map<String, Object>> statement(@PathParam("id") String id, @QueryParam("month") String month) {
        YearMonth m;
        try {
            m = month == null ? YearMonth.now(java.time.ZoneOffset.UTC) : YearMonth.parse(month);
        } catch (DateTimeParseException e) {
            throw ApiError.badRequest("month must look like 2026-11");
        }
        return store.statement(id, m);
    }

}
