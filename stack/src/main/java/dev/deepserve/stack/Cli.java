package dev.deepserve.stack;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import dev.deepserve.model.cli.ModelCli;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/** {@code ./deepserve}: the command line of the local stack. Every failure is one line on stderr and a non-zero exit. */
public final class Cli {

    private Cli() {
    }

    public static void main(String[] args) {
        int code;
        try {
            code = run(args, System.out, System.getenv());
        } catch (CliException e) {
            System.err.println("deepserve: " + e.getMessage());
            code = e.exitCode();
        } catch (RuntimeException e) {
            System.err.println("deepserve: " + Stack.oneLine(e));
            code = 1;
        }
        System.exit(code);
    }

    static int run(String[] args, PrintStream out, Map<String, String> env) {
        if (args.length == 0) {
            throw new CliException("no command given (run ./deepserve without arguments for usage)", 2);
        }
        Path project = Path.of(env.getOrDefault("DEEPSERVE_PROJECT_DIR", ".")).toAbsolutePath().normalize();
        String[] rest = Arrays.copyOfRange(args, 1, args.length);
        return switch (args[0]) {
            case "up" -> up(rest, out, StackSettings.fromEnvironment(project, env), env);
            case "supervise" -> {
                new Stack(StackSettings.fromEnvironment(project, env), out).runForeground(startTimeout(env), false);
                yield 0;
            }
            case "down" -> down(StackSettings.fromEnvironment(project, env), out);
            case "status" -> status(StackSettings.fromEnvironment(project, env), out);
            case "model" -> {
                try {
                    ModelCli.run(rest, out, System.err, env);
                } catch (ModelCli.UsageError e) {
                    throw new CliException(e.getMessage(), 2);
                }
                yield 0;
            }
            case "tokenize" -> TokenizeCli.run(rest, System.in, out, System.err);
            default -> throw new CliException("unknown command '" + args[0] + "' (run ./deepserve without arguments for usage)", 2);
        };
    }

    private static int up(String[] args, PrintStream out, StackSettings settings, Map<String, String> env) {
        boolean detach = false;
        for (String arg : args) {
            if (arg.equals("-d") || arg.equals("--detach")) {
                detach = true;
            } else {
                throw new CliException("up: unknown option '" + arg + "' (usage: ./deepserve up [-d])", 2);
            }
        }
        if (!detach) {
            new Stack(settings, out).runForeground(startTimeout(env), true);
            return 0;
        }
        return upDetached(settings, out, env);
    }

    /** Starts a supervisor in its own session, waits until it reports every service ready, and returns. */
    private static int upDetached(StackSettings settings, PrintStream out, Map<String, String> env) {
        Optional<Long> running = Stack.runningSupervisor(settings);
        if (running.isPresent()) {
            throw new CliException("the stack is already running (pid " + running.get() + "); see ./deepserve status, or stop it with ./deepserve down");
        }
        Path log = settings.logs().resolve("stack.log");
        Process supervisor;
        try {
            if (!Files.exists(settings.home())) {
                dev.deepserve.internal.OwnerOnly.directory(settings.home());
            }
            dev.deepserve.internal.OwnerOnly.directory(settings.logs());
            Files.deleteIfExists(settings.stateFile());
            List<String> command = new ArrayList<>(List.of("setsid", ProcessHandle.current().info().command().orElse("java")));
            command.addAll(ProcessHandle.current().info().arguments().map(a -> {
                List<String> jvm = new ArrayList<>(Arrays.asList(a));
                int main = jvm.indexOf(Cli.class.getName());
                int jar = jvm.indexOf("-jar");
                int end = main >= 0 ? main + 1 : jar >= 0 ? jar + 2 : jvm.size();
                return jvm.subList(0, end);
            }).orElseThrow(() -> new CliException("cannot tell how this JVM was started, so cannot start the stack in the background")));
            command.add("supervise");
            supervisor = new ProcessBuilder(command)
                    .redirectErrorStream(true)
                    .redirectOutput(ProcessBuilder.Redirect.to(log.toFile()))
                    .redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                    .start();
        } catch (IOException e) {
            throw new CliException("could not start the stack in the background: " + Stack.oneLine(e));
        }
        out.println("starting the stack in the background (log: " + log + ")");
        long deadline = System.nanoTime() + startTimeout(env).plusSeconds(120).toNanos();
        ProgressRelay progress = new ProgressRelay(log, out);
        while (!Files.exists(settings.stateFile())) {
            progress.relay();
            if (!supervisor.isAlive()) {
                throw new CliException("the stack did not start:" + System.lineSeparator() + ServiceProcess.tail(log, 20));
            }
            if (System.nanoTime() > deadline) {
                supervisor.destroy();
                throw new CliException("the stack did not become ready in time; see " + log);
            }
            Stack.sleep(Duration.ofMillis(300));
        }
        progress.relay();
        Stack.printConnectionLines(out, settings, true);
        return 0;
    }

