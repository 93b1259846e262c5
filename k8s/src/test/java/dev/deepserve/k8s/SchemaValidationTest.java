package dev.deepserve.k8s;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Strict schema validation of every object the overlays build, CRDs included: each object becomes a typed constant
 * in a TypeScript file whose types are the published models of its kind (kubernetes-models for core kinds, generated
 * from the Kubernetes OpenAPI; @kubernetes-models/* for the Strimzi, CloudNativePG, KEDA and prometheus-operator CRDs,
 * generated from their CRD schemas), and the TypeScript compiler checks them: a field the kind does not have (excess
 * property), a wrong type, a missing required field or a value outside an enum is an error naming the object and
 * the line. LeaderWorkerSet has no published package; see k8s/schema/types. scripts/fetch-k8s-schemas.sh installs
 * the pinned packages (the build's initialize phase runs it); where that was skipped the test is skipped saying so.
 */
class SchemaValidationTest {

    static final Path SCHEMA = ManifestsTest.ROOT.resolve("schema");
    static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
    /** API groups whose kinds come from a CRD, and the package with their published models. */
    static final Map<String, String> CRD_PACKAGES = Map.of(
            "kafka.strimzi.io", "@kubernetes-models/strimzi-kafka-operator",
            "keda.sh", "@kubernetes-models/keda",
            "postgresql.cnpg.io", "@kubernetes-models/cloudnative-pg",
            "monitoring.coreos.com", "@kubernetes-models/prometheus-operator");

    static String node;

    @BeforeAll
    static void findTools() {
        KustomizeBuildTest.findKubectl();
        boolean installed = Files.isRegularFile(SCHEMA.resolve("node_modules/typescript/bin/tsc"));
        for (String dir : System.getenv().getOrDefault("PATH", "").split(":")) {
            if (!dir.isEmpty() && Files.isExecutable(Path.of(dir, "node"))) {
                node = Path.of(dir, "node").toString();
            }
        }
        if ("true".equals(System.getenv("CI")) && (!installed || node == null)) {
            fail("CI must validate k8s/ against the schemas: the build's initialize phase runs scripts/fetch-k8s-schemas.sh");
        }
        assumeTrue(installed && node != null, "no schemas installed: run scripts/fetch-k8s-schemas.sh (./mvnw verify does; needs node/npm)");
    }

    /** The module and type that describe one kind. */
    record Typed(String module, String type) {
    }

    static Typed typeOf(String apiVersion, String kind) {
        int slash = apiVersion.indexOf('/');
        String group = slash < 0 ? "" : apiVersion.substring(0, slash);
        String version = apiVersion.substring(slash + 1);
        Typed t;
        if (group.equals("leaderworkerset.x-k8s.io") && version.equals("v1") && kind.equals("LeaderWorkerSet")) {
            return new Typed("../types/leaderworkerset.js", "ILeaderWorkerSet");
        } else if (CRD_PACKAGES.containsKey(group)) {
            t = new Typed(CRD_PACKAGES.get(group) + "/" + group + "/" + version + "/" + kind, "I" + kind);
        } else {
            t = new Typed("kubernetes-models/" + (group.isEmpty() ? "" : group + "/") + version + "/" + kind, "I" + kind);
        }
        if (!Files.isRegularFile(SCHEMA.resolve("node_modules").resolve(t.module() + ".d.ts"))) {
            fail("no published schema for " + apiVersion + " " + kind + " (looked for " + t.module() + ".d.ts): add its package to k8s/schema");
        }
        return t;
    }

    /** Type-checks the objects; returns one line per problem: {@code Kind/name: the offending line: the compiler's message}. */
    static List<String> check(String name, List<JsonNode> objects) throws Exception {
        Path build = Files.createDirectories(SCHEMA.resolve("build"));
        StringBuilder ts = new StringBuilder();
        List<String> owners = new ArrayList<>();
        List<Integer> starts = new ArrayList<>();
        for (int i = 0; i < objects.size(); i++) {
            JsonNode o = objects.get(i);
            Typed t = typeOf(o.path("apiVersion").asText(), o.path("kind").asText());
            ts.append("import type { ").append(t.type()).append(" as T").append(i).append(" } from \"").append(t.module()).append("\";\n");
        }
        int line = (int) ts.chars().filter(c -> c == '\n').count() + 1;
        for (int i = 0; i < objects.size(); i++) {
            JsonNode o = objects.get(i);
            String body = "export const o" + i + ": T" + i + " = " + JSON.writeValueAsString(o) + ";\n";
            owners.add(o.path("kind").asText() + "/" + o.path("metadata").path("name").asText());
            starts.add(line);
            ts.append(body);
            line += (int) body.chars().filter(c -> c == '\n').count();
        }
        Path file = build.resolve(name + ".ts");
        Files.writeString(file, ts);
        Path config = build.resolve("tsconfig-" + name + ".json");
        Files.writeString(config, """
                {"compilerOptions": {"strict": true, "noEmit": true, "module": "nodenext", "moduleResolution": "nodenext",
                  "skipLibCheck": true, "types": []}, "files": ["%s.ts"]}
                """.formatted(name));
        Process p = new ProcessBuilder(node, SCHEMA.resolve("node_modules/typescript/bin/tsc").toString(), "-p", config.toString(), "--pretty", "false")
                .redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertTrue(p.waitFor(120, TimeUnit.SECONDS), "tsc did not finish");
        List<String> source = Files.readAllLines(file);
        List<String> problems = new ArrayList<>();
        for (String l : out.split("\n")) {
            java.util.regex.Matcher m = java.util.regex.Pattern.compile("^.*\\.ts\\((\\d+),\\d+\\): error (TS\\d+: .*)$").matcher(l);
            if (m.matches()) {
                int at = Integer.parseInt(m.group(1));
                int owner = -1;
                for (int i = 0; i < starts.size() && starts.get(i) <= at; i++) {
                    owner = i;
                }
                problems.add((owner < 0 ? "imports" : owners.get(owner)) + ": " + source.get(at - 1).strip() + ": " + m.group(2));
            } else if (!l.isBlank() && problems.isEmpty() && !l.startsWith(" ")) {
                problems.add("tsc: " + l);
            }
        }
        if (p.exitValue() != 0 && problems.isEmpty()) {
            problems.add("tsc failed: " + out);
        }
        return problems;
    }

    @Test
    void everyObjectOfEveryOverlayIsValidAgainstThePublishedSchemas() throws Exception {
        for (String overlay : List.of("dev", "gpu")) {
            List<JsonNode> objects = KustomizeBuildTest.build("overlays/" + overlay);
            List<String> problems = check(overlay, objects);
            assertEquals(List.of(), problems, "overlays/" + overlay + " has objects the schemas refuse:\n" + String.join("\n", problems));
        }
    }

    @Test
    void aTypoedFieldAWrongTypeOrAMissingRequiredFieldIsRefusedNamingTheObject() throws Exception {
        List<JsonNode> objects = KustomizeBuildTest.build("overlays/gpu");
        for (JsonNode o : objects) {
            String kind = o.path("kind").asText();
            String name = o.path("metadata").path("name").asText();
            ObjectNode spec = o.path("spec") instanceof ObjectNode n ? n : null;
            switch (kind) {
                case "Deployment" -> {
                    if (name.equals("gateway")) {
                        ((ObjectNode) o.path("spec").path("template").path("spec").path("containers").get(0)).put("imagePullPolcy", "Always");
                    } else if (name.equals("billing")) {
                        spec.put("replicas", "two");
                    }
                }
                case "ScaledObject" -> spec.put("minReplicaCont", 0);
                case "KafkaTopic" -> spec.put("partitons", 12);
                case "Cluster" -> spec.put("instance", 3);
                case "ServiceMonitor" -> ((ObjectNode) spec.path("endpoints").get(0)).put("intervall", "15s");
                case "LeaderWorkerSet" -> ((ObjectNode) spec.path("leaderWorkerTemplate")).put("sise", 4);
                case "PodDisruptionBudget" -> spec.put("minAvailable", true);
                case "Service" -> {
                    if (name.equals("gateway")) {
                        ((ObjectNode) spec.path("ports").get(0)).remove("port");
                    }
                }
                default -> {
                }
            }
        }
        String problems = String.join("\n", check("mutated", objects));
        for (String expected : List.of("Deployment/gateway: \"imagePullPolcy\"", "Deployment/billing: \"replicas\" : \"two\"",
                "ScaledObject/gateway: \"minReplicaCont\"", "KafkaTopic/usage: \"partitons\"", "Cluster/deepserve-pg: \"instance\"",
                "ServiceMonitor/billing: \"intervall\"", "LeaderWorkerSet/decode-service: \"sise\"", "PodDisruptionBudget/gateway: \"minAvailable\" : true",
                "Service/gateway", "'\"port\"' is missing")) {
            assertTrue(problems.contains(expected), "expected a problem mentioning " + expected + " in:\n" + problems);
        }
    }
}
