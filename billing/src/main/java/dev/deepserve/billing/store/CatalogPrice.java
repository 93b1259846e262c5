package dev.deepserve.billing.store;

import io.quarkus.hibernate.reactive.panache.PanacheEntityBase;
import jakarta.persistence.Column;
import jakarta.persistence.Entity;
import jakarta.persistence.GeneratedValue;
import jakarta.persistence.GenerationType;
import jakarta.persistence.Id;
import jakarta.persistence.Table;

import java.math.BigDecimal;
import java.time.LocalTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * One row of the pricing catalog (table {@code billing.prices}): per model, per 1M tokens, from
 * {@code effective_from} on, optionally only inside a daily UTC window. Prices change by adding rows, never by
 * editing them (a request is priced by its completion time), so nothing here is updatable. The gateways read the
 * catalog with SQL of their own ({@code PriceStore}).
 */
@Entity
@Table(name = "prices", schema = "billing")
public class CatalogPrice extends PanacheEntityBase {

    @Id
    @GeneratedValue(strategy = GenerationType.IDENTITY)
    public Long id;

    @Column(updatable = false)
    public String model;

    @Column(updatable = false)
    public String currency;

    @Column(name = "cache_hit_per_million", updatable = false)
    public BigDecimal cacheHitPerMillion;

    @Column(name = "cache_miss_per_million", updatable = false)
    public BigDecimal cacheMissPerMillion;

    @Column(name = "output_per_million", updatable = false)
    public BigDecimal outputPerMillion;

    @Column(name = "effective_from", updatable = false)
    public OffsetDateTime effectiveFrom;

    @Column(name = "window_start", updatable = false)
    public LocalTime windowStart;

    @Column(name = "window_end", updatable = false)
    public LocalTime windowEnd;

    public Map<String, Object> view() {
        Map<String, Object> p = new LinkedHashMap<>();
        p.put("model", model);
        p.put("currency", currency);
        p.put("cache_hit_per_million", cacheHitPerMillion.toPlainString());
        p.put("cache_miss_per_million", cacheMissPerMillion.toPlainString());
        p.put("output_per_million", outputPerMillion.toPlainString());
        p.put("effective_from", effectiveFrom.withOffsetSameInstant(ZoneOffset.UTC).toString());
        p.put("window_start", windowStart == null ? null : windowStart.toString());
        p.put("window_end", windowEnd == null ? null : windowEnd.toString());
        return p;
    }
}