    /**
     * The supervisor's progress lines, relayed from its log while {@code up -d} waits: what a foreground start shows
     * (each service ready, what the others still wait for, a start that records AOT caches, restarts), not its
     * connection lines, which {@code up -d} prints itself once the stack is up.
     */
    static final class ProgressRelay {

        private static final List<String> SHOWN = List.of("aot:", "starting services", "  ready:", "  waiting", "deepserve:");

        private final Path log;
        private final PrintStream out;
        private long position;
        private final java.io.ByteArrayOutputStream partial = new java.io.ByteArrayOutputStream();

        ProgressRelay(Path log, PrintStream out) {
            this.log = log;
            this.out = out;
        }

        /** Prints the progress lines the log gained since the last call (whole lines only). */
        void relay() {
            try (java.nio.channels.FileChannel ch = java.nio.channels.FileChannel.open(log, java.nio.file.StandardOpenOption.READ)) {
                java.nio.ByteBuffer buf = java.nio.ByteBuffer.allocate(8192);
                int n;
                while ((n = ch.read(buf, position)) > 0) {
                    position += n;
                    for (int i = 0; i < n; i++) {
                        byte b = buf.get(i);
                        if (b == '\n') {
                            line(partial.toString(java.nio.charset.StandardCharsets.UTF_8));
                            partial.reset();
                        } else if (partial.size() < 4096) { // a runaway line is cut, not buffered without end
                            partial.write(b);
                        }
                    }
                    buf.clear();
                }
            } catch (IOException e) {
                // no log yet, or unreadable: the start goes on, and its outcome is reported either way
            }
        }

        private void line(String line) {
            for (String prefix : SHOWN) {
                if (line.startsWith(prefix)) {
                    out.println(line);
                    return;
                }
            }
        }
    }

    private static int down(StackSettings settings, PrintStream out) {
        Optional<Long> pid = Stack.runningSupervisor(settings);
        if (pid.isEmpty()) {
            int killed = killLeftovers(settings);
            out.println(killed == 0 ? "stack: not running" : "stack: not running; stopped " + killed + " leftover service process(es)");
            return 0;
        }
        ProcessHandle handle = ProcessHandle.of(pid.get()).orElseThrow();
        boolean recording = recordingAotCaches(settings);
        if (recording) {
            out.println("stack: stopping; the services write their start-up caches on this first stop (a minute or more), later starts are faster");
        }
        // each recording service may take minutes to write its cache as it exits; a stop is otherwise seconds
        int limit = recording ? 900 : 90;
        handle.destroy();
        try {
            handle.onExit().get(limit, java.util.concurrent.TimeUnit.SECONDS);
        } catch (Exception e) {
            handle.destroyForcibly();
            killLeftovers(settings);
            out.println("stack: did not stop within " + limit + "s; killed it");
            return 1;
        }
        killLeftovers(settings);
        out.println("stack: stopped");
        return 0;
    }

