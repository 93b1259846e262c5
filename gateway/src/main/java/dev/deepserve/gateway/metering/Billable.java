package dev.deepserve.gateway.metering;

import dev.deepserve.gateway.auth.ApiKey;
import dev.deepserve.gateway.usage.UsageWriter;
import dev.deepserve.accounting.EventIds;
import dev.deepserve.accounting.PriceCatalog;

import java.math.BigDecimal;
import java.time.Instant;
import java.util.UUID;

/**
 * One billed request as metering sees it: its permanent id, when it was made, the key, its reservation, whether
 * the client went away; the serving path says which model it is for and whether it streams.
 */
public abstract class Billable {
    private final String id = requestId();
    private final long created = Instant.now().getEpochSecond();
    ApiKey key;
    Ledger.Reservation reservation;
    PriceCatalog catalog;
    boolean clientGone;
    UUID eventId;
    UsageWriter.Provisional provisional;
    long provisionalAt;
    String provisionalEvent;
    BigDecimal provisionalCost;
    io.vertx.core.Context context;
    /** The trace this request's spans belong under (its HTTP server span's); the root when tracing is off. */
    private io.opentelemetry.context.Context trace = io.opentelemetry.context.Context.root();

    protected Billable() {
    }

    protected Billable(ApiKey key) {
        this.key = key;
    }

    public final String id() {
        return id;
    }

    public final long created() {
        return created;
    }

    public final ApiKey key() {
        return key;
    }

    /** Set once the key is verified (a request's body is read before that). */
    public final void key(ApiKey verified) {
        if (key != null && key != verified) {
            throw new IllegalStateException("request " + id + " already has its key");
        }
        this.key = verified;
    }

    public final io.opentelemetry.context.Context trace() {
        return trace;
    }

    /** Taken on the request's event loop when it arrives, where the server span is current. */
    public final void trace(io.opentelemetry.context.Context current) {
        trace = current;
    }

    /** The model name the client used (and the price catalog knows). */
    public abstract String model();

    public abstract boolean streamed();

    public final boolean clientGone() {
        return clientGone;
    }

    public final void clientLeft() {
        clientGone = true;
    }

    public final Ledger.Reservation reservation() {
        return reservation;
    }

    final void reservation(Ledger.Reservation r) {
        reservation = r;
    }

    /** The price catalog as it was when the request was admitted; settlement prices from it, never re-reading it. */
    final PriceCatalog catalog() {
        return catalog;
    }

    /** The id of this request's usage event, fixed at its first use (a provisional record or the settlement). */
    final UUID eventId() {
        if (eventId == null) {
            eventId = EventIds.next();
        }
        return eventId;
    }


    static final java.util.HexFormat HEX = java.util.HexFormat.of();

    /** {@code chatcmpl-} and 32 hex digits: a version 7 UUID, so ids made one after another sort one after another. */
    public static String requestId() {
        UUID u = EventIds.next();
        return "chatcmpl-" + HEX.toHexDigits(u.getMostSignificantBits()) + HEX.toHexDigits(u.getLeastSignificantBits());
    }
}
