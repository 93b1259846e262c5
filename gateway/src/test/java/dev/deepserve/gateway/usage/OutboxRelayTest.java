package dev.deepserve.gateway.usage;

import dev.deepserve.embedded.EmbeddedPostgresResource;
import io.quarkus.test.common.QuarkusTestResource;
import io.quarkus.test.junit.QuarkusTest;
import io.smallrye.reactive.messaging.kafka.api.OutgoingKafkaRecordMetadata;
import io.smallrye.reactive.messaging.memory.InMemoryConnector;
import io.smallrye.reactive.messaging.memory.InMemorySink;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.enterprise.inject.Any;
import jakarta.inject.Inject;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.UUID;

import static io.restassured.RestAssured.given;
import static org.awaitility.Awaitility.await;
import static org.hamcrest.Matchers.containsString;
import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * The outbox relay publishes each unpublished row once, keyed by its first event, keeps unpublished rows past
 * retention, and the gateway's metrics and health probes answer.
 */
@QuarkusTest
@QuarkusTestResource(EmbeddedPostgresResource.class)
class OutboxRelayTest {

    @Inject
    Pool pool;

    @Inject
    @Any
    InMemoryConnector connector;

    @Test
    void publishesEachOutboxRowOnceInARecordKeyedByItsFirstEventAndStampsIt() {
        InMemorySink<String> sink = connector.sink("usage");
        sink.clear();
        UUID id = UUID.randomUUID();
        String payload = "{\"event_id\":\"" + id + "\",\"completion_tokens\":7}";
        pool.preparedQuery("INSERT INTO gateway.usage_outbox (event_id, payload) VALUES ($1, $2::text::json)")
                .execute(Tuple.of(id, payload)).await().indefinitely();

        await().atMost(Duration.ofSeconds(20)).until(() -> sink.received().stream().anyMatch(m -> m.getPayload().contains(id.toString())));
        var message = sink.received().stream().filter(m -> m.getPayload().contains(id.toString())).findFirst().orElseThrow();
        // a record may carry other rows relayed in the same pass, one per line; it is keyed by its first event's id
        String first = message.getPayload().split("\n")[0];
        assertEquals(new io.vertx.core.json.JsonObject(first).getString("event_id"), message.getMetadata(OutgoingKafkaRecordMetadata.class).orElseThrow().getKey());
        assertEquals(1, java.util.Arrays.stream(message.getPayload().split("\n")).filter(line -> line.contains(id.toString())).count());

        await().atMost(Duration.ofSeconds(20)).until(() -> pool.preparedQuery(
                        "SELECT published_at IS NOT NULL FROM gateway.usage_outbox WHERE event_id = $1")
                .execute(Tuple.of(id)).await().indefinitely().iterator().next().getBoolean(0));
        // Further relay passes must not send it again.
        long copies = sink.received().stream().filter(m -> m.getPayload().contains(id.toString())).count();
        assertEquals(1, copies);
    }

    @Inject
    OutboxRelay relay;

    @Test
    void publishedEventsOlderThanTheRetentionAreDeletedAndUnpublishedOnesKept() {
        UUID old = UUID.randomUUID();
        UUID oldUnpublished = UUID.randomUUID();
        UUID recent = UUID.randomUUID();
        pool.preparedQuery("INSERT INTO gateway.usage_outbox (event_id, payload, created_at, published_at) VALUES "
                        + "($1, '{}'::jsonb, now() - interval '25 hours', now() - interval '25 hours'), "
                        + "($2, '{}'::jsonb, now() - interval '25 hours', NULL), ($3, '{}'::jsonb, now() - interval '1 hour', now())")
                .execute(Tuple.of(old, oldUnpublished, recent)).await().indefinitely();
        relay.prune().await().indefinitely();
        var left = new java.util.HashSet<UUID>();
        pool.preparedQuery("SELECT event_id FROM gateway.usage_outbox WHERE event_id = ANY($1)").execute(Tuple.of(new UUID[] {old, oldUnpublished, recent}))
                .await().indefinitely().forEach(r -> left.add(r.getUUID(0)));
        assertEquals(java.util.Set.of(oldUnpublished, recent), left);
    }

    @Test
    void metricsAreExposedForPrometheus() {
        given().get("/q/metrics").then().statusCode(200).body(containsString("deepserve_outbox_backlog"));
    }

    @Test
    void livenessIsUpWithoutUpstreams() {
        given().get("/q/health/live").then().statusCode(200);
    }

    @Test
    void readinessNamesTheUpstreamThatIsDown() {
        given().get("/q/health/ready").then().statusCode(503)
                .body(containsString("upstreams"))
                .body(containsString("DOWN: http://127.0.0.1:8002 unreachable"));
    }
}
