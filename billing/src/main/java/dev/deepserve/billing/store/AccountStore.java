package dev.deepserve.billing.store;

import dev.deepserve.accounting.ApiKeys;
import dev.deepserve.accounting.Money;
import io.smallrye.mutiny.Uni;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.enterprise.context.ApplicationScoped;

import java.math.BigDecimal;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.UUID;

/** Accounts, their balance entries and their API keys in PostgreSQL (schema {@code billing}). */
@ApplicationScoped
public class AccountStore {

    private final Pool pool;

    AccountStore(Pool pool) {
        this.pool = pool;
    }

    public Uni<Map<String, Object>> createAccount(String name, String currency) {
        String id = ApiKeys.newId("acct");
        return pool.preparedQuery("INSERT INTO billing.accounts (id, name, currency) VALUES ($1, $2, $3) RETURNING *")
                .execute(Tuple.of(id, name, currency)).map(rows -> account(rows.iterator().next()));
    }

    public Uni<List<Map<String, Object>>> accounts() {
        return pool.query("SELECT * FROM billing.accounts ORDER BY created_at").execute().map(rows -> {
            List<Map<String, Object>> out = new ArrayList<>();
            rows.forEach(r -> out.add(account(r)));
            return out;
        });
    }

    public Uni<Optional<Map<String, Object>>> account(String id) {
        return pool.preparedQuery("SELECT * FROM billing.accounts WHERE id = $1").execute(Tuple.of(id))
                .map(rows -> rows.iterator().hasNext() ? Optional.of(account(rows.iterator().next())) : Optional.empty());
    }

    /** A top-up or grant: the ledger entry and the balance change in one transaction. */
    public Uni<Optional<Map<String, Object>>> credit(String accountId, String kind, BigDecimal amount, String note) {
        String column = kind.equals("grant") ? "granted_balance" : "topped_up_balance";
        UUID entry = UUID.randomUUID();
        return pool.withTransaction(tx -> tx.preparedQuery("UPDATE billing.accounts SET " + column + " = " + column + " + $2 WHERE id = $1 RETURNING *")
                .execute(Tuple.of(accountId, amount))
                .onItem().transformToUni(rows -> {
                    if (!rows.iterator().hasNext()) {
                        return Uni.createFrom().item(Optional.<Map<String, Object>>empty());
                    }
                    Map<String, Object> account = account(rows.iterator().next());
                    return tx.preparedQuery("INSERT INTO billing.balance_entries (entry_id, account_id, kind, amount, note) VALUES ($1, $2, $3, $4, $5)")
                            .execute(Tuple.of(entry, accountId, kind, amount, note))
                            .map(ignored -> {
                                Map<String, Object> out = new LinkedHashMap<>();
                                out.put("entry_id", entry.toString());
                                out.put("kind", kind);
                                out.put("amount", Money.plain(amount));
                                out.put("account", account);
                                return Optional.of(out);
                            });
                }));
    }

    /** Creates a key; the secret is in the result and nowhere else, ever. */
    public Uni<Optional<Map<String, Object>>> createKey(String accountId, String name, List<String> models, Integer rpm, Integer tpm, BigDecimal spendCap) {
        String id = ApiKeys.newId("key");
        String secret = ApiKeys.newSecret();
        return pool.preparedQuery("""
                        INSERT INTO billing.api_keys (id, account_id, name, prefix, secret_sha256, models, rpm, tpm, spend_cap)
                        SELECT $1, id, $3, $4, $5, $6, $7, $8, $9 FROM billing.accounts WHERE id = $2 RETURNING *""")
                .execute(Tuple.from(new Object[] {id, accountId, name, ApiKeys.prefix(secret), ApiKeys.sha256(secret),
                        models == null ? null : models.toArray(String[]::new), rpm, tpm, spendCap}))
                .map(rows -> {
                    if (!rows.iterator().hasNext()) {
                        return Optional.empty();
                    }
                    Map<String, Object> key = key(rows.iterator().next());
                    key.put("key", secret);
                    return Optional.of(key);
                });
    }

    public Uni<List<Map<String, Object>>> keys(String accountId) {
        return pool.preparedQuery("SELECT * FROM billing.api_keys WHERE account_id = $1 ORDER BY created_at").execute(Tuple.of(accountId)).map(rows -> {
            List<Map<String, Object>> out = new ArrayList<>();
            rows.forEach(r -> out.add(key(r)));
            return out;
        });
    }

    /** Revokes a key; the gateway checks revocation on every request, so it takes effect at once on every replica. */
    public Uni<Optional<Map<String, Object>>> revokeKey(String keyId) {
        return pool.preparedQuery("UPDATE billing.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING *")
                .execute(Tuple.of(keyId))
                .map(rows -> rows.iterator().hasNext() ? Optional.of(key(rows.iterator().next())) : Optional.empty());
    }

    static Map<String, Object> account(Row r) {
        BigDecimal granted = r.getBigDecimal("granted_balance");
        BigDecimal toppedUp = r.getBigDecimal("topped_up_balance");
        BigDecimal reserved = r.getBigDecimal("reserved");
        Map<String, Object> a = new LinkedHashMap<>();
        a.put("id", r.getString("id"));
        a.put("name", r.getString("name"));
        a.put("currency", r.getString("currency"));
        a.put("total_balance", Money.plain(granted.add(toppedUp)));
        a.put("granted_balance", Money.plain(granted));
        a.put("topped_up_balance", Money.plain(toppedUp));
        a.put("reserved", Money.plain(reserved));
        a.put("available", Money.plain(granted.add(toppedUp).subtract(reserved)));
        a.put("created_at", r.getOffsetDateTime("created_at").toString());
        return a;
    }

    static Map<String, Object> key(Row r) {
        Map<String, Object> k = new LinkedHashMap<>();
        k.put("id", r.getString("id"));
        k.put("account_id", r.getString("account_id"));
        k.put("name", r.getString("name"));
        k.put("prefix", r.getString("prefix"));
        String[] models = r.getArrayOfStrings("models");
        k.put("models", models == null ? null : List.of(models));
        k.put("rpm", r.getInteger("rpm"));
        k.put("tpm", r.getInteger("tpm"));
        BigDecimal cap = r.getBigDecimal("spend_cap");
        k.put("spend_cap", cap == null ? null : Money.plain(cap));
        k.put("created_at", r.getOffsetDateTime("created_at").toString());
        OffsetDateTime revoked = r.getOffsetDateTime("revoked_at");
        k.put("revoked_at", revoked == null ? null : revoked.toString());
        OffsetDateTime used = r.getOffsetDateTime("last_used_at");
        k.put("last_used_at", used == null ? null : used.toString());
        return k;
    }
}