    /** Whether a service of the running stack records its AOT cache at this stop (a stamp without its cache). */
    private static boolean recordingAotCaches(StackSettings settings) {
        try (var files = Files.list(settings.home().resolve("aot"))) {
            return files.map(Path::toString).filter(f -> f.endsWith(".aot.stamp"))
                    .anyMatch(stamp -> !Files.exists(Path.of(stamp.substring(0, stamp.length() - ".stamp".length()))));
        } catch (IOException e) {
            return false;
        }
    }

    /** Service processes recorded in the state file that outlived their supervisor (e.g. it was SIGKILLed). */
    private static int killLeftovers(StackSettings settings) {
        int killed = 0;
        for (long pid : servicePids(settings)) {
            Optional<ProcessHandle> handle = ProcessHandle.of(pid).filter(ProcessHandle::isAlive)
                    .filter(h -> h.info().commandLine().orElse("").contains("quarkus-run.jar")
                            || h.info().commandLine().orElse("").contains("EmbeddedKafkaBroker"));
            if (handle.isPresent()) {
                handle.get().destroy();
                try {
                    handle.get().onExit().get(30, java.util.concurrent.TimeUnit.SECONDS);
                } catch (Exception e) {
                    handle.get().destroyForcibly();
                }
                killed++;
            }
        }
        try {
            Files.deleteIfExists(settings.stateFile());
            Files.deleteIfExists(settings.pidFile());
        } catch (IOException ignored) {
            // nothing left to clean then
        }
        return killed;
    }

    private static List<Long> servicePids(StackSettings settings) {
        List<Long> pids = new ArrayList<>();
        try {
            JsonNode state = new ObjectMapper().readTree(settings.stateFile().toFile());
            state.path("services").forEach(s -> pids.add(s.path("pid").asLong()));
        } catch (IOException e) {
            // no state: nothing recorded
        }
        return pids;
    }

    private static int status(StackSettings settings, PrintStream out) {
        Optional<Long> pid = Stack.runningSupervisor(settings);
        if (pid.isEmpty()) {
            out.println("stack: not running (start it with ./deepserve up -d)");
            return 3;
        }
        out.println("stack: running (supervisor pid " + pid.get() + ", data " + settings.home() + ")");
        boolean allReady = true;
        JsonNode state = null;
        try {
            state = new ObjectMapper().readTree(settings.stateFile().toFile());
        } catch (IOException e) {
            // still starting: no state yet
        }
        JsonNode broker = state == null ? null : state.path("services").path("kafka");
        if (broker != null && !broker.isMissingNode()) {
            ServiceProcess.Readiness readiness = ServiceProcess.byReadyFile(settings.home().resolve("kafka.ready"), broker.path("pid").asLong());
            allReady &= readiness.ready();
            out.printf("  %-18s %-28s %s%s%n", "kafka", state.path("kafka").asText(), readiness.ready() ? "ready" : "NOT READY: " + readiness.body(),
                    restarts(broker));
        }
        for (String name : StackSettings.SERVICES) {
            ServiceProcess.Readiness readiness = ServiceProcess.probe(settings.url(name));
            allReady &= readiness.ready();
            JsonNode svc = state == null ? null : state.path("services").path(name);
            out.printf("  %-18s %-28s %s%s%n", name, settings.url(name), readiness.ready() ? "ready" : "NOT READY: " + HealthSummary.reasons(readiness),
                    restarts(svc));
        }
        return allReady ? 0 : 1;
    }

    private static String restarts(JsonNode svc) {
        return svc == null || svc.path("restarts").asInt() == 0 ? ""
                : "  (restarted " + svc.path("restarts").asInt() + "x, last exit " + svc.path("last_exit").asText("?") + ")";
    }

    private static Duration startTimeout(Map<String, String> env) {
        String value = env.getOrDefault("DEEPSERVE_START_TIMEOUT", "300");
        try {
            return Duration.ofSeconds(Long.parseLong(value.trim()));
        } catch (NumberFormatException e) {
            throw new CliException("DEEPSERVE_START_TIMEOUT=" + value + " is not a number of seconds");
        }
    }
}
