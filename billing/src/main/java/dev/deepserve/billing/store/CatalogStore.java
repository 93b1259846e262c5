package dev.deepserve.billing.store;

import dev.deepserve.accounting.Price;
import io.quarkus.hibernate.reactive.panache.common.WithSession;
import io.quarkus.hibernate.reactive.panache.common.WithTransaction;
import io.smallrye.mutiny.Uni;
import jakarta.enterprise.context.ApplicationScoped;

import java.time.ZoneOffset;
import java.util.List;
import java.util.Map;

/** The pricing catalog's rows, mapped with Hibernate Reactive; a row is added, never edited. */
@ApplicationScoped
public class CatalogStore {

    @WithSession
    public Uni<List<Map<String, Object>>> list() {
        // window_start nulls first: a model's base row before its windows
        return CatalogPrice.<CatalogPrice>list("order by model, effectiveFrom, windowStart nulls first")
                .map(rows -> rows.stream().map(CatalogPrice::view).toList());
    }

    /** The currency a model's prices are in, if it has any (a model has one: its ceiling compares amounts). */
    @WithSession
    public Uni<java.util.Optional<String>> currencyOf(String model) {
        return CatalogPrice.<CatalogPrice>find("model = ?1", model).firstResult().map(row -> java.util.Optional.ofNullable(row == null ? null : row.currency));
    }

    /**
     * Adds a row; false when one for the same model, start and window exists. Two admins adding the same row at once
     * both pass the check: the unique index then refuses one, which fails with a {@link UniqueViolation}.
     */
    @WithTransaction
    public Uni<Boolean> add(Price price) {
        CatalogPrice row = new CatalogPrice();
        row.model = price.model();
        row.currency = price.currency();
        row.cacheHitPerMillion = price.cacheHitPerMillion();
        row.cacheMissPerMillion = price.cacheMissPerMillion();
        row.outputPerMillion = price.outputPerMillion();
        row.effectiveFrom = price.effectiveFrom().atOffset(ZoneOffset.UTC);
        row.windowStart = price.windowStart();
        row.windowEnd = price.windowEnd();
        return CatalogPrice.count("model = ?1 and effectiveFrom = ?2 and "
                                + (row.windowStart == null ? "windowStart is null" : "windowStart = ?3"),
                        row.windowStart == null ? new Object[] {row.model, row.effectiveFrom} : new Object[] {row.model, row.effectiveFrom, row.windowStart})
                .chain(existing -> existing > 0 ? Uni.createFrom().item(false) : row.persistAndFlush().map(saved -> true));
    }
}
