package dev.deepserve.model.ep;

import dev.deepserve.model.engine.ExpertBackend;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.EOFException;
import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * One expert-parallel worker: serves the experts it is told to hold ({@code HOLD}) for whoever leads it ({@code RUN}),
 * from the same checkpoint the leader runs. Asking it for an expert it does not hold is an error, so a wrong placement
 * shows instead of silently computing anywhere.
 *
 * <p>{@code java -cp <model classpath> dev.deepserve.model.ep.ExpertWorker --model DIR [--port P] [--bind ADDR] [--threads N]
 * [--health-port H] [--parent PID]}; with a health port it answers {@code /q/health/live} and {@code /q/health/ready}
 * like the services do (for Kubernetes probes) once the model is loaded.
 * prints {@code expert worker listening on <port>} once it serves.
 */
public final class ExpertWorker implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(ExpertWorker.class.getName());

    private final ExpertBackend experts;
    private final ServerSocket server;
    private final Set<Long> held = new HashSet<>();
    private volatile boolean running = true;

    public ExpertWorker(ExpertBackend experts, ServerSocket server) {
        this.experts = experts;
        this.server = server;
    }

    public int port() {
        return server.getLocalPort();
    }

    /** Serves leaders one connection at a time each, on their own threads, until closed. */
    public void serve() {
        while (running) {
            try {
                Socket s = server.accept();
                s.setTcpNoDelay(true);
                Thread.ofPlatform().name("expert-worker-" + s.getPort()).daemon().start(() -> connection(s));
            } catch (IOException e) {
                if (running) {
                    LOG.log(System.Logger.Level.WARNING, "accept failed: " + e.getMessage());
                }
            }
        }
    }

    private void connection(Socket s) {
        try (s; DataInputStream in = new DataInputStream(new BufferedInputStream(s.getInputStream(), 1 << 16));
             DataOutputStream out = new DataOutputStream(new BufferedOutputStream(s.getOutputStream(), 1 << 16))) {
            while (true) {
                int op;
                try {
                    op = in.readInt();
                } catch (EOFException e) {
                    return;
                }
                switch (op) {
                    case Wire.RUN -> run(in, out);
                    case Wire.HOLD -> {
                        int n = in.readInt();
                        Set<Long> next = new HashSet<>();
                        for (int i = 0; i < n; i++) {
                            next.add(key(in.readInt(), in.readInt()));
                        }
                        synchronized (held) {
                            held.clear();
                            held.addAll(next);
                        }
                        out.writeInt(Wire.OK);
                        out.flush();
                    }
                    default -> throw new IOException("unknown operation " + op);
                }
            }
        } catch (IOException e) {
            LOG.log(System.Logger.Level.WARNING, "leader connection closed: " + e.getMessage());
        }
    }

    private void run(DataInputStream in, DataOutputStream out) throws IOException {
        int layer = in.readInt();
        int groups = in.readInt();
        if (groups < 0 || groups > 1 << 16) {
            throw new IOException("implausible group count " + groups);
        }
        int[] ids = new int[groups];
        int[] rows = new int[groups];
        float[][] inputs = new float[groups][];
        String refused = null;
        for (int g = 0; g < groups; g++) {
            ids[g] = in.readInt();
            rows[g] = in.readInt();
            int width = in.readInt();
            inputs[g] = new float[Wire.count(rows[g], width)];
            Wire.readFloats(in, inputs[g], 0, inputs[g].length);
            synchronized (held) {
                if (refused == null && !held.contains(key(layer, ids[g]))) {
                    refused = "expert " + ids[g] + " of layer " + layer + " is not held by this worker";
                }
            }
        }
        float[][] outputs;
        try {
            if (refused != null) {
                throw new IllegalArgumentException(refused);
            }
            outputs = experts.run(layer, ids, inputs, rows);
        } catch (RuntimeException e) {
            out.writeInt(Wire.ERROR);
            out.writeUTF(String.valueOf(e.getMessage()));
            out.flush();
            return;
        }
        out.writeInt(Wire.OK);
        for (float[] y : outputs) {
            Wire.writeFloats(out, y, 0, y.length);
        }
        out.flush();
    }

    private static long key(int layer, int expert) {
        return ((long) layer << 32) | (expert & 0xffffffffL);
    }

    @Override
    public void close() throws IOException {
        running = false;
        server.close();
    }

    /** A worker process started by {@link #spawn}: stop it with {@link #close()}. */
    public record Spawned(Process process, java.net.InetSocketAddress address) implements AutoCloseable {
        @Override
        public void close() {
            process.destroy();
        }
    }

    /**
     * Starts a worker process on this machine over the same checkpoint, with this JVM's Java and class path, and
     * waits until it serves (on a free loopback port).
     */
    public static Spawned spawn(Path model, int threads, long heapMb) throws IOException {
        String javaBin = ProcessHandle.current().info().command().orElse("java");
        Process p = new ProcessBuilder(javaBin, "--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx" + heapMb + "m",
                "-XX:+UseSerialGC", "-cp", classPath(), ExpertWorker.class.getName(),
                "--model", model.toString(), "--port", "0", "--bind", "127.0.0.1", "--threads", String.valueOf(threads),
                "--parent", String.valueOf(ProcessHandle.current().pid()))
                .redirectErrorStream(true).start();
        java.io.BufferedReader out = new java.io.BufferedReader(new java.io.InputStreamReader(p.getInputStream(), java.nio.charset.StandardCharsets.UTF_8));
        StringBuilder said = new StringBuilder();
        for (String line = out.readLine(); line != null; line = out.readLine()) {
            if (line.startsWith("expert worker listening on ")) {
                int port = Integer.parseInt(line.substring("expert worker listening on ".length()).strip());
                Thread.ofPlatform().name("expert-worker-output").daemon().start(() -> out.lines().forEach(l -> LOG.log(System.Logger.Level.INFO, "worker " + port + ": " + l)));
                return new Spawned(p, new java.net.InetSocketAddress("127.0.0.1", port));
            }
            said.append(line).append('\n');
        }
        p.destroy();
        throw new IOException("the expert worker process did not start: " + said.toString().strip());
    }

    /**
     * The class path a worker needs, from where this JVM loaded the classes it runs: the model module and Jackson (for
     * config.json) — the same whether this JVM runs from plain jars, a test class path or a Quarkus fast-jar (whose
     * own class path holds only its launcher).
     */
    static String classPath() {
        java.util.LinkedHashSet<String> entries = new java.util.LinkedHashSet<>();
        for (Class<?> c : List.of(ExpertWorker.class, com.fasterxml.jackson.databind.ObjectMapper.class,
                com.fasterxml.jackson.core.JsonFactory.class, com.fasterxml.jackson.annotation.JsonProperty.class)) {
            try {
                entries.add(Path.of(c.getProtectionDomain().getCodeSource().getLocation().toURI()).toString());
            } catch (java.net.URISyntaxException | RuntimeException e) {
                return System.getProperty("java.class.path");
            }
        }
        return String.join(java.io.File.pathSeparator, entries);
    }

    public static void main(String[] args) throws Exception {
        Path model = null;
        int port = 0;
        // loopback unless told otherwise: the EP wire is not for the network at large (in a pod, --bind 0.0.0.0)
        String bind = "127.0.0.1";
        int healthPort = -1;
        int threads = Runtime.getRuntime().availableProcessors();
        for (int i = 0; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "--model" -> model = Path.of(args[i + 1]);
                case "--port" -> port = Integer.parseInt(args[i + 1]);
                case "--bind" -> bind = args[i + 1];
                case "--health-port" -> healthPort = Integer.parseInt(args[i + 1]);
                case "--threads" -> threads = Integer.parseInt(args[i + 1]);
                case "--parent" -> {
                    // started by an engine on this machine: do not outlive it, even when it was killed outright
                    ProcessHandle parent = ProcessHandle.of(Long.parseLong(args[i + 1])).orElse(null);
                    Thread.ofPlatform().daemon().start(() -> {
                        while (parent != null && parent.isAlive()) {
                            try {
                                Thread.sleep(500);
                            } catch (InterruptedException e) {
                                return;
                            }
                        }
                        System.exit(0);
                    });
                }
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        if (model == null) {
            System.err.println("expert worker: --model DIR is required");
            System.exit(2);
        }
        Transformer t = Transformer.load(model, CpuOps.create(CpuOps.vectorAvailable(), threads, false));
        try (ExpertWorker w = new ExpertWorker(t.localExperts(), new ServerSocket(port, 16, InetAddress.getByName(bind)))) {
            if (healthPort >= 0) {
                health(bind, healthPort);
            }
            System.out.println("expert worker listening on " + w.port());
            System.out.flush();
            w.serve();
        }
    }

    /** {@code /q/health/live} and {@code /q/health/ready}: up once this is called, i.e. after the model loaded. */
    static void health(String bind, int port) throws IOException {
        com.sun.net.httpserver.HttpServer http = com.sun.net.httpserver.HttpServer.create(new java.net.InetSocketAddress(InetAddress.getByName(bind), port), 16);
        for (String path : List.of("/q/health/live", "/q/health/ready")) {
            http.createContext(path, exchange -> {
                byte[] body = "{\"status\":\"UP\",\"checks\":[{\"name\":\"expert-worker\",\"status\":\"UP\"}]}".getBytes(java.nio.charset.StandardCharsets.UTF_8);
                exchange.getResponseHeaders().add("Content-Type", "application/json");
                exchange.sendResponseHeaders(200, body.length);
                exchange.getResponseBody().write(body);
                exchange.close();
            });
        }
        http.start();
    }
}
