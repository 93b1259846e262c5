package dev.deepserve.stack;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.embedded.EmbeddedKafkaBroker;
import dev.deepserve.embedded.EmbeddedPostgresServer;
import dev.deepserve.internal.InternalToken;
import dev.deepserve.internal.OwnerOnly;
import dev.deepserve.model.engine.ops.TransparentHugePages;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.errors.TopicExistsException;

import java.io.IOException;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.ServerSocket;
import java.nio.file.AccessDeniedException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

/**
 * The local stack: embedded PostgreSQL, a Kafka broker and the five service JVMs, supervised by this process (the
 * broker and the services as child processes, each restarted with backoff when it dies). Stopping this process (Ctrl-C, SIGTERM, {@code ./deepserve down}) stops everything it started.
 */
final class Stack {

    private static final ObjectMapper JSON = new ObjectMapper();
    /** A service's time to stop before it is killed: the gateway's shutdown grace (10 s) and its usage writes (< 15 s). */
    private static final Duration STOP_GRACE = Duration.ofSeconds(30);
    /** A service recording its AOT cache writes it as it exits: tens of seconds on a busy small machine. */
    private static final Duration RECORDING_STOP_GRACE = Duration.ofMinutes(3);

    private final StackSettings settings;
    private final PrintStream out;
    private final List<ServiceProcess> services = new ArrayList<>();
    private final CountDownLatch stopped = new CountDownLatch(1);
    private volatile boolean stopping;
    private EmbeddedPostgresServer postgres;
    private ServiceProcess kafka;
    private final AotCache aot;

    Stack(StackSettings settings, PrintStream out) {
        this.settings = settings;
        this.out = out;
        this.aot = new AotCache(settings.home().resolve("aot"), !"false".equalsIgnoreCase(System.getenv("DEEPSERVE_AOT")));
    }

    /**
     * Starts everything, prints the connection lines, and blocks until asked to stop. {@code revealKeys} is false
     * for the background supervisor, whose output is a log file: keys never go into logs.
     */
    void runForeground(Duration startTimeout, boolean revealKeys) {
        prepareHome();
        Optional<Long> running = runningSupervisor(settings);
        if (running.isPresent()) {
            throw new CliException("the stack is already running (pid " + running.get() + "); see ./deepserve status, or stop it with ./deepserve down");
        }
        checkJars();
        checkPortsFree();
        writePid();
        Thread hook = new Thread(this::shutdown, "deepserve-stop");
        Runtime.getRuntime().addShutdownHook(hook);
        try {
            start(startTimeout);
        } catch (RuntimeException e) {
            shutdown();
            throw e;
        }
        printConnectionLines(out, settings, revealKeys);
        out.println("stack is up; Ctrl-C stops it (logs: " + settings.logs() + ")");
        out.flush();
        watchServices();
    }

