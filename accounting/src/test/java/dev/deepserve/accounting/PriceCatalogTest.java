package dev.deepserve.accounting;

import org.junit.jupiter.api.Test;

import java.math.BigDecimal;
import java.time.Instant;
import java.time.LocalTime;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/**
 * Costs are exact at DeepSeek's prices and rounded once, half up, at eight decimals; the off-peak window wraps midnight
 * and is chosen by completion time, a later effective date replaces the whole set, and an upstream model without its
 * own price takes the upstream's wildcard price ({@code ds/*}), which local model names never do. The ceiling covers
 * every window, affordable output tokens are exact, invalid prices are rejected, and balances display truncated to
 * cents.
 */
class PriceCatalogTest {

    static final Instant LAUNCH = Instant.parse("2025-01-01T00:00:00Z");
    static final Price CHAT = new Price("deepseek-chat", "USD", new BigDecimal("0.07"), new BigDecimal("0.27"), new BigDecimal("1.10"), LAUNCH, null, null);
    static final Price CHAT_NIGHT = new Price("deepseek-chat", "USD", new BigDecimal("0.035"), new BigDecimal("0.135"), new BigDecimal("0.55"), LAUNCH,
            LocalTime.of(16, 30), LocalTime.of(0, 30));
    static final PriceCatalog CATALOG = new PriceCatalog(List.of(CHAT, CHAT_NIGHT,
            new Price("deepseek-chat", "USD", new BigDecimal("0.10"), new BigDecimal("0.30"), new BigDecimal("1.20"), Instant.parse("2030-01-01T00:00:00Z"), null, null)));

    @Test
    void costIsExactForDeepSeeksPrices() {
        // 1000 hit × 0.07 + 2000 miss × 0.27 + 300 out × 1.10, per 1M: 0.00007 + 0.00054 + 0.00033 = 0.00094
        assertEquals(new BigDecimal("0.00094000"), CHAT.cost(1000, 2000, 300));
        assertEquals(new BigDecimal("0.00000110"), CHAT.cost(0, 0, 1));
        assertEquals("0.00000007", Money.plain(CHAT.cost(1, 0, 0)));
    }

    @Test
    void roundingHappensOnceHalfUpAtEightDecimals() {
        Price odd = new Price("m", "USD", new BigDecimal("0.001"), new BigDecimal("0.003"), new BigDecimal("0.005"), LAUNCH, null, null);
        // 1 out token = 0.005 / 1e6 = 5e-9 → rounds half up to 1e-8; 3 tokens = 1.5e-8 → 2e-8 (not 3 × 1e-8)
        assertEquals(new BigDecimal("0.00000001"), odd.cost(0, 0, 1));
        assertEquals(new BigDecimal("0.00000002"), odd.cost(0, 0, 3));
    }

    @Test
    void offPeakWindowWrapsMidnightAndDecidesByCompletionTime() {
        assertEquals(CHAT, CATALOG.at("deepseek-chat", Instant.parse("2026-11-24T16:29:59Z")).orElseThrow());
        assertEquals(CHAT_NIGHT, CATALOG.at("deepseek-chat", Instant.parse("2026-11-24T16:30:00Z")).orElseThrow());
        assertEquals(CHAT_NIGHT, CATALOG.at("deepseek-chat", Instant.parse("2026-11-25T00:29:59Z")).orElseThrow());
        assertEquals(CHAT, CATALOG.at("deepseek-chat", Instant.parse("2026-11-25T00:30:00Z")).orElseThrow());
        assertEquals(new BigDecimal("1.20"), CATALOG.at("deepseek-chat", Instant.parse("2030-06-01T17:00:00Z")).orElseThrow().outputPerMillion(),
                "a newer effective date replaces the whole set, windows included");
        assertEquals(true, CATALOG.at("unknown", LAUNCH).isEmpty());
    }

    @Test
    void ceilingCoversEveryWindowAndAffordabilityIsExact() {
        Price ceiling = CATALOG.ceiling("deepseek-chat", Instant.parse("2026-11-24T12:00:00Z")).orElseThrow();
        assertEquals(new BigDecimal("1.10"), ceiling.outputPerMillion());
        // 100 prompt tokens at 0.27/1M = 0.000027; each output token 0.0000011
        BigDecimal available = new BigDecimal("0.000027").add(new BigDecimal("0.0000011").multiply(BigDecimal.valueOf(10)));
        assertEquals(10, PriceCatalog.affordableOutputTokens(available, ceiling, 100, 500));
        assertEquals(500, PriceCatalog.affordableOutputTokens(BigDecimal.ONE, ceiling, 100, 500));
        assertEquals(0, PriceCatalog.affordableOutputTokens(new BigDecimal("0.00002"), ceiling, 100, 500));
    }

    @Test
    void anUpstreamModelWithoutItsOwnPriceUsesTheUpstreamsDefault() {
        Price all = new Price("ds/*", "USD", new BigDecimal("1"), new BigDecimal("2"), new BigDecimal("3"), LAUNCH, null, null);
        Price big = new Price("ds/big", "USD", new BigDecimal("5"), new BigDecimal("6"), new BigDecimal("7"), LAUNCH, null, null);
        PriceCatalog c = new PriceCatalog(List.of(all, big));
        assertEquals(all, c.at("ds/small", LAUNCH).orElseThrow());
        assertEquals(big, c.at("ds/big", LAUNCH).orElseThrow());
        assertEquals(new BigDecimal("3"), c.ceiling("ds/any", LAUNCH).orElseThrow().outputPerMillion());
        assertEquals(true, c.at("other/small", LAUNCH).isEmpty());
        assertEquals(true, c.at("deepseek-chat", LAUNCH).isEmpty(), "local names never fall back");
    }

    @Test
    void invalidPricesAreRejected() {
        assertThrows(IllegalArgumentException.class, () -> new Price("m", "USD", new BigDecimal("0.5"), new BigDecimal("0.1"), BigDecimal.ONE, LAUNCH, null, null));
        assertThrows(IllegalArgumentException.class, () -> new Price("m", "USD", BigDecimal.ZERO, BigDecimal.ONE, BigDecimal.ONE, LAUNCH, LocalTime.NOON, null));
    }

    @Test
    void balancesDisplayTruncatedToCents() {
        assertEquals("9.99", Money.display(new BigDecimal("9.99999999")));
        assertEquals("110.00", Money.display(new BigDecimal("110")));
    }
}
