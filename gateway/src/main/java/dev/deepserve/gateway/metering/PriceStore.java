package dev.deepserve.gateway.metering;

import dev.deepserve.gateway.config.GatewayConfig;
import dev.deepserve.accounting.Price;
import dev.deepserve.accounting.PriceCatalog;
import io.smallrye.mutiny.Uni;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;
import jakarta.enterprise.context.ApplicationScoped;

import java.time.LocalTime;
import java.util.ArrayList;
import java.util.List;

/** Billing's pricing catalog, re-read at most every {@code deepserve.price-refresh} (prices change by inserting rows with a future date). */
@ApplicationScoped
public class PriceStore {

    private final Pool pool;
    private final long refreshNanos;
    private volatile PriceCatalog catalog;
    private volatile long loadedAt;

    PriceStore(Pool pool, GatewayConfig config) {
        this.pool = pool;
        this.refreshNanos = config.priceRefresh().toNanos();
    }

    /** The catalog if it is fresh, without waiting; null when it must be (re)read. */
    public PriceCatalog cached() {
        PriceCatalog c = catalog;
        return c != null && System.nanoTime() - loadedAt < refreshNanos ? c : null;
    }

    public Uni<PriceCatalog> catalog() {
        PriceCatalog c = catalog;
        if (c != null && System.nanoTime() - loadedAt < refreshNanos) {
            return Uni.createFrom().item(c);
        }
        return pool.query("SELECT * FROM billing.prices").execute().map(rows -> {
            List<Price> prices = new ArrayList<>();
            for (Row r : rows) {
                prices.add(new Price(r.getString("model"), r.getString("currency"), r.getBigDecimal("cache_hit_per_million"),
                        r.getBigDecimal("cache_miss_per_million"), r.getBigDecimal("output_per_million"),
                        r.getOffsetDateTime("effective_from").toInstant(), time(r, "window_start"), time(r, "window_end")));
            }
            PriceCatalog fresh = new PriceCatalog(prices);
            catalog = fresh;
            loadedAt = System.nanoTime();
            return fresh;
        });
    }

    private static LocalTime time(Row r, String column) {
        return r.getLocalTime(column);
    }
}
