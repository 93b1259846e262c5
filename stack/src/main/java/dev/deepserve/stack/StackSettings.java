package dev.deepserve.stack;

import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Where the local stack keeps its data, which ports it uses and which address everything listens on. Every value can
 * be changed by an env var (DEEPSERVE_HOME, DEEPSERVE_GATEWAY_PORT, DEEPSERVE_BIND, ...); the defaults keep everything
 * under ./.deepserve and reachable from this machine only: {@code bind} is 127.0.0.1 unless DEEPSERVE_BIND names
 * another IPv4 address (0.0.0.0 for all); {@code host} is the address the stack's parts use to reach each other.
 */
public record StackSettings(Path projectDir, Path home, Path modelDir, int pgPort, int kafkaPort, int kafkaControllerPort,
                            Map<String, Integer> servicePorts, String host, String bind) {

    /** The services in start order; the gateway last, since its readiness checks the others. */
    public static final List<String> SERVICES = List.of("tokenizer-service", "prefill-service", "decode-service", "billing", "gateway");

    public static StackSettings fromEnvironment(Path projectDir, Map<String, String> env) {
        Path home = Path.of(env.getOrDefault("DEEPSERVE_HOME", projectDir.resolve(".deepserve").toString())).toAbsolutePath();
        Path model = Path.of(env.getOrDefault("DEEPSERVE_MODEL_DIR", home.resolve("model").toString())).toAbsolutePath();
        Map<String, Integer> ports = new LinkedHashMap<>();
        ports.put("tokenizer-service", port(env, "DEEPSERVE_TOKENIZER_PORT", 8001));
        ports.put("prefill-service", port(env, "DEEPSERVE_PREFILL_PORT", 8002));
        ports.put("decode-service", port(env, "DEEPSERVE_DECODE_PORT", 8003));
        ports.put("billing", port(env, "DEEPSERVE_BILLING_PORT", 8004));
        ports.put("gateway", port(env, "DEEPSERVE_GATEWAY_PORT", 8000));
        return new StackSettings(projectDir.toAbsolutePath(), home, model,
                port(env, "DEEPSERVE_PG_PORT", 5433),
                port(env, "DEEPSERVE_KAFKA_PORT", 9092),
                port(env, "DEEPSERVE_KAFKA_CONTROLLER_PORT", 9093),
                ports, host(bind(env)), bind(env));
    }

    private static String bind(Map<String, String> env) {
        String value = env.getOrDefault("DEEPSERVE_BIND", "127.0.0.1").strip();
        if (!value.matches("(25[0-5]|2[0-4]\\d|1?\\d?\\d)(\\.(25[0-5]|2[0-4]\\d|1?\\d?\\d)){3}")) {
            throw new CliException("DEEPSERVE_BIND=" + value + " is not an IPv4 address (127.0.0.1, the default, keeps the stack on this machine; 0.0.0.0 opens it to every network)");
        }
        return value;
    }

    /** Where the parts reach each other: the bound address, or loopback when bound to every address. */
    private static String host(String bind) {
        return bind.equals("0.0.0.0") ? "127.0.0.1" : bind;
    }

    private static int port(Map<String, String> env, String name, int fallback) {
        String value = env.get(name);
        if (value == null || value.isBlank()) {
            return fallback;
        }
        try {
            int port = Integer.parseInt(value.trim());
            if (port < 1 || port > 65535) {
                throw new NumberFormatException();
            }
            return port;
        } catch (NumberFormatException e) {
            throw new CliException(name + "=" + value + " is not a TCP port (1-65535)");
        }
    }

    public String url(String service) {
        return "http://" + host + ":" + servicePorts.get(service);
    }

    /** The Quarkus jar a service module builds (its quarkus-app directory holds the rest). */
    public Path serviceJar(String service) {
        return projectDir.resolve(service).resolve("target/quarkus-app/quarkus-run.jar");
    }

    public Path logs() {
        return home.resolve("logs");
    }

    public Path pidFile() {
        return home.resolve("stack.pid");
    }

    public Path stateFile() {
        return home.resolve("stack.json");
    }

    public Path secrets() {
        return home.resolve("secrets");
    }
}
