package dev.deepserve.billing.store;

import dev.deepserve.accounting.Money;
import io.smallrye.mutiny.Uni;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.enterprise.context.ApplicationScoped;

import java.math.BigDecimal;
import java.time.OffsetDateTime;
import java.time.YearMonth;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Usage reports from the hourly aggregates (kept in the same transaction as the ledger, so their sums always equal
 * the ledger's), grouped by hour, day or month in UTC, filtered by account, key and model.
 */
@ApplicationScoped
public class UsageStore {

    public record Filter(String account, String key, String model, OffsetDateTime from, OffsetDateTime to, String group) {
    }

    private final Pool pool;

    UsageStore(Pool pool) {
        this.pool = pool;
    }

    public Uni<List<Map<String, Object>>> rows(Filter f, int limit) {
        String sql = """
                SELECT date_trunc('%s', hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS period, account_id, api_key_id, model,
                       sum(requests) AS requests, sum(prompt_cache_hit_tokens) AS hit, sum(prompt_cache_miss_tokens) AS miss,
                       sum(completion_tokens) AS completion, sum(cost) AS cost
                FROM billing.usage_hourly
                WHERE ($1::text IS NULL OR account_id = $1) AND ($2::text IS NULL OR api_key_id = $2) AND ($3::text IS NULL OR model = $3)
                  AND ($4::timestamptz IS NULL OR hour >= $4) AND ($5::timestamptz IS NULL OR hour < $5)
                GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4 LIMIT $6""".formatted(f.group());
        return pool.preparedQuery(sql).execute(Tuple.from(new Object[] {f.account(), f.key(), f.model(), f.from(), f.to(), limit})).map(rows -> {
            List<Map<String, Object>> out = new ArrayList<>();
            for (Row r : rows) {
                Map<String, Object> m = new LinkedHashMap<>();
                m.put("period", r.getOffsetDateTime("period").withOffsetSameInstant(ZoneOffset.UTC).toString());
                m.put("account_id", r.getString("account_id"));
                m.put("api_key_id", r.getString("api_key_id"));
                m.put("model", r.getString("model"));
                counts(r, m, "cost");
                out.add(m);
            }
            return out;
        });
    }

    /** Request and token counts of a row (columns requests, hit, miss, completion) and its money column. */
    private static void counts(Row r, Map<String, Object> m, String money) {
        m.put("requests", r.getLong("requests"));
        m.put("prompt_cache_hit_tokens", r.getLong("hit"));
        m.put("prompt_cache_miss_tokens", r.getLong("miss"));
        m.put("completion_tokens", r.getLong("completion"));
        m.put(money, Money.plain(r.getBigDecimal(money)));
    }

    /** Totals over the same filter, straight from the ledger rows (the check that the aggregates add up). */
    public Uni<Map<String, Object>> ledgerTotals(Filter f) {
        return pool.preparedQuery("""
                        SELECT count(*) AS requests, coalesce(sum(prompt_cache_hit_tokens), 0) AS hit, coalesce(sum(prompt_cache_miss_tokens), 0) AS miss,
                               coalesce(sum(completion_tokens), 0) AS completion, coalesce(sum(cost), 0) AS cost
                        FROM billing.usage_ledger
                        WHERE ($1::text IS NULL OR account_id = $1) AND ($2::text IS NULL OR coalesce(api_key_id, '') = $2) AND ($3::text IS NULL OR model = $3)
                          AND ($4::timestamptz IS NULL OR completed_at >= date_trunc('hour', $4::timestamptz))
                          AND ($5::timestamptz IS NULL OR date_trunc('hour', completed_at) < $5)""")
                .execute(Tuple.from(new Object[] {f.account(), f.key(), f.model(), f.from(), f.to()}))
                .map(rows -> {
                    Row r = rows.iterator().next();
                    Map<String, Object> m = new LinkedHashMap<>();
                    counts(r, m, "cost");
                    return m;
                });
    }

    /**
     * A month's statement for an account: opening balance, credits (top-ups and grants) and charges (usage by
     * model) in the month, closing balance — where opening + credits − charges = closing, to the last decimal.
     */
    public Uni<Map<String, Object>> statement(String account, YearMonth month) {
        OffsetDateTime start = month.atDay(1).atStartOfDay().atOffset(ZoneOffset.UTC);
        OffsetDateTime end = month.plusMonths(1).atDay(1).atStartOfDay().atOffset(ZoneOffset.UTC);
        return pool.preparedQuery("""
                        SELECT
                          (SELECT coalesce(sum(amount), 0) FROM billing.balance_entries WHERE account_id = $1 AND created_at < $2) AS credits_before,
                          (SELECT coalesce(sum(coalesce(granted_spent, 0) + coalesce(topped_up_spent, 0)), 0) FROM billing.usage_ledger
                             WHERE account_id = $1 AND recorded_at < $2) AS charges_before,
                          (SELECT coalesce(sum(amount), 0) FROM billing.balance_entries WHERE account_id = $1 AND created_at >= $2 AND created_at < $3) AS credits,
                          (SELECT coalesce(sum(coalesce(granted_spent, 0) + coalesce(topped_up_spent, 0)), 0) FROM billing.usage_ledger
                             WHERE account_id = $1 AND recorded_at >= $2 AND recorded_at < $3) AS charges""")
                .execute(Tuple.of(account, start, end))
                .chain(totals -> pool.preparedQuery("""
                                SELECT model, count(*) AS requests, sum(prompt_cache_hit_tokens) AS hit, sum(prompt_cache_miss_tokens) AS miss,
                                       sum(completion_tokens) AS completion, sum(coalesce(granted_spent, 0) + coalesce(topped_up_spent, 0)) AS charged
                                FROM billing.usage_ledger WHERE account_id = $1 AND recorded_at >= $2 AND recorded_at < $3 GROUP BY model ORDER BY model""")
                        .execute(Tuple.of(account, start, end))
                        .map(models -> {
                            Row t = totals.iterator().next();
                            BigDecimal opening = t.getBigDecimal("credits_before").subtract(t.getBigDecimal("charges_before"));
                            BigDecimal credits = t.getBigDecimal("credits");
                            BigDecimal charges = t.getBigDecimal("charges");
                            List<Map<String, Object>> lines = new ArrayList<>();
                            for (Row r : models) {
                                Map<String, Object> m = new LinkedHashMap<>();
                                m.put("model", r.getString("model"));
                                counts(r, m, "charged");
                                lines.add(m);
                            }
                            Map<String, Object> s = new LinkedHashMap<>();
                            s.put("account_id", account);
                            s.put("month", month.toString());
                            s.put("opening_balance", Money.plain(opening));
                            s.put("credits", Money.plain(credits));
                            s.put("charges", Money.plain(charges));
                            s.put("closing_balance", Money.plain(opening.add(credits).subtract(charges)));
                            s.put("usage", lines);
                            return s;
                        }));
    }

    /**
     * The usage records set aside as not applicable, newest first, with the total: what an operator must look at
     * (and re-send fixed, or write off). The payload is shown as text, its first 2 KiB, undecodable bytes replaced.
     */
    public Uni<Map<String, Object>> deadLetters(int limit) {
        return pool.query("SELECT count(*) FILTER (WHERE resolution IS NULL) FROM billing.usage_dead_letters").execute().chain(count -> pool.preparedQuery("""
                        SELECT id, event_id, account_id, reason, received_at, length(payload) AS bytes, substring(payload FROM 1 FOR 2048) AS head,
                               resolution, resolved_at, written_off
                        FROM billing.usage_dead_letters ORDER BY id DESC LIMIT $1""").execute(Tuple.of(limit)).map(rows -> {
                    List<Map<String, Object>> data = new ArrayList<>();
                    for (Row r : rows) {
                        Map<String, Object> d = new LinkedHashMap<>();
                        d.put("id", r.getLong("id"));
                        d.put("event_id", r.getUUID("event_id") == null ? null : r.getUUID("event_id").toString());
                        d.put("account_id", r.getString("account_id"));
                        d.put("reason", r.getString("reason"));
                        d.put("received_at", r.getOffsetDateTime("received_at").toString());
                        d.put("bytes", r.getInteger("bytes"));
                        d.put("payload", new String(r.getBuffer("head").getBytes(), java.nio.charset.StandardCharsets.UTF_8));
                        d.put("resolution", r.getString("resolution"));
                        d.put("resolved_at", r.getOffsetDateTime("resolved_at") == null ? null : r.getOffsetDateTime("resolved_at").toString());
                        d.put("written_off", r.getBigDecimal("written_off") == null ? null : r.getBigDecimal("written_off").toPlainString());
                        data.add(d);
                    }
                    Map<String, Object> out = new LinkedHashMap<>();
                    out.put("total", count.iterator().next().getLong(0)); // unresolved
                    out.put("data", data);
                    return out;
                }));
    }
}
