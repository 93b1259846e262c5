package dev.deepserve.k8s;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import com.fasterxml.jackson.dataformat.yaml.YAMLMapper;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Offline checks of the kustomize tree: every referenced file exists, every object has a known kind with its right
 * apiVersion, workloads probe /q/health/live and /q/health/ready on a declared port, secrets are only referenced,
 * services select existing pods, and the overlays' JSON patches apply to the base (GPUs gone in dev, 8 per pod in gpu).
 * {@link KustomizeBuildTest} builds the same overlays with real kustomize and checks they yield the same objects;
 * strict schema validation of every object against the Kubernetes and CRD schemas is not done yet.
 */
class ManifestsTest {

    static final Path ROOT = Path.of(".").toAbsolutePath().normalize();
    static final ObjectMapper YAML = new YAMLMapper(new YAMLFactory());
    static final Map<String, String> API = Map.ofEntries(
            Map.entry("Namespace", "v1"), Map.entry("ConfigMap", "v1"), Map.entry("Service", "v1"),
            Map.entry("PersistentVolumeClaim", "v1"), Map.entry("Deployment", "apps/v1"), Map.entry("Job", "batch/v1"),
            Map.entry("PodDisruptionBudget", "policy/v1"), Map.entry("NetworkPolicy", "networking.k8s.io/v1"),
            Map.entry("Ingress", "networking.k8s.io/v1"), Map.entry("ServiceMonitor", "monitoring.coreos.com/v1"),
            Map.entry("ScaledObject", "keda.sh/v1alpha1"), Map.entry("LeaderWorkerSet", "leaderworkerset.x-k8s.io/v1"),
            Map.entry("Cluster", "postgresql.cnpg.io/v1"), Map.entry("KafkaTopic", "kafka.strimzi.io/v1beta2"),
            Map.entry("KafkaUser", "kafka.strimzi.io/v1beta2"), Map.entry("Kafka", "kafka.strimzi.io/v1beta2"),
            Map.entry("KafkaNodePool", "kafka.strimzi.io/v1beta2"), Map.entry("Kustomization", "kustomize.config.k8s.io/v1beta1"));
    static final Set<String> SECRETS = Set.of("deepserve-pg-app", "gateway", "billing", "deepserve-admin", "deepserve-internal");

    static List<JsonNode> documents(Path file) throws IOException {
        List<JsonNode> docs = new ArrayList<>();
        try (var parser = YAML.getFactory().createParser(file.toFile())) {
            var it = YAML.readValues(parser, JsonNode.class);
            while (it.hasNext()) {
                JsonNode d = it.next();
                if (d != null && !d.isNull() && !d.isEmpty()) {
                    docs.add(d);
                }
            }
        }
        return docs;
    }

    /** The objects a kustomization brings in (resources, recursively), before its patches. */
    static List<JsonNode> objects(Path dir) throws IOException {
        JsonNode k = documents(dir.resolve("kustomization.yaml")).getFirst();
        List<JsonNode> out = new ArrayList<>();
        for (JsonNode r : k.path("resources")) {
            Path p = dir.resolve(r.asText()).normalize();
            assertTrue(Files.exists(p), dir + ": resource " + r.asText() + " does not exist");
            out.addAll(Files.isDirectory(p) ? build(p) : documents(p));
        }
        return out;
    }

    /** A small kustomize: resources, then JSON 6902 patches (add/replace/remove) and strategic merges by kind+name. */
    static List<JsonNode> build(Path dir) throws IOException {
        List<JsonNode> objects = objects(dir);
        JsonNode k = documents(dir.resolve("kustomization.yaml")).getFirst();
        for (JsonNode patch : k.path("patches")) {
            if (patch.has("path")) {
                Path p = dir.resolve(patch.get("path").asText());
                assertTrue(Files.isRegularFile(p), dir + ": patch " + p + " does not exist");
                for (JsonNode merge : documents(p)) {
                    JsonNode target = find(objects, merge.path("kind").asText(), merge.path("metadata").path("name").asText());
                    assertTrue(target != null, p + ": patches " + merge.path("kind").asText() + "/" + merge.path("metadata").path("name").asText() + ", which the base lacks");
                    merge((ObjectNode) target, merge);
                }
            } else {
                JsonNode t = patch.path("target");
                ArrayNode ops = (ArrayNode) YAML.readTree(patch.path("patch").asText());
                int applied = 0;
                for (JsonNode o : objects) {
                    if (o.path("kind").asText().equals(t.path("kind").asText())
                            && (!t.has("name") || o.path("metadata").path("name").asText().equals(t.path("name").asText()))) {
                        for (JsonNode op : ops) {
                            apply((ObjectNode) o, op, dir);
                        }
                        applied++;
                    }
                }
                assertTrue(applied > 0, dir + ": a patch targets " + t + ", which matches nothing");
            }
        }
        return objects;
    }

