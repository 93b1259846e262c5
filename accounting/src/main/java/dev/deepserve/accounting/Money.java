package dev.deepserve.accounting;

import java.math.BigDecimal;
import java.math.RoundingMode;

/**
 * The one rounding rule for money. A request's cost is computed exactly (token counts × per-1M prices ÷ 10^6) and
 * rounded once, half up, to {@value #SCALE} decimal places — the precision {@code usage.cost} shows and the ledger
 * stores. DeepSeek's published prices are multiples of 10^-8 per token, so their costs need no rounding at all.
 * Balances are sums of those rounded costs, so they are exact; {@link #display} only formats them for
 * {@code /user/balance}, truncating to cents so an account is never shown more than it has.
 */
public final class Money {

    public static final int SCALE = 8;

    private Money() {
    }

    /** Rounds an exact amount to the ledger's precision (the only rounding applied to charges). */
    public static BigDecimal round(BigDecimal exact) {
        return exact.setScale(SCALE, RoundingMode.HALF_UP);
    }

    /** {@code tokens × pricePerMillion ÷ 10^6}, exact (a decimal shift: no division is needed to divide by 10^6). */
    static BigDecimal tokens(long tokens, BigDecimal pricePerMillion) {
        return pricePerMillion.multiply(BigDecimal.valueOf(tokens)).movePointLeft(6);
    }

    /** A balance as {@code /user/balance} shows it: two decimals, truncated. */
    public static String display(BigDecimal amount) {
        return amount.setScale(2, RoundingMode.DOWN).toPlainString();
    }

    /** An amount at ledger precision as a plain string (what {@code usage.cost} carries). */
    public static String plain(BigDecimal amount) {
        return amount.setScale(SCALE, RoundingMode.HALF_UP).toPlainString();
    }
}
