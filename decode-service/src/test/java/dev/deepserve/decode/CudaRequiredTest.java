package dev.deepserve.decode;

import dev.deepserve.cuda.CudaOps;
import io.quarkus.test.junit.QuarkusTest;
import io.quarkus.test.junit.TestProfile;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;

import static io.restassured.RestAssured.given;
import static org.awaitility.Awaitility.await;
import static org.hamcrest.Matchers.containsString;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * {@code DEEPSERVE_ENGINE_BACKEND=cuda} where CUDA cannot run: the service stays alive but never ready, and says why
 * (instead of quietly serving from the CPU). On a machine with a usable GPU this test does not apply.
 */
@QuarkusTest
@TestProfile(CudaRequiredTest.CudaOnly.class)
class CudaRequiredTest {

    public static class CudaOnly extends SmallModel {
        @Override
        public Map<String, String> getConfigOverrides() {
            Map<String, String> m = new HashMap<>(super.getConfigOverrides());
            m.put("deepserve.engine.backend", "cuda");
            return m;
        }
    }

    @Test
    void notReadyNamingWhatIsMissing() {
        assumeTrue(CudaOps.unavailable().isPresent(), "a usable CUDA device is present");
        given().get("/q/health/live").then().statusCode(200);
        await().atMost(Duration.ofSeconds(30)).untilAsserted(() -> given().get("/q/health/ready").then().statusCode(503)
                .body(containsString("DEEPSERVE_ENGINE_BACKEND=cuda but the CUDA backend cannot run")));
    }
}