    static JsonNode find(List<JsonNode> objects, String kind, String name) {
        return objects.stream().filter(o -> o.path("kind").asText().equals(kind) && o.path("metadata").path("name").asText().equals(name)).findFirst().orElse(null);
    }

    static void merge(ObjectNode target, JsonNode patch) {
        patch.properties().forEach(e -> {
            JsonNode existing = target.get(e.getKey());
            if (existing instanceof ObjectNode o && e.getValue().isObject()) {
                merge(o, e.getValue());
            } else {
                target.set(e.getKey(), e.getValue());
            }
        });
    }

    static void apply(ObjectNode doc, JsonNode op, Path where) {
        String[] path = op.get("path").asText().substring(1).split("/");
        JsonNode parent = doc;
        for (int i = 0; i < path.length - 1; i++) {
            parent = parent.isArray() ? parent.get(Integer.parseInt(path[i])) : parent.get(path[i]);
            assertTrue(parent != null, where + ": patch path " + op.get("path").asText() + " does not exist in " + doc.path("metadata").path("name").asText());
        }
        String last = path[path.length - 1];
        switch (op.get("op").asText()) {
            case "remove" -> {
                assertTrue(parent.has(last), where + ": cannot remove missing " + op.get("path").asText());
                ((ObjectNode) parent).remove(last);
            }
            case "replace" -> {
                assertTrue(parent.has(last), where + ": cannot replace missing " + op.get("path").asText());
                ((ObjectNode) parent).set(last, op.get("value"));
            }
            case "add" -> ((ObjectNode) parent).set(last, op.get("value"));
            default -> throw new AssertionError(where + ": unsupported patch op " + op.get("op"));
        }
    }

    /** Pod templates of a workload (Deployment, Job, both LeaderWorkerSet templates). */
    static List<JsonNode> podSpecs(JsonNode o) {
        List<JsonNode> specs = new ArrayList<>();
        switch (o.path("kind").asText()) {
            case "Deployment", "Job" -> specs.add(o.path("spec").path("template"));
            case "LeaderWorkerSet" -> {
                specs.add(o.path("spec").path("leaderWorkerTemplate").path("leaderTemplate"));
                if (o.path("spec").path("leaderWorkerTemplate").has("workerTemplate")) {
                    specs.add(o.path("spec").path("leaderWorkerTemplate").path("workerTemplate"));
                }
            }
            default -> { }
        }
        return specs;
    }

    @Test
    void everyObjectIsAKnownKindWithItsApiVersionAndAName() throws IOException {
        for (String overlay : List.of("overlays/dev", "overlays/gpu")) {
            for (JsonNode o : build(ROOT.resolve(overlay))) {
                String kind = o.path("kind").asText();
                assertTrue(API.containsKey(kind), overlay + ": unknown kind '" + kind + "'");
                assertEquals(API.get(kind), o.path("apiVersion").asText(), overlay + ": apiVersion of " + kind + " " + o.path("metadata").path("name"));
                assertFalse(o.path("metadata").path("name").asText().isBlank(), overlay + ": a " + kind + " without a name");
                assertFalse(kind.equals("Secret"), overlay + ": secrets must only be referenced, never written here");
            }
        }
    }

    @Test
    void workloadsProbeTheirHealthEndpointsAndOnlyReferenceKnownSecrets() throws IOException {
        Set<String> images = new HashSet<>();
        documents(ROOT.resolve("base/kustomization.yaml")).getFirst().path("images").forEach(i -> images.add(i.path("name").asText()));
        documents(ROOT.resolve("overlays/dev/kustomization.yaml")).getFirst().path("images").forEach(i -> images.add(i.path("name").asText()));
        int containers = 0;
        for (JsonNode o : build(ROOT.resolve("overlays/dev"))) {
            for (JsonNode pod : podSpecs(o)) {
                for (JsonNode c : pod.path("spec").path("containers")) {
                    containers++;
                    String name = o.path("metadata").path("name").asText() + "/" + c.path("name").asText();
                    assertTrue(images.contains(c.path("image").asText()), name + ": image " + c.path("image") + " is not one the kustomization maps");
                    assertTrue(c.path("resources").has("requests"), name + ": no resource requests");
                    for (JsonNode env : c.path("env")) {
                        JsonNode ref = env.path("valueFrom").path("secretKeyRef");
                        if (!ref.isMissingNode()) {
                            assertTrue(SECRETS.contains(ref.path("name").asText()), name + ": secret " + ref.path("name") + " is not one the README tells to create");
                        }
                    }
                    if (o.path("kind").asText().equals("Job")) {
                        continue;
                    }
                    Set<String> ports = new HashSet<>();
                    c.path("ports").forEach(p -> ports.add(p.path("name").asText()));
                    assertEquals("/q/health/live", c.path("livenessProbe").path("httpGet").path("path").asText(), name + ": liveness probe");
                    assertEquals("/q/health/ready", c.path("readinessProbe").path("httpGet").path("path").asText(), name + ": readiness probe");
                    assertTrue(ports.contains(c.path("readinessProbe").path("httpGet").path("port").asText()), name + ": probe port is not a declared port");
                }
            }
        }
        assertTrue(containers >= 6, "found only " + containers + " containers");
    }

