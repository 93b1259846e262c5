package dev.deepserve.billing.store;

import dev.deepserve.accounting.ApiKeys;
import dev.deepserve.accounting.Money;
import io.quarkus.hibernate.reactive.panache.common.WithSession;
import io.quarkus.hibernate.reactive.panache.common.WithTransaction;
import io.smallrye.mutiny.Uni;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.persistence.LockModeType;

import java.math.BigDecimal;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.temporal.ChronoUnit;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * Accounts, their balance entries and their API keys: the administrative model, mapped with Hibernate Reactive
 * (Panache). Each method is one transaction; the schema is Flyway's.
 */
@ApplicationScoped
public class AccountStore {

    @WithTransaction
    public Uni<Map<String, Object>> createAccount(String name, String currency) {
        Account a = new Account();
        a.id = ApiKeys.newId("acct");
        a.name = name;
        a.currency = currency;
        a.createdAt = now();
        return a.<Account>persist().map(Account::view);
    }

    @WithSession
    public Uni<List<Map<String, Object>>> accounts() {
        return Account.<Account>list("order by createdAt").map(list -> list.stream().map(Account::view).toList());
    }

    @WithSession
    public Uni<Optional<Map<String, Object>>> account(String id) {
        return Account.<Account>findById(id).map(a -> Optional.ofNullable(a).map(Account::view));
    }

    /** A credit's outcome: the entry and the account after it; {@code replayed} when an earlier request with the key made it. */
    public record Credit(Map<String, Object> body, boolean replayed) {
    }

    /** An {@code Idempotency-Key} used again with a different kind or amount. */
    public static final class KeyReused extends RuntimeException {
        KeyReused() {
            super("this Idempotency-Key was used for a different top-up or grant", null, false, false);
        }
    }

    /**
     * A top-up or grant: the entry and the balance change in one transaction, under the account's row lock (the
     * ledger and the gateways change the same row with SQL of their own; only the changed pot is written). With an
     * idempotency key, a request that repeats an earlier one (same key, kind and amount) changes nothing and gets the
     * earlier entry; the row lock makes two concurrent repeats wait for each other.
     */
    @WithTransaction
    public Uni<Optional<Credit>> credit(String accountId, BalanceEntry.Kind kind, BigDecimal amount, String note, String idempotencyKey) {
        return Account.<Account>findById(accountId, LockModeType.PESSIMISTIC_WRITE).chain(account -> {
            if (account == null) {
                return Uni.createFrom().item(Optional.<Credit>empty());
            }
            Uni<BalanceEntry> earlier = idempotencyKey == null ? Uni.createFrom().nullItem()
                    : BalanceEntry.<BalanceEntry>find("accountId = ?1 and idempotencyKey = ?2", accountId, idempotencyKey).firstResult();
            return earlier.chain(previous -> {
                if (previous != null) {
                    if (previous.kind != kind || previous.amount.compareTo(amount) != 0) {
                        return Uni.createFrom().failure(new KeyReused());
                    }
                    return Uni.createFrom().item(Optional.of(new Credit(creditView(previous, account), true)));
                }
                account.credit(kind, amount);
                BalanceEntry entry = BalanceEntry.of(accountId, kind, amount, note);
                entry.idempotencyKey = idempotencyKey;
                return entry.persist().map(ignored -> Optional.of(new Credit(creditView(entry, account), false)));
            });
        });
    }

    private static Map<String, Object> creditView(BalanceEntry entry, Account account) {
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("entry_id", entry.entryId.toString());
        out.put("kind", entry.kind.column);
        out.put("amount", Money.plain(entry.amount));
        out.put("account", account.view());
        return out;
    }

    /** Creates a key; the secret is in the result and nowhere else, ever. */
    @WithTransaction
    public Uni<Optional<Map<String, Object>>> createKey(String accountId, String name, List<String> models, Integer rpm, Integer tpm, BigDecimal spendCap) {
        return Account.<Account>findById(accountId).chain(account -> {
            if (account == null) {
                return Uni.createFrom().item(Optional.<Map<String, Object>>empty());
            }
            String secret = ApiKeys.newSecret();
            ApiKey key = new ApiKey();
            key.id = ApiKeys.newId("key");
            key.accountId = accountId;
            key.name = name;
            key.prefix = ApiKeys.prefix(secret);
            key.secretSha256 = ApiKeys.sha256(secret);
            key.models = models == null ? null : models.toArray(String[]::new);
            key.rpm = rpm;
            key.tpm = tpm;
            key.spendCap = spendCap;
            key.createdAt = now();
            return key.<ApiKey>persist().map(saved -> {
                Map<String, Object> view = saved.view();
                view.put("key", secret);
                return Optional.of(view);
            });
        });
    }

    @WithSession
    public Uni<List<Map<String, Object>>> keys(String accountId) {
        return ApiKey.<ApiKey>list("accountId = ?1 and parentKeyId is null order by createdAt", accountId).map(list -> list.stream().map(ApiKey::view).toList());
    }

    /** Revokes a key (once: a second revocation keeps the first time); every gateway drops it from its cache at once. */
    @WithTransaction
    public Uni<Optional<Map<String, Object>>> revokeKey(String keyId) {
        return ApiKey.<ApiKey>findById(keyId).map(key -> {
            if (key == null) {
                return Optional.empty();
            }
            if (key.revokedAt == null) {
                key.revokedAt = now();
            }
            return Optional.of(key.view());
        });
    }

    /** Timestamps as PostgreSQL keeps them (microseconds), so what an answer shows is what a later read shows. */
    private static OffsetDateTime now() {
        return OffsetDateTime.now(ZoneOffset.UTC).truncatedTo(ChronoUnit.MICROS);
    }
}
