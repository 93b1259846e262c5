package dev.deepserve.accounting;

import java.math.BigDecimal;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * The prices in force: for a model at an instant, the rows with the latest {@code effectiveFrom} not after it; a
 * windowed row covering the instant's UTC time wins over the base row.
 */
public final class PriceCatalog {

    private final List<Price> prices;
    private final Map<String, List<Price>> byModel;

    public PriceCatalog(List<Price> prices) {
        this.prices = List.copyOf(prices);
        Map<String, List<Price>> by = new HashMap<>();
        for (Price p : this.prices) {
            by.computeIfAbsent(p.model(), m -> new ArrayList<>()).add(p);
        }
        by.replaceAll((m, rows) -> List.copyOf(rows));
        this.byModel = Map.copyOf(by);
    }

    public List<Price> all() {
        return prices;
    }

    /** Model names with any price in force at this instant, sorted. */
    public List<String> models(Instant when) {
        return prices.stream().filter(p -> !p.effectiveFrom().isAfter(when)).map(Price::model).distinct().sorted().toList();
    }

    /**
     * The rows for {@code model}; a model of an upstream provider ({@code upstream/name}) without rows of its own
     * falls back to the upstream's default rows, priced under {@code upstream/*}.
     */
    private List<Price> current(String model, Instant when) {
        List<Price> rows = exactly(model, when);
        int slash = model.indexOf('/');
        return rows.isEmpty() && slash > 0 && !model.endsWith("/*") ? exactly(model.substring(0, slash) + "/*", when) : rows;
    }

    private List<Price> exactly(String model, Instant when) {
        List<Price> ofModel = byModel.getOrDefault(model, List.of());
        Instant from = null;
        for (Price p : ofModel) {
            if (!p.effectiveFrom().isAfter(when) && (from == null || p.effectiveFrom().isAfter(from))) {
                from = p.effectiveFrom();
            }
        }
        if (from == null) {
            return List.of();
        }
        List<Price> rows = new ArrayList<>(2);
        for (Price p : ofModel) {
            if (p.effectiveFrom().equals(from)) {
                rows.add(p);
            }
        }
        return rows;
    }

    /** The price a request completing at {@code when} pays. */
    public Optional<Price> at(String model, Instant when) {
        List<Price> rows = current(model, when);
        return rows.stream().filter(p -> p.windowed() && p.covers(when)).findFirst()
                .or(() -> rows.stream().filter(p -> !p.windowed()).findFirst());
    }

    /**
     * The highest price of each kind among the rows in force at {@code when} (base and every window): what a
     * reservation uses, so a request that starts outside a window and ends inside a dearer one is still covered.
     */
    public Optional<Price> ceiling(String model, Instant when) {
        List<Price> rows = current(model, when);
        if (rows.isEmpty()) {
            return Optional.empty();
        }
        BigDecimal hit = BigDecimal.ZERO;
        BigDecimal miss = BigDecimal.ZERO;
        BigDecimal out = BigDecimal.ZERO;
        for (Price p : rows) {
            hit = hit.max(p.cacheHitPerMillion());
            miss = miss.max(p.cacheMissPerMillion());
            out = out.max(p.outputPerMillion());
        }
        Price base = rows.getFirst();
        return Optional.of(new Price(model, base.currency(), hit.min(miss), miss, out, base.effectiveFrom(), null, null));
    }

    /**
     * How many output tokens {@code available} pays for after the prompt (charged as cache misses), at most
     * {@code maxTokens}; 0 when not even one.
     */
    public static int affordableOutputTokens(BigDecimal available, Price ceiling, int promptTokens, int maxTokens) {
        if (ceiling.cost(0, promptTokens, maxTokens).compareTo(available) <= 0) {
            return maxTokens;
        }
        int lo = 0;
        int hi = maxTokens;
        while (lo < hi) {
            int mid = (lo + hi + 1) >>> 1;
            if (ceiling.cost(0, promptTokens, mid).compareTo(available) <= 0) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        return lo == 0 && ceiling.cost(0, promptTokens, 0).compareTo(available) > 0 ? 0 : lo;
    }
}
