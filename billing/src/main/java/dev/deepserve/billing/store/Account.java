package dev.deepserve.billing.store;

import dev.deepserve.accounting.Money;
import io.quarkus.hibernate.reactive.panache.PanacheEntityBase;
import jakarta.persistence.Column;
import jakarta.persistence.Entity;
import jakarta.persistence.Id;
import jakarta.persistence.Table;
import org.hibernate.annotations.DynamicUpdate;

import java.math.BigDecimal;
import java.time.OffsetDateTime;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * An account (table {@code billing.accounts}, owned by Flyway): two pots of money, granted (spent first) and topped
 * up, and what the gateways have set aside for requests in flight. Only the columns an administrator changes are
 * written from here, and only those that changed ({@link DynamicUpdate}): {@code reserved} belongs to the gateways'
 * reservations and the ledger, which update it with SQL of their own, so Hibernate never writes it.
 */
@Entity
@Table(name = "accounts", schema = "billing")
@DynamicUpdate
public class Account extends PanacheEntityBase {

    @Id
    public String id;

    public String name;

    @Column(updatable = false)
    public String currency;

    @Column(name = "granted_balance")
    public BigDecimal grantedBalance = BigDecimal.ZERO;

    @Column(name = "topped_up_balance")
    public BigDecimal toppedUpBalance = BigDecimal.ZERO;

    @Column(insertable = false, updatable = false)
    public BigDecimal reserved = BigDecimal.ZERO;

    @Column(name = "created_at", updatable = false)
    public OffsetDateTime createdAt;

    /** Adds a top-up or a grant to its pot (the caller holds the row lock, so the sum cannot race the ledger). */
    public void credit(BalanceEntry.Kind kind, BigDecimal amount) {
        if (kind == BalanceEntry.Kind.GRANT) {
            grantedBalance = grantedBalance.add(amount);
        } else {
            toppedUpBalance = toppedUpBalance.add(amount);
        }
    }

    /** The admin API's view: balances as exact decimal strings. */
    public Map<String, Object> view() {
        BigDecimal total = grantedBalance.add(toppedUpBalance);
        Map<String, Object> a = new LinkedHashMap<>();
        a.put("id", id);
        a.put("name", name);
        a.put("currency", currency);
        a.put("total_balance", Money.plain(total));
        a.put("granted_balance", Money.plain(grantedBalance));
        a.put("topped_up_balance", Money.plain(toppedUpBalance));
        a.put("reserved", Money.plain(reserved));
        a.put("available", Money.plain(total.subtract(reserved)));
        a.put("created_at", createdAt.toString());
        return a;
    }
}
