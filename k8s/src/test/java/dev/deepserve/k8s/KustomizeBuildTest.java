package dev.deepserve.k8s;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.MappingIterator;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The overlays built by real kustomize (the one in kubectl: DEEPSERVE_KUBECTL, else the pinned kubectl that the
 * build's initialize phase fetches into the cache with scripts/fetch-kubectl.sh, else one on the PATH): every overlay builds, it yields exactly the objects
 * the offline checks in {@link ManifestsTest} reason about, and those checks hold on the real output too.
 * Skipped, saying so, where no kubectl is found.
 */
class KustomizeBuildTest {

    static String kubectl;

    @BeforeAll
    static void findKubectl() {
        String cache = dev.deepserve.model.cli.ModelCli.cacheDir(System.getenv()).toString();
        for (String candidate : new String[] {System.getenv("DEEPSERVE_KUBECTL"), cache + "/kubectl-2.1.0/kubectl"}) {
            if (candidate != null && Files.isExecutable(Path.of(candidate))) {
                kubectl = candidate;
                return;
            }
        }
        for (String dir : System.getenv().getOrDefault("PATH", "").split(":")) {
            if (!dir.isEmpty() && Files.isExecutable(Path.of(dir, "kubectl"))) {
                kubectl = Path.of(dir, "kubectl").toString();
                return;
            }
        }
    }

    record Result(int exit, String out, String err) {
    }

    static Result kustomize(Path dir) throws IOException, InterruptedException {
        if (kubectl == null && "true".equals(System.getenv("CI"))) {
            org.junit.jupiter.api.Assertions.fail("CI must build k8s/ with real kustomize: the build's initialize phase runs scripts/fetch-kubectl.sh");
        }
        assumeTrue(kubectl != null, "no kubectl: run scripts/fetch-kubectl.sh (./mvnw verify does)");
        Process p = new ProcessBuilder(kubectl, "kustomize", dir.toString()).start();
        byte[] out = p.getInputStream().readAllBytes();
        byte[] err = p.getErrorStream().readAllBytes();
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "kubectl kustomize did not finish");
        return new Result(p.exitValue(), new String(out, StandardCharsets.UTF_8), new String(err, StandardCharsets.UTF_8));
    }

    static List<JsonNode> build(String overlay) throws Exception {
        Result r = kustomize(ManifestsTest.ROOT.resolve(overlay));
        assertEquals(0, r.exit(), overlay + ": kustomize build failed: " + r.err());
        List<JsonNode> docs = new ArrayList<>();
        try (MappingIterator<JsonNode> it = ManifestsTest.YAML.readerFor(JsonNode.class).readValues(r.out())) {
            while (it.hasNext()) {
                JsonNode d = it.next();
                if (d != null && !d.isEmpty()) {
                    docs.add(d);
                }
            }
        }
        return docs;
    }

    static Set<String> names(List<JsonNode> objects) {
        Set<String> out = new TreeSet<>();
        objects.forEach(o -> out.add(o.path("kind").asText() + "/" + o.path("metadata").path("name").asText()));
        return out;
    }

    @Test
    void everyOverlayBuildsToTheObjectsTheOfflineChecksSee() throws Exception {
        for (String overlay : List.of("overlays/dev", "overlays/gpu")) {
            List<JsonNode> real = build(overlay);
            assertEquals(names(ManifestsTest.build(ManifestsTest.ROOT.resolve(overlay))), names(real), overlay);
            for (JsonNode o : real) {
                String kind = o.path("kind").asText();
                assertEquals(ManifestsTest.API.get(kind), o.path("apiVersion").asText(), overlay + ": " + kind);
                assertNotEquals("Secret", kind, overlay + ": secrets must only be referenced");
                assertEquals("deepserve", o.path("metadata").path("namespace").asText(kind.equals("Namespace") ? "deepserve" : ""),
                        overlay + ": " + kind + "/" + o.path("metadata").path("name").asText() + " is outside the deepserve namespace");
            }
        }
    }

    @Test
    void theBuiltWorkloadsProbeHealthAndOnlyGpuAsksForGpus() throws Exception {
        for (String overlay : List.of("overlays/dev", "overlays/gpu")) {
            int gpus = 0;
            for (JsonNode o : build(overlay)) {
                for (JsonNode pod : ManifestsTest.podSpecs(o)) {
                    for (JsonNode c : pod.path("spec").path("containers")) {
                        if (!o.path("kind").asText().equals("Job")) {
                            assertEquals("/q/health/ready", c.path("readinessProbe").path("httpGet").path("path").asText(), overlay + ": " + o.path("metadata").path("name"));
                        }
                        if (c.path("resources").path("limits").has("nvidia.com/gpu")) {
                            gpus++;
                        }
                    }
                }
            }
            if (overlay.endsWith("dev")) {
                assertEquals(0, gpus, "dev asks for no GPU");
            } else {
                assertTrue(gpus >= 3, "gpu: prefill and both decode templates ask for GPUs");
            }
        }
    }

    @Test
    void aBrokenOverlayFailsTheBuild() throws Exception {
        Path dir = Files.createTempDirectory("broken-overlay");
        Files.writeString(dir.resolve("kustomization.yaml"), """
                apiVersion: kustomize.config.k8s.io/v1beta1
                kind: Kustomization
                resources:
                  - %s
                patches:
                  - target: {kind: Deployment, name: no-such-service}
                    patch: |-
                      - op: replace
                        path: /spec/replicas
                        value: 2
                  - path: missing-patch.yaml
                """.formatted(ManifestsTest.ROOT.resolve("base")));
        Result r = kustomize(dir);
        assertNotEquals(0, r.exit(), "a patch file that does not exist must fail the build");
        assertFalse(r.err().isBlank());
    }
}
