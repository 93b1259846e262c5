package dev.deepserve.decode;

import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.sampling.SampledToken;
import dev.deepserve.model.sampling.SamplingParams;
import dev.deepserve.serving.DecodeLoop;
import dev.deepserve.serving.CpuStepRunner;
import dev.deepserve.serving.LoopMetrics;
import dev.deepserve.serving.LoopSettings;
import dev.deepserve.serving.GenerationRequest;
import dev.deepserve.serving.TokenSink;
import dev.deepserve.tokenizer.Tokenizer;
import io.quarkus.test.common.http.TestHTTPResource;
import io.quarkus.test.junit.QuarkusTest;
import io.quarkus.test.junit.TestProfile;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

import java.net.URL;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

import static io.restassured.RestAssured.given;
import static org.awaitility.Awaitility.await;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The decode service with its MoE experts spread over itself and two worker processes it starts
 * ({@code deepserve.engine.local-expert-workers=2}), EPLB re-planning every 3 steps: the greedy streams equal what
 * the same checkpoint gives with every expert in one process, and the expert metrics show the spread.
 */
@QuarkusTest
@TestProfile(ExpertParallelServiceTest.Spread.class)
class ExpertParallelServiceTest {

    public static class Spread extends SmallModel {
        @Override
        public Map<String, String> getConfigOverrides() {
            Map<String, String> m = new HashMap<>(super.getConfigOverrides());
            m.put("deepserve.engine.local-expert-workers", "2");
            m.put("deepserve.engine.eplb-interval", "3");
            return m;
        }
    }

    @TestHTTPResource("/internal/generate")
    URL generate;

    /** Greedy tokens of the same checkpoint with every expert in this (test) process, on the service's BF16 KV cache. */
    static List<Integer> alone(int[] prompt, int maxTokens) throws InterruptedException {
        try (Transformer model = Transformer.load(SmallModel.dir(), CpuOps.best())) {
            DecodeLoop loop = new DecodeLoop(new CpuStepRunner(model), Tokenizer.load(SmallModel.dir()), null,
                    new LoopSettings(1, 4096, 1 << 16, 64, 7, 10, true, Duration.ofMinutes(1)).withKvPrecision(KvPrecision.BF16), LoopMetrics.NONE);
            List<Integer> ids = new ArrayList<>();
            boolean[] done = {false};
            loop.submit(new GenerationRequest("alone", prompt, maxTokens, SamplingParams.GREEDY, List.of()), new TokenSink() {
                @Override
                public void token(int id, String text, SampledToken sampled) {
                    ids.add(id);
                }

                @Override
                public void done(String finishReason, String text, int promptTokens, int cachedTokens, int completionTokens) {
                    done[0] = true;
                }

                @Override
                public void failed(String message, int promptTokens, int completionTokens) {
                    throw new AssertionError(message);
                }
            });
            while (!done[0]) {
                loop.runOnce(1);
            }
            return ids;
        }
    }

    @BeforeEach
    void ready() {
        await().atMost(Duration.ofSeconds(90)).untilAsserted(() -> given().get("/q/health/ready").then().statusCode(200));
    }

    @Test
    void spreadExpertsStreamWhatOneProcessStreams() throws Exception {
        for (int i = 0; i < 4; i++) {
            int[] prompt = GenerateTest.prompt(40 + i, 5 + 9 * i);
            GenerateTest.Result spread = GenerateTest.run(generate, "ep-" + i, prompt, 16, "");
            assertEquals(alone(prompt, 16), spread.ids(), "prompt " + i);
            assertEquals(16, spread.done().get("completion_tokens").asInt());
        }
        assertEquals(3, GenerateTest.gauge("deepserve_expert_workers"));
        assertTrue(GenerateTest.gauge("deepserve_expert_rebalances") >= 1, "EPLB re-planned while serving");
    }
}
