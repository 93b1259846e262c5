package dev.deepserve.billing.messaging;

import com.code_intelligence.jazzer.junit.FuzzTest;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.deepserve.accounting.StoredText;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;

import java.nio.charset.StandardCharsets;
import java.util.List;

/**
 * Fuzz target: billing's usage-event reader, from a Kafka record's bytes to what it applies or sets aside. A record is
 * split into events and each becomes either an event fit for the ledger (every text field storable, counts and cost
 * in range) or a dead letter with a storable reason; nothing else may escape, so no record can halt the consumer.
 * Regression inputs: UsageEventFuzzTestInputs.
 */
class UsageEventFuzzTest {

    /** Configured as Quarkus configures the one billing runs with: Java time types, unknown fields ignored. */
    static final ObjectMapper JSON = new ObjectMapper().findAndRegisterModules().configure(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES, false);
    static final UsageConsumer READER = new UsageConsumer(null, JSON, new SimpleMeterRegistry(), null);

    @FuzzTest(maxDuration = "10s")
    void appliesOrSetsAside(byte[] record) {
        for (String payload : READER.events(List.of(new String(record, StandardCharsets.UTF_8)))) {
            Object outcome = READER.parse(payload);
            if (outcome instanceof UsageConsumer.Received r) {
                UsageEvent e = r.event();
                for (String text : new String[] {e.requestId(), e.accountId(), e.apiKeyId(), e.model(), e.finishReason(), e.currency()}) {
                    if (text != null && (StoredText.flaw(text) != null || text.length() > UsageEventCheck.MAX_MODEL)) {
                        throw new AssertionError("an event with unstorable text was accepted: " + payload);
                    }
                }
                if (e.cost().signum() < 0 || e.cost().stripTrailingZeros().scale() > 12 || e.promptCacheHitTokens() < 0
                        || e.promptCacheMissTokens() < 0 || e.completionTokens() < 0) {
                    throw new AssertionError("an event out of range was accepted: " + payload);
                }
            } else if (outcome instanceof UsageConsumer.DeadLetter d) {
                if (d.reason() == null || StoredText.flaw(Poison.clean(d.reason())) != null) {
                    throw new AssertionError("a dead letter without a storable reason: " + d.reason());
                }
            } else {
                throw new AssertionError("neither applied nor set aside: " + outcome);
            }
        }
    }
}
