package dev.deepserve.stack;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * One service JVM of the stack: started from its Quarkus jar (or, for the Kafka broker, a main class of the
 * stack's own jar), output to its own log file, and started again with the same command when it exits on its own
 * (the supervisor decides when).
 */
final class ServiceProcess {

    private static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();

    final String name;
    final String url;
    final Path log;
    private volatile Process process;
    private List<String> program;
    private List<String> jvmOptions;
    private Map<String, String> env;
    private java.util.function.Function<ServiceProcess, Readiness> probe = s -> probe(s.url);
    private long startedAt;
    /** Restarts so far, the last unexpected exit ("code N at TIME"), and when the next restart is due (0: none). */
    int restarts;
    String lastExit;
    long restartDueAt;
    int backoffStep;

    ServiceProcess(String name, String url, Path log) {
        this.name = name;
        this.url = url;
        this.log = log;
    }

    void start(Path jar, List<String> jvmOptions, Map<String, String> env) throws IOException {
        start(List.of("-jar", jar.toString()), jvmOptions, env);
    }

    /** Starts {@code java <jvmOptions> <program>}, e.g. {@code -cp <jar> <main class> <args>}. */
    void start(List<String> program, List<String> jvmOptions, Map<String, String> env) throws IOException {
        this.program = List.copyOf(program);
        this.jvmOptions = List.copyOf(jvmOptions);
        this.env = Map.copyOf(env);
        launch();
    }

    /** How readiness is read when it is not the service's {@code /q/health/ready}. */
    ServiceProcess readinessBy(java.util.function.Function<ServiceProcess, Readiness> probe) {
        this.probe = probe;
        return this;
    }

    /** Starts it again with the command it first had. */
    void restart() throws IOException {
        restarts++;
        restartDueAt = 0;
        launch();
    }

    /** How long it has run since its last start. */
    Duration uptime() {
        return Duration.ofNanos(System.nanoTime() - startedAt);
    }

    /** The exit code of a process that has exited, or -1. */
    int exitCode() {
        return process != null && !process.isAlive() ? process.exitValue() : -1;
    }

    private void launch() throws IOException {
        List<String> command = new ArrayList<>();
        command.add(ProcessHandle.current().info().command().orElse("java"));
        command.addAll(jvmOptions);
        command.addAll(program);
        ProcessBuilder builder = new ProcessBuilder(command)
                .redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()))
                .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")));
        builder.environment().putAll(env);
        process = builder.start();
        startedAt = System.nanoTime();
    }

    long pid() {
        return process.pid();
    }

    boolean alive() {
        return process != null && process.isAlive();
    }

    /** HTTP status of /q/health/ready and its body, or -1 and the connection error. */
    Readiness readiness() {
        return probe.apply(this);
    }

    /**
     * A process that says it is ready by writing its pid to {@code readyFile}: ready while that file names {@code pid}
     * (a file left by an earlier process of the same service names another).
     */
    static Readiness byReadyFile(Path readyFile, long pid) {
        try {
            String named = Files.readString(readyFile).strip();
            if (named.equals(Long.toString(pid)) && ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
                return new Readiness(200, "serving");
            }
            return new Readiness(-1, "starting");
        } catch (IOException e) {
            return new Readiness(-1, "starting");
        }
    }

    static Readiness probe(String baseUrl) {
        try {
            HttpResponse<String> response = HTTP.send(HttpRequest.newBuilder(URI.create(baseUrl + "/q/health/ready"))
                    .timeout(Duration.ofSeconds(5)).GET().build(), HttpResponse.BodyHandlers.ofString());
            return new Readiness(response.statusCode(), response.body());
        } catch (java.net.ConnectException e) {
            return new Readiness(-1, "starting (not listening yet)");
        } catch (java.net.http.HttpTimeoutException e) {
            return new Readiness(-1, "busy (its readiness check did not answer within 5 s)");
        } catch (IOException e) {
            return new Readiness(-1, "unreachable: " + (e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage()));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return new Readiness(-1, "interrupted");
        }
    }

    /** Whether this JVM records its AOT cache, which it writes as it exits. */
    boolean recordsAotCache() {
        return jvmOptions != null && AotCache.records(jvmOptions);
    }

    /** SIGTERM, then SIGKILL if it has not exited after {@code grace}. */
    void stop(Duration grace) {
        if (process == null || !process.isAlive()) {
            return;
        }
        process.descendants().forEach(ProcessHandle::destroy);
        process.destroy();
        try {
            if (!process.waitFor(grace.toMillis(), TimeUnit.MILLISECONDS)) {
                process.destroyForcibly();
                process.waitFor(5, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
        }
    }

    /** The last lines of the service's log, to show why it failed. */
    String tail(int lines) {
        return tail(log, lines);
    }

    static String tail(Path file, int lines) {
        try {
            List<String> all = Files.readAllLines(file);
            return String.join(System.lineSeparator(), all.subList(Math.max(0, all.size() - lines), all.size()));
        } catch (IOException e) {
            return "(no log at " + file + ")";
        }
    }

    record Readiness(int status, String body) {
        boolean ready() {
            return status == 200;
        }
    }
}
