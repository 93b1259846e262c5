package dev.deepserve.billing.store;

import io.quarkus.hibernate.reactive.panache.PanacheEntityBase;
import jakarta.persistence.Column;
import jakarta.persistence.Convert;
import jakarta.persistence.Converter;
import jakarta.persistence.AttributeConverter;
import jakarta.persistence.Entity;
import jakarta.persistence.Id;
import jakarta.persistence.Table;

import java.math.BigDecimal;
import java.time.OffsetDateTime;
import java.util.UUID;

/**
 * A top-up or grant (table {@code billing.balance_entries}): balances are always the sum of these entries minus the
 * usage applied. Written once, never changed. {@code created_at} is the database's clock, as the ledger's is, so a
 * monthly statement sorts entries and usage by one clock.
 */
@Entity
@Table(name = "balance_entries", schema = "billing")
public class BalanceEntry extends PanacheEntityBase {

    /** The pot an entry fills; stored as the schema's {@code top_up} / {@code grant}. */
    public enum Kind {
        TOP_UP("top_up"), GRANT("grant");

        public final String column;

        Kind(String column) {
            this.column = column;
        }
    }

    @Converter
    static final class KindColumn implements AttributeConverter<Kind, String> {
        @Override
        public String convertToDatabaseColumn(Kind kind) {
            return kind == null ? null : kind.column;
        }

        @Override
        public Kind convertToEntityAttribute(String column) {
            return column == null ? null : column.equals("grant") ? Kind.GRANT : Kind.TOP_UP;
        }
    }

    @Id
    @Column(name = "entry_id")
    public UUID entryId;

    @Column(name = "account_id", updatable = false)
    public String accountId;

    @Convert(converter = KindColumn.class)
    @Column(updatable = false)
    public Kind kind;

    @Column(updatable = false)
    public BigDecimal amount;

    @Column(updatable = false)
    public String note;

    @Column(name = "created_at", insertable = false, updatable = false)
    public OffsetDateTime createdAt;

    /** The client's {@code Idempotency-Key}, when it sent one: one entry per account and key. */
    @Column(name = "idempotency_key", updatable = false)
    public String idempotencyKey;

    public static BalanceEntry of(String accountId, Kind kind, BigDecimal amount, String note) {
        BalanceEntry e = new BalanceEntry();
        e.entryId = UUID.randomUUID();
        e.accountId = accountId;
        e.kind = kind;
        e.amount = amount;
        e.note = note;
        return e;
    }
}
