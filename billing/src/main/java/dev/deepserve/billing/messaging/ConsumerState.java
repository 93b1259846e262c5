package dev.deepserve.billing.messaging;

import jakarta.enterprise.context.ApplicationScoped;

import java.time.Instant;
import java.util.concurrent.atomic.AtomicReference;

/** How the usage consumer is doing, for readiness: when it last applied a batch, and since when it has been failing. */
@ApplicationScoped
public class ConsumerState {

    private final AtomicReference<Instant> lastApplied = new AtomicReference<>();
    private final AtomicReference<Instant> failingSince = new AtomicReference<>();
    private final AtomicReference<String> lastError = new AtomicReference<>();

    void applied() {
        lastApplied.set(Instant.now());
        failingSince.set(null);
        lastError.set(null);
    }

    void failed(Throwable t) {
        failingSince.compareAndSet(null, Instant.now());
        lastError.set(Poison.reason(t));
    }

    public Instant lastApplied() {
        return lastApplied.get();
    }

    /** Null while batches pass. */
    public Instant failingSince() {
        return failingSince.get();
    }

    public String lastError() {
        return lastError.get();
    }
}