    @Test
    void servicesSelectPodsThatExist() throws IOException {
        List<JsonNode> objects = build(ROOT.resolve("overlays/gpu"));
        for (JsonNode svc : objects) {
            if (!svc.path("kind").asText().equals("Service")) {
                continue;
            }
            boolean matched = false;
            for (JsonNode o : objects) {
                for (JsonNode pod : podSpecs(o)) {
                    JsonNode labels = pod.path("metadata").path("labels");
                    boolean all = true;
                    for (var e : svc.path("spec").path("selector").properties()) {
                        all &= labels.path(e.getKey()).asText().equals(e.getValue().asText());
                    }
                    matched |= all;
                }
            }
            assertTrue(matched, "service " + svc.path("metadata").path("name") + " selects no pod");
        }
    }

    @Test
    void devRunsWithoutGpusAndGpuAsksForEightPerEnginePod() throws IOException {
        String dev = YAML.writeValueAsString(build(ROOT.resolve("overlays/dev")));
        assertFalse(dev.contains("nvidia.com/gpu\": "), "dev must not request GPUs");
        assertFalse(dev.contains("nvidia.com/gpu:"), "dev must not request GPUs");
        List<JsonNode> gpu = build(ROOT.resolve("overlays/gpu"));
        JsonNode decode = find(gpu, "LeaderWorkerSet", "decode-service");
        assertEquals(4, decode.path("spec").path("leaderWorkerTemplate").path("size").asInt());
        for (JsonNode pod : podSpecs(decode)) {
            assertEquals("8", pod.path("spec").path("containers").get(0).path("resources").path("limits").path("nvidia.com/gpu").asText());
        }
        assertEquals("8", find(gpu, "Deployment", "prefill-service").path("spec").path("template").path("spec").path("containers").get(0)
                .path("resources").path("limits").path("nvidia.com/gpu").asText());
    }

    @Test
    void onlyTheGatewayIsExposedAndSseIsUnbuffered() throws IOException {
        List<JsonNode> objects = build(ROOT.resolve("overlays/gpu"));
        JsonNode deny = find(objects, "NetworkPolicy", "default-deny-ingress");
        assertTrue(deny != null && deny.path("spec").path("podSelector").isEmpty(), "a default-deny ingress policy for every pod");
        List<JsonNode> ingresses = objects.stream().filter(o -> o.path("kind").asText().equals("Ingress")).toList();
        assertEquals(1, ingresses.size());
        JsonNode ingress = ingresses.getFirst();
        // only the public API and the liveness probe: no /q/metrics, detailed /q/health or /admin from outside
        for (JsonNode path : ingress.path("spec").path("rules").get(0).path("http").path("paths")) {
            assertEquals("gateway", path.path("backend").path("service").path("name").asText());
            String p = path.path("path").asText();
            String type = path.path("pathType").asText();
            assertTrue(List.of("/v1", "/chat", "/completions", "/models", "/user").contains(p) && type.equals("Prefix")
                    || p.equals("/q/health/live") && type.equals("Exact"), "the Ingress routes " + type + " " + p);
        }
        assertEquals("off", ingress.path("metadata").path("annotations").path("nginx.ingress.kubernetes.io/proxy-buffering").asText());
        JsonNode billingUser = find(objects, "KafkaUser", "billing");
        JsonNode gatewayUser = find(objects, "KafkaUser", "gateway");
        assertTrue(billingUser.toString().contains("\"Read\""), "billing reads usage");
        assertFalse(gatewayUser.toString().contains("\"Read\""), "the gateway may not read usage");
    }
}