    private void start(Duration startTimeout) {
        out.println("data: " + settings.home());
        try {
            // stopped by this process's own shutdown, after the services (see shutdown())
            postgres = EmbeddedPostgresServer.start(settings.home().resolve("pg/data"), settings.home().resolve("pg/bin"), settings.pgPort(), false,
                    settings.bind());
        } catch (IOException | RuntimeException e) {
            throw new CliException("embedded PostgreSQL did not start: " + oneLine(e));
        }
        out.println("postgres: 127.0.0.1:" + postgres.port() + " (embedded, data in " + settings.home().resolve("pg/data") + ")");
        startKafka(startTimeout);
        out.println("kafka: " + bootstrap() + " (KRaft broker, pid " + kafka.pid() + ", data in " + settings.home().resolve("kafka") + ")");

        ModelBootstrap.ensure(settings, out);
        String adminKey = Secrets.adminKey(settings.secrets());
        // a new service credential at every start: a token that leaked dies with the stack that used it
        String internalToken = Secrets.internalToken(settings.secrets());

        Map<String, String> env = new HashMap<>();
        env.put("DEEPSERVE_PG_HOST", settings.host());
        // every service listens where the stack does (loopback unless DEEPSERVE_BIND says otherwise)
        env.put("QUARKUS_HTTP_HOST", settings.bind());
        env.put("DEEPSERVE_PG_PORT", Integer.toString(postgres.port()));
        env.put("DEEPSERVE_PG_DATABASE", EmbeddedPostgresServer.DATABASE);
        env.put("DEEPSERVE_PG_USER", EmbeddedPostgresServer.USER);
        env.put("DEEPSERVE_PG_PASSWORD", postgres.password());
        env.put("DEEPSERVE_KAFKA_BOOTSTRAP", bootstrap());
        env.put("DEEPSERVE_MODEL_DIR", settings.modelDir().toString());
        env.put("DEEPSERVE_TOKENIZER_URL", settings.url("tokenizer-service"));
        env.put("DEEPSERVE_PREFILL_URL", settings.url("prefill-service"));
        env.put("DEEPSERVE_DECODE_URL", settings.url("decode-service"));
        env.put("DEEPSERVE_BILLING_URL", settings.url("billing"));
        env.put("DEEPSERVE_ADMIN_KEY", adminKey);
        env.put(InternalToken.ENV, internalToken);
        env.put("DEEPSERVE_USAGE_JOURNAL_DIR", settings.home().resolve("usage-journal").toString());
        env.put("DEEPSERVE_ENGINE_PREFIX_CACHE_DIR", settings.home().resolve("kv-cache").toString()); // the prefix cache's disk tier
        // a stopping gateway lets the requests it serves finish for this long, then writes their usage: within STOP_GRACE
        if (System.getenv("DEEPSERVE_SHUTDOWN_GRACE") == null) {
            env.put("DEEPSERVE_SHUTDOWN_GRACE", "10s");
        }

        boolean recordingSaid = false;
        for (String name : StackSettings.SERVICES) {
            ServiceProcess service = new ServiceProcess(name, settings.url(name), settings.logs().resolve(name + ".log"));
            Map<String, String> serviceEnv = new HashMap<>(env);
            serviceEnv.put("QUARKUS_HTTP_PORT", Integer.toString(settings.servicePorts().get(name)));
            if (name.equals("gateway") && "true".equalsIgnoreCase(System.getenv("DEEPSERVE_DISAGGREGATED"))) {
                // prefill/decode disaggregation: the gateway's requests go to prefill, which hands the KV to decode
                serviceEnv.put("DEEPSERVE_DECODE_URL", settings.url("prefill-service"));
            }
            try {
                List<String> options = new ArrayList<>(jvmOptions(name));
                options.addAll(aot.options(name, settings.serviceJar(name), options));
                if (!recordingSaid && AotCache.records(options)) {
                    // measured (bench/run coldstart): recording made up -d 1.8x slower, later starts 0.64x
                    out.println("aot: this start records each service's start-up cache (slower this once, faster later)");
                    recordingSaid = true;
                }
                // a stop that came while starting stopped what had started: start nothing more
                synchronized (this) {
                    if (stopping) {
                        throw new CliException("stopped while starting");
                    }
                    service.start(settings.serviceJar(name), options, serviceEnv);
                    services.add(service);
                }
            } catch (IOException e) {
                throw new CliException("could not start " + name + ": " + oneLine(e));
            }
        }
        awaitReady(startTimeout);
        Secrets.ensureUserKey(settings, adminKey, out);
        writeState();
    }

    private String bootstrap() {
        return settings.host() + ":" + settings.kafkaPort();
    }

