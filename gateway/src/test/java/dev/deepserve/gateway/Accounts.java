package dev.deepserve.gateway;

import dev.deepserve.gateway.usage.UsageWriter;
import dev.deepserve.accounting.ApiKeys;
import io.quarkus.arc.Arc;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import io.vertx.mutiny.sqlclient.Tuple;

import java.math.BigDecimal;

/** Test accounts in billing's tables, looked up by the secret of their key. */
final class Accounts {

    private Accounts() {
    }

    /** Answers go out once their usage events are journaled; what PostgreSQL holds is read after they are written there. */
    static void written() {
        Arc.container().instance(UsageWriter.class).get().drain().join();
    }

    /** A fresh account holding {@code balance} (topped up) and a key for it (with an rpm limit, or none); returns the secret. */
    static String create(Pool pool, String balance, Integer rpm) {
        String account = ApiKeys.newId("acct");
        String secret = ApiKeys.newSecret();
        pool.preparedQuery("INSERT INTO billing.accounts (id, name, topped_up_balance) VALUES ($1, 'test', $2)")
                .execute(Tuple.of(account, new BigDecimal(balance))).await().indefinitely();
        pool.preparedQuery("INSERT INTO billing.api_keys (id, account_id, name, prefix, secret_sha256, rpm) VALUES ($1, $2, 'k', $3, $4, $5)")
                .execute(Tuple.of(ApiKeys.newId("key"), account, ApiKeys.prefix(secret), ApiKeys.sha256(secret), rpm)).await().indefinitely();
        return secret;
    }

    /** What the account holds beyond its leases' unused part: in-flight reservations and settled costs billing has not applied yet. */
    static BigDecimal held(Pool pool, String secret) {
        return pool.preparedQuery("""
                        SELECT a.reserved - coalesce((SELECT sum(l.amount - l.consumed) FROM gateway.leases l WHERE l.account_id = a.id), 0) AS held
                        FROM billing.accounts a JOIN billing.api_keys k ON k.account_id = a.id WHERE k.secret_sha256 = $1""")
                .execute(Tuple.of(ApiKeys.sha256(secret))).await().indefinitely().iterator().next().getBigDecimal("held");
    }

    static Row of(Pool pool, String secret) {
        return pool.preparedQuery("SELECT a.* FROM billing.accounts a JOIN billing.api_keys k ON k.account_id = a.id WHERE k.secret_sha256 = $1")
                .execute(Tuple.of(ApiKeys.sha256(secret))).await().indefinitely().iterator().next();
    }
}
