package dev.deepserve.tokenize;

import io.quarkus.test.junit.QuarkusTest;
import io.quarkus.test.junit.QuarkusTestProfile;
import io.quarkus.test.junit.TestProfile;
import org.junit.jupiter.api.Test;

import java.util.Map;

import static io.restassured.RestAssured.given;
import static org.hamcrest.Matchers.containsString;

/** Without its model files the service is alive but not ready, and says why. */
@QuarkusTest
@TestProfile(ReadinessTest.MissingModel.class)
class ReadinessTest {

    public static class MissingModel implements QuarkusTestProfile {
        @Override
        public Map<String, String> getConfigOverrides() {
            return Map.of("deepserve.model-dir", "target/no-such-model");
        }
    }

    @Test
    void aliveButNotReadyNamingTheMissingDirectory() {
        given().get("/q/health/live").then().statusCode(200);
        given().get("/q/health/ready").then().statusCode(503)
                .body(containsString("tokenizer-files"))
                .body(containsString("target/no-such-model does not exist"));
    }

    @Test
    void prometheusMetrics() {
        given().get("/q/metrics").then().statusCode(200).body(containsString("jvm_memory_used_bytes"));
    }
}
