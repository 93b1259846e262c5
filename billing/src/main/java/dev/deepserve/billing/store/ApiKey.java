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
import java.util.List;
import java.util.Map;

/**
 * An API key (table {@code billing.api_keys}): only the SHA-256 of its secret is kept. The gateways own the
 * per-key money columns ({@code spent}, {@code reserved}) and {@code last_used_at}, so Hibernate reads them and
 * never writes them; an update names only the columns that changed, which the table's trigger announces to every
 * gateway (their key caches drop the entry at once).
 */
@Entity
@Table(name = "api_keys", schema = "billing")
@DynamicUpdate
public class ApiKey extends PanacheEntityBase {

    @Id
    public String id;

    @Column(name = "account_id", updatable = false)
    public String accountId;

    public String name;

    @Column(updatable = false)
    public String prefix;

    @Column(name = "secret_sha256", updatable = false)
    public byte[] secretSha256;

    /** The models this key may use; null allows every model. */
    public String[] models;

    public Integer rpm;

    public Integer tpm;

    @Column(name = "spend_cap")
    public BigDecimal spendCap;

    @Column(insertable = false, updatable = false)
    public BigDecimal spent = BigDecimal.ZERO;

    @Column(insertable = false, updatable = false)
    public BigDecimal reserved = BigDecimal.ZERO;

    @Column(name = "created_at", updatable = false)
    public OffsetDateTime createdAt;

    @Column(name = "revoked_at")
    public OffsetDateTime revokedAt;

    @Column(name = "last_used_at", insertable = false, updatable = false)
    public OffsetDateTime lastUsedAt;

    /** Set on a browser token (minted by the gateway from this key's parent); admin lists show keys, not tokens. */
    @Column(name = "parent_key_id", insertable = false, updatable = false)
    public String parentKeyId;

    /** The admin API's view; the secret is never part of it (only creation returns it, once). */
    public Map<String, Object> view() {
        Map<String, Object> k = new LinkedHashMap<>();
        k.put("id", id);
        k.put("account_id", accountId);
        k.put("name", name);
        k.put("prefix", prefix);
        k.put("models", models == null ? null : List.of(models));
        k.put("rpm", rpm);
        k.put("tpm", tpm);
        k.put("spend_cap", spendCap == null ? null : Money.plain(spendCap));
        k.put("spent", Money.plain(spent));
        k.put("created_at", createdAt.toString());
        k.put("revoked_at", revokedAt == null ? null : revokedAt.toString());
        k.put("last_used_at", lastUsedAt == null ? null : lastUsedAt.toString());
        return k;
    }
}