    /**
     * The broker in a JVM of its own (a main class of this jar), supervised like the services: a broker that dies is
     * restarted on its data, and the stack stays up. Ready once it has written its pid to {@code kafka.ready}.
     */
    private void startKafka(Duration timeout) {
        Path data = settings.home().resolve("kafka");
        Path ready = settings.home().resolve("kafka.ready");
        kafka = new ServiceProcess("kafka", "kafka://" + bootstrap(), settings.logs().resolve("kafka.log"))
                .readinessBy(s -> ServiceProcess.byReadyFile(ready, s.pid()));
        List<String> program = List.of("-cp", System.getProperty("java.class.path"), EmbeddedKafkaBroker.class.getName(), data.toString(),
                Integer.toString(settings.kafkaPort()), Integer.toString(settings.kafkaControllerPort()), settings.bind(), settings.host(), ready.toString());
        try {
            kafka.start(program, List.of("-Xmx512m", "-XX:+UseSerialGC"), Map.of());
        } catch (IOException e) {
            throw new CliException("could not start the Kafka broker: " + oneLine(e));
        }
        services.add(kafka);
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!kafka.readiness().ready()) {
            if (!kafka.alive()) {
                throw new CliException("the Kafka broker exited during start; last lines of " + kafka.log + ":" + System.lineSeparator() + kafka.tail(15));
            }
            if (System.nanoTime() > deadline) {
                throw new CliException("the Kafka broker was not serving after " + timeout.toSeconds() + "s (log: " + kafka.log + ")");
            }
            sleep(Duration.ofMillis(200));
        }
        createTopics(bootstrap());
    }

    private List<String> jvmOptions(String service) {
        List<String> options = new ArrayList<>();
        boolean engine = service.equals("prefill-service") || service.equals("decode-service");
        options.add(engine ? "-Xmx4g" : "-Xmx512m");
        options.add("-XX:+UseSerialGC");
        if (TransparentHugePages.offered()) {
            // the heap in 2 MiB pages: a start touches a few hundred MB of new heap, and where a page fault costs
            // ~15 us (this project's 2-core microVMs) a gateway's start took 13,000 fewer faults, 0.1-0.25 s
            options.add("-XX:+UseTransparentHugePages");
        }
        // the module options and compressed oops match the container images' (Images.jvmOptions): an AOT cache is
        // refused whole when they differ, so a stack run can train the images' caches; only the engines use the Vector
        // API, and their heaps may pass 32 GB in a container, where the JVM turns compressed oops off by itself
        if (engine) {
            options.add("--add-modules=jdk.incubator.vector");
            options.add("-XX:-UseCompressedOops");
        }
        options.add("--enable-native-access=ALL-UNNAMED");
        String extra = System.getenv("DEEPSERVE_JAVA_OPTS");
        if (extra != null && !extra.isBlank()) {
            options.addAll(List.of(extra.trim().split("\\s+")));
        }
        return options;
    }

    private void awaitReady(Duration timeout) {
        long deadline = System.nanoTime() + timeout.toNanos();
        long start = System.nanoTime();
        Map<String, ServiceProcess.Readiness> last = new LinkedHashMap<>();
        List<ServiceProcess> pending = new ArrayList<>(services);
        out.print("starting services");
        out.flush();
        long nextReport = start + REPORT_EVERY.toNanos();
        while (!pending.isEmpty()) {
            for (ServiceProcess service : List.copyOf(pending)) {
                if (!service.alive()) {
                    out.println();
                    throw new CliException(service.name + " exited during start; last lines of " + service.log + ":"
                            + System.lineSeparator() + service.tail(15));
                }
                ServiceProcess.Readiness readiness = service.readiness();
                last.put(service.name, readiness);
                if (readiness.ready()) {
                    pending.remove(service);
                    out.printf("%n  ready: %-18s %5.1fs", service.name, (System.nanoTime() - start) / 1e9);
                    out.flush();
                }
            }
            if (pending.isEmpty()) {
                break;
            }
            if (System.nanoTime() > nextReport) {
                // what each service still waits for, in its own words (its readiness checks): a person sees progress
                nextReport = System.nanoTime() + REPORT_EVERY.toNanos();
                StringBuilder waiting = new StringBuilder();
                for (ServiceProcess service : pending) {
                    waiting.append(waiting.isEmpty() ? "" : "; ").append(service.name).append(": ").append(HealthSummary.reasons(last.get(service.name)));
                }
                out.printf("%n  waiting %4.0fs  %s", (System.nanoTime() - start) / 1e9, waiting);
                out.flush();
            }
            if (System.nanoTime() > deadline) {
                out.println();
                StringBuilder why = new StringBuilder("not ready after " + timeout.toSeconds() + "s:");
                for (ServiceProcess service : pending) {
                    why.append(System.lineSeparator()).append("  ").append(service.name).append(": ")
                            .append(HealthSummary.reasons(last.get(service.name))).append(" (log: ").append(service.log).append(')');
                }
                throw new CliException(why.toString());
            }
            sleep(Duration.ofMillis(500));
        }
        out.println();
    }

    /** How often the start says what the services not yet ready are waiting for. */
    static final Duration REPORT_EVERY = Duration.ofSeconds(5);

    /** Restarts wait 1 s, 2 s, 4 s, ... up to this; a service that then stays up this long starts over at 1 s. */
    static final Duration MAX_RESTART_BACKOFF = Duration.ofSeconds(30);
    static final Duration STABLE_AFTER = Duration.ofSeconds(60);

    /**
     * Blocks until shutdown, supervising like a process manager: a service that exits on its own is restarted with
     * exponential backoff (PostgreSQL, Kafka and the other services stay up), and the state file records its restarts
     * and last exit for {@code ./deepserve status}. The stack stops only when asked.
     */
    private void watchServices() {
        try {
            while (!stopped.await(1, TimeUnit.SECONDS)) {
                boolean changed = false;
                for (ServiceProcess service : services) {
                    if (stopping) {
                        break;
                    }
                    changed |= supervise(service);
                }
                if (changed) {
                    try {
                        writeState();
                    } catch (CliException e) {
                        out.println("deepserve: " + e.getMessage());
                    }
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /**
     * One look at one service; true when something about it changed. Synchronized with {@link #shutdown}, so a
     * service is never started again after shutdown has stopped it.
     */
    private synchronized boolean supervise(ServiceProcess service) {
        if (stopping) {
            return false;
        }
        if (service.alive()) {
            if (service.backoffStep > 0 && service.uptime().compareTo(STABLE_AFTER) > 0) {
                service.backoffStep = 0;
            }
            return false;
        }
        long now = System.nanoTime();
        if (service.restartDueAt == 0) {
            long delay = Math.min(MAX_RESTART_BACKOFF.toMillis(), 1000L << Math.min(service.backoffStep, 10));
            service.backoffStep++;
            service.restartDueAt = now + Duration.ofMillis(delay).toNanos();
            service.lastExit = "code " + service.exitCode() + " at " + java.time.Instant.now().truncatedTo(java.time.temporal.ChronoUnit.SECONDS);
            out.println("deepserve: " + service.name + " exited (" + service.lastExit + "); restarting it in " + delay / 1000.0
                    + " s. Last lines of " + service.log + ":");
            out.println(service.tail(15));
            out.flush();
            return true;
        }
        if (now - service.restartDueAt < 0) {
            return false;
        }
        try {
            service.restart();
            out.println("deepserve: " + service.name + " restarted (restart " + service.restarts + ", pid " + service.pid() + ")");
        } catch (IOException e) {
            service.restartDueAt = 0;
            out.println("deepserve: could not restart " + service.name + ": " + oneLine(e));
        }
        out.flush();
        return true;
    }

    /**
     * Stops the services first, in the reverse of their start (the gateway returns its balance leases and writes what
     * its usage journal holds as it stops, both into PostgreSQL), the Kafka broker last of them, then PostgreSQL.
     */
    private synchronized void shutdown() {
        if (stopped.getCount() == 0) {
            return;
        }
        stopping = true;
        for (int i = services.size() - 1; i >= 0; i--) {
            services.get(i).stop(services.get(i).recordsAotCache() ? RECORDING_STOP_GRACE : STOP_GRACE);
        }
        if (postgres != null) {
            try {
                postgres.close();
            } catch (RuntimeException e) {
                out.println("deepserve: PostgreSQL did not stop cleanly: " + oneLine(e));
            }
        }
        try {
            Files.deleteIfExists(settings.stateFile());
            Files.deleteIfExists(settings.pidFile());
        } catch (IOException ignored) {
            // best effort: a stale pid file is detected by liveness on the next start
        }
        stopped.countDown();
    }

    private void createTopics(String bootstrap) {
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", bootstrap))) {
            admin.createTopics(List.of(new NewTopic("usage", 4, (short) 1))).all().get(60, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof TopicExistsException)) {
                throw new CliException("could not create the Kafka topic 'usage': " + oneLine(e.getCause()));
            }
        } catch (Exception e) {
            throw new CliException("could not create the Kafka topic 'usage': " + oneLine(e));
        }
    }

    private void prepareHome() {
        try {
            // the data directory holds keys, usage and logs: owner-only from the moment each directory exists (a
            // DEEPSERVE_HOME the operator made is left as it is; what the stack keeps in it is narrowed)
            if (!Files.exists(settings.home())) {
                OwnerOnly.directory(settings.home());
            }
            OwnerOnly.directory(settings.logs());
            OwnerOnly.directory(settings.secrets());
            OwnerOnly.directory(settings.home().resolve("usage-journal"));
            Path probe = settings.home().resolve(".write-test");
            Files.writeString(probe, "ok");
            Files.delete(probe);
        } catch (AccessDeniedException e) {
            throw new CliException("data directory " + settings.home() + " is not writable (set DEEPSERVE_HOME to a writable directory)");
        } catch (IOException e) {
            throw new CliException("data directory " + settings.home() + " is not usable: " + oneLine(e) + " (set DEEPSERVE_HOME)");
        }
    }

    private void checkJars() {
        for (String name : StackSettings.SERVICES) {
            if (!Files.isRegularFile(settings.serviceJar(name))) {
                throw new CliException(name + " is not built (" + settings.serviceJar(name) + " missing); run ./mvnw -B install -DskipTests, or just ./deepserve up");
            }
        }
    }

    private void checkPortsFree() {
        Map<String, Integer> ports = new LinkedHashMap<>();
        settings.servicePorts().forEach(ports::put);
        ports.put("postgres (DEEPSERVE_PG_PORT)", settings.pgPort());
        ports.put("kafka (DEEPSERVE_KAFKA_PORT)", settings.kafkaPort());
        ports.put("kafka controller (DEEPSERVE_KAFKA_CONTROLLER_PORT)", settings.kafkaControllerPort());
        ports.forEach((what, port) -> {
            try (ServerSocket socket = new ServerSocket()) {
                socket.setReuseAddress(true);
                socket.bind(new InetSocketAddress("127.0.0.1", port));
            } catch (IOException e) {
                String hint = what.contains("(") ? what : what + " (DEEPSERVE_" + envName(what) + "_PORT)";
                throw new CliException("port " + port + " for " + hint + " is in use; free it or choose another port with that env var");
            }
        });
    }

    private static String envName(String service) {
        return service.replace("-service", "").toUpperCase();
    }

    private void writePid() {
        try {
            Files.writeString(settings.pidFile(), Long.toString(ProcessHandle.current().pid()));
        } catch (IOException e) {
            throw new CliException("cannot write " + settings.pidFile() + ": " + oneLine(e));
        }
    }

    private void writeState() {
        ObjectNode state = JSON.createObjectNode();
        state.put("pid", ProcessHandle.current().pid());
        state.put("postgres", "127.0.0.1:" + postgres.port());
        state.put("kafka", bootstrap());
        state.put("model_dir", settings.modelDir().toString());
        ObjectNode svc = state.putObject("services");
        for (ServiceProcess s : services) {
            ObjectNode one = svc.putObject(s.name).put("pid", s.pid()).put("url", s.url).put("log", s.log.toString()).put("restarts", s.restarts);
            if (s.lastExit != null) {
                one.put("last_exit", s.lastExit);
            }
        }
        try {
            Path tmp = settings.stateFile().resolveSibling("stack.json.tmp");
            Files.writeString(tmp, JSON.writerWithDefaultPrettyPrinter().writeValueAsString(state));
            Files.move(tmp, settings.stateFile(), java.nio.file.StandardCopyOption.REPLACE_EXISTING, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            throw new CliException("cannot write " + settings.stateFile() + ": " + oneLine(e));
        }
    }

    /** The lines DESIGN.md promises, each on its own line; with {@code reveal} false the keys are shortened. */
    static void printConnectionLines(PrintStream out, StackSettings settings, boolean reveal) {
        out.println("gateway: " + settings.url("gateway"));
        out.println("console: " + settings.url("billing") + "/console/");
        Optional<String> apiKey = Secrets.userKey(settings.secrets());
        out.println("api-key: " + apiKey.map(k -> reveal ? k : masked(k, settings.secrets().resolve("api-key")))
                .orElse("(none: the stack could not create one; see the billing log)"));
        String admin = Secrets.adminKey(settings.secrets());
        out.println("admin-key: " + (reveal ? admin : masked(admin, settings.secrets().resolve("admin-key"))));
        out.flush();
    }

    private static String masked(String key, Path file) {
        return key.substring(0, Math.min(8, key.length())) + "… (in " + file + ")";
    }

    /** The pid of a live supervisor recorded in the pid file, if any. */
    static Optional<Long> runningSupervisor(StackSettings settings) {
        try {
            long pid = Long.parseLong(Files.readString(settings.pidFile()).trim());
            // a pid file older than a reboot may name some other process now: only a stack launcher counts
            return ProcessHandle.of(pid).filter(ProcessHandle::isAlive)
                    .filter(h -> h.info().commandLine().map(c -> c.contains("deepserve-stack") || c.contains(Cli.class.getName())).orElse(true))
                    .map(ProcessHandle::pid);
        } catch (IOException | NumberFormatException e) {
            return Optional.empty();
        }
    }

    static String oneLine(Throwable e) {
        Throwable t = e;
        String message = t.getMessage();
        while ((message == null || message.isBlank()) && t.getCause() != null) {
            t = t.getCause();
            message = t.getMessage();
        }
        return (message == null ? t.getClass().getSimpleName() : message).lines().findFirst().orElse("");
    }

    static void sleep(Duration d) {
        try {
            Thread.sleep(d);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new CliException("interrupted");
        }
    }

    /** The keys the stack hands out, kept under the data directory with owner-only permissions. */
    static final class Secrets {
        private static final SecureRandom RANDOM = new SecureRandom();

        static synchronized String adminKey(Path dir) {
            Path file = dir.resolve("admin-key");
            try {
                if (Files.exists(file)) {
                    return Files.readString(file).trim();
                }
                byte[] bytes = new byte[32];
                RANDOM.nextBytes(bytes);
                String key = "dsadm-" + Base64.getUrlEncoder().withoutPadding().encodeToString(bytes);
                OwnerOnly.write(file, key, false);
                return key;
            } catch (IOException e) {
                throw new CliException("cannot keep the admin key in " + file + ": " + oneLine(e));
            }
        }

        /**
         * A fresh service credential ({@link InternalToken}) for this start, kept in secrets/internal-token (owner-only)
         * so an operator can make an internal call by hand; the previous one stops working with the stack that had it.
         */
        static synchronized String internalToken(Path dir) {
            Path file = dir.resolve("internal-token");
            try {
                String token = InternalToken.generate().value();
                OwnerOnly.write(file, token, true);
                return token;
            } catch (IOException e) {
                throw new CliException("cannot keep the service credential in " + file + ": " + oneLine(e));
            }
        }

        /**
         * On the first start: an account "local" with a starter grant and an API key for it, created through billing's
         * admin API like any other; the secret is kept in secrets/api-key (owner-only) so later starts can print it.
         */
        static synchronized void ensureUserKey(StackSettings settings, String adminKey, PrintStream out) {
            Path file = settings.secrets().resolve("api-key");
            if (Files.exists(file)) {
                return;
            }
            String billing = settings.url("billing");
            try {
                HttpClient http = HttpClient.newHttpClient();
                JsonNode account = admin(http, billing + "/admin/accounts", adminKey, "{\"name\":\"local\"}");
                String id = account.get("id").asText();
                admin(http, billing + "/admin/accounts/" + id + "/grants", adminKey, "{\"amount\":\"10.00\",\"note\":\"local stack starter grant\"}");
                String secret = admin(http, billing + "/admin/accounts/" + id + "/keys", adminKey, "{\"name\":\"local\"}").get("key").asText();
                OwnerOnly.write(file, secret, false);
                out.println("created account 'local' with a 10.00 USD grant and an API key (kept in " + file + ")");
            } catch (IOException | RuntimeException e) {
                out.println("could not create the local API key: " + oneLine(e));
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }

        private static JsonNode admin(HttpClient http, String url, String adminKey, String body)
                throws IOException, InterruptedException {
            var response = http.send(HttpRequest.newBuilder(URI.create(url)).header("Authorization", "Bearer " + adminKey)
                    .header("Content-Type", "application/json").POST(HttpRequest.BodyPublishers.ofString(body)).build(),
                    HttpResponse.BodyHandlers.ofString());
            if (response.statusCode() / 100 != 2) {
                throw new IOException(url.replaceFirst("^https?://[^/]+", "") + " answered " + response.statusCode() + ": " + response.body());
            }
            return JSON.readTree(response.body());
        }

        static Optional<String> userKey(Path dir) {
            try {
                return Optional.of(Files.readString(dir.resolve("api-key")).trim());
            } catch (IOException e) {
                return Optional.empty();
            }
        }
    }
}
