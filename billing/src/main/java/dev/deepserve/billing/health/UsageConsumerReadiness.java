package dev.deepserve.billing.health;

import dev.deepserve.billing.messaging.ConsumerState;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;
import org.eclipse.microprofile.health.HealthCheck;
import org.eclipse.microprofile.health.HealthCheckResponse;
import org.eclipse.microprofile.health.HealthCheckResponseBuilder;
import org.eclipse.microprofile.health.Readiness;

import java.time.Duration;
import java.time.Instant;

/**
 * Billing is not ready while its usage consumer has been failing for longer than a short blip (PostgreSQL away): the
 * events wait in Kafka meanwhile, nothing is lost, but nothing is applied either, and an operator should know. Shows
 * when a batch was last applied and, where the Kafka client reports it, the consumer's lag in records.
 */
@Readiness
public class UsageConsumerReadiness implements HealthCheck {

    static final Duration STALLED_AFTER = Duration.ofSeconds(30);

    private final ConsumerState state;
    private final MeterRegistry meters;

    UsageConsumerReadiness(ConsumerState state, MeterRegistry meters) {
        this.state = state;
        this.meters = meters;
    }

    @Override
    public HealthCheckResponse call() {
        Instant failing = state.failingSince();
        boolean stalled = failing != null && Duration.between(failing, Instant.now()).compareTo(STALLED_AFTER) > 0;
        HealthCheckResponseBuilder r = HealthCheckResponse.named("usage consumer").status(!stalled);
        Instant last = state.lastApplied();
        r.withData("last_applied_at", last == null ? "never" : last.toString());
        if (failing != null) {
            r.withData("failing_since", failing.toString()).withData("last_error", String.valueOf(state.lastError()));
        }
        double lag = meters.find("kafka.consumer.fetch.manager.records.lag.max").gauges().stream().mapToDouble(Gauge::value)
                .filter(v -> !Double.isNaN(v)).max().orElse(Double.NaN);
        if (!Double.isNaN(lag)) {
            r.withData("lag_records", (long) Math.max(0, lag));
        }
        return r.build();
    }
}
