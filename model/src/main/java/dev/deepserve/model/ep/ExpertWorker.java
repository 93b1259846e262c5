package dev.deepserve.model.ep;

import dev.deepserve.internal.InternalToken;
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
 * shows instead of silently computing anywhere. A leader is a peer that opened with the service credential
 * ({@code DEEPSERVE_INTERNAL_TOKEN}, see {@link InternalToken}) — nothing else is read before that handshake — and
 * the first such peer to place experts; sizes on the wire are checked against the model before anything is allocated.
 *
 * <p>{@code java -cp <model classpath> dev.deepserve.model.ep.ExpertWorker --model DIR [--port P] [--bind ADDR] [--threads N]
 * [--health-port H] [--parent PID]}; with a health port it answers {@code /q/health/live} and {@code /q/health/ready}
 * like the services do (for Kubernetes probes) once the model is loaded.
 * prints {@code expert worker listening on <port>} once it serves.
 */
public final class ExpertWorker implements AutoCloseable {

    private static final System.Logger LOG = System.getLogger(ExpertWorker.class.getName());

    /** Authenticated connections served at once; a peer past its handshake beyond these is closed. */
    static final int MAX_CONNECTIONS = 8;
    /** Connections still in their handshake; a new one pushes the oldest out (so slow peers cannot lock a leader out). */
    static final int MAX_HANDSHAKES = 8;
    /** How long a whole handshake may take, and each read of a message once its first int came. */
    static final int READ_TIMEOUT_MS = 10_000;
    /** Closes connections whose handshake ran out of time: one daemon thread for every worker in the process. */
    private static final java.util.concurrent.ScheduledExecutorService DEADLINES = java.util.concurrent.Executors.newSingleThreadScheduledExecutor(
            r -> Thread.ofPlatform().name("expert-worker-handshakes").daemon().unstarted(r));

    private final ExpertBackend experts;
    private final ServerSocket server;
    private final InternalToken token;
    private final int width;
    private final java.util.concurrent.Semaphore connections = new java.util.concurrent.Semaphore(MAX_CONNECTIONS);
    private final java.util.ArrayDeque<Socket> handshaking = new java.util.ArrayDeque<>();
    private final Set<Long> held = new HashSet<>();
    /**
     * The connection whose HOLD placed the experts: only it may change them or run them, until it closes or a leader
     * that started later ({@code leaderEpoch}, from its HELLO) takes over — a restarted leader is never locked out by
     * its predecessor's half-open connection.
     */
    private Peer leader;
    private long leaderEpoch = Long.MIN_VALUE;
    private volatile boolean running = true;

    /**
     * @param token the service credential a leader must present before anything else is read
     * @param width the model's hidden size: every RUN block is {@code rows × width}
     */
    public ExpertWorker(ExpertBackend experts, ServerSocket server, InternalToken token, int width) {
        this.experts = experts;
        this.server = server;
        this.token = token;
        this.width = width;
    }

    public int port() {
        return server.getLocalPort();
    }

    /** Serves leaders, each connection on its own thread, until closed. */
    public void serve() {
        while (running) {
            try {
                Socket s = server.accept();
                s.setTcpNoDelay(true);
                s.setKeepAlive(true);
                Socket pushedOut = null;
                synchronized (handshaking) {
                    if (handshaking.size() >= MAX_HANDSHAKES) {
                        pushedOut = handshaking.poll();
                    }
                    handshaking.add(s);
                }
                closeQuietly(pushedOut);
                java.util.concurrent.ScheduledFuture<?> deadline = DEADLINES.schedule(() -> {
                    if (stillHandshaking(s)) {
                        closeQuietly(s);
                    }
                }, READ_TIMEOUT_MS, java.util.concurrent.TimeUnit.MILLISECONDS);
                Thread.ofPlatform().name("expert-worker-" + s.getPort()).daemon().start(() -> connection(s, deadline));
            } catch (IOException e) {
                if (running) {
                    LOG.log(System.Logger.Level.WARNING, "accept failed: " + e.getMessage());
                }
            }
        }
    }

    private boolean stillHandshaking(Socket s) {
        synchronized (handshaking) {
            return handshaking.contains(s);
        }
    }

    private static void closeQuietly(Socket s) {
        if (s != null) {
            try {
                s.close();
            } catch (IOException ignored) {
                // closing anyway
            }
        }
    }

    /** One peer's connection, as the wire reader sees it. */
    interface Peer {
        /** Sets the read timeout (0: none). */
        void readTimeout(int millis) throws IOException;

        /** Its handshake passed: whether it may be served (in time, and a connection slot is free). */
        boolean admitted();

        /** Cuts the connection (a newer leader took over). */
        void close();
    }

    private void connection(Socket s, java.util.concurrent.ScheduledFuture<?> deadline) {
        boolean[] slot = {false};
        Peer peer = new Peer() {
            @Override
            public void readTimeout(int millis) throws IOException {
                s.setSoTimeout(millis);
            }

            @Override
            public boolean admitted() {
                deadline.cancel(false);
                synchronized (handshaking) {
                    if (!handshaking.remove(s)) {
                        return false; // pushed out or timed out meanwhile
                    }
                }
                slot[0] = connections.tryAcquire();
                if (!slot[0]) {
                    LOG.log(System.Logger.Level.WARNING, "refused a leader: " + MAX_CONNECTIONS + " connections already open");
                }
                return slot[0];
            }

            @Override
            public void close() {
                closeQuietly(s);
            }
        };
        try (s; DataInputStream in = new DataInputStream(new BufferedInputStream(s.getInputStream(), 1 << 16));
             DataOutputStream out = new DataOutputStream(new BufferedOutputStream(s.getOutputStream(), 1 << 16))) {
            session(peer, in, out);
        } catch (IOException e) {
            LOG.log(System.Logger.Level.WARNING, "leader connection closed: " + e.getMessage());
        } finally {
            deadline.cancel(false);
            synchronized (handshaking) {
                handshaking.remove(s);
            }
            if (slot[0]) {
                connections.release();
            }
        }
    }

    /**
     * Reads one peer's messages until it closes: the handshake first, then RUN and HOLD. Throws {@link IOException}
     * for anything that is not the protocol (the connection is then closed); the fuzz target drives this directly.
     */
    void session(Peer peer, DataInputStream in, DataOutputStream out) throws IOException {
        try {
            long epoch = handshake(peer, in);
            if (epoch == Long.MIN_VALUE) {
                LOG.log(System.Logger.Level.WARNING, "refused a peer without the service credential");
                return;
            }
            if (!peer.admitted()) {
                return;
            }
            out.writeInt(Wire.OK);
            out.flush();
            while (true) {
                int op;
                try {
                    peer.readTimeout(0);   // a leader may stay quiet between steps as long as it likes
                    op = in.readInt();
                    peer.readTimeout(READ_TIMEOUT_MS);
                } catch (EOFException e) {
                    return;
                }
                switch (op) {
                    case Wire.RUN -> run(peer, in, out);
                    case Wire.HOLD -> hold(peer, epoch, in, out);
                    default -> throw new IOException("unknown operation " + op);
                }
            }
        } finally {
            synchronized (held) {
                if (leader == peer) {
                    leader = null;
                }
            }
        }
    }

    /**
     * The handshake: HELLO with the service token and the leader's epoch, read under a timeout before any other
     * message; the epoch, or {@code Long.MIN_VALUE} when the peer is refused.
     */
    private long handshake(Peer peer, DataInputStream in) throws IOException {
        peer.readTimeout(READ_TIMEOUT_MS);
        if (in.readInt() != Wire.HELLO) {
            return Long.MIN_VALUE;
        }
        int n = in.readInt();
        if (n <= 0 || n > InternalToken.MAX_LENGTH) {
            return Long.MIN_VALUE;
        }
        byte[] presented = new byte[n];
        in.readFully(presented);
        if (!token.accepts(presented)) {
            return Long.MIN_VALUE;
        }
        long epoch = in.readLong();
        return epoch == Long.MIN_VALUE ? Long.MIN_VALUE + 1 : epoch;
    }

    /**
     * HOLD: the first connection to place experts leads this worker; another one is refused while it is open, unless
     * its leader started later (a larger epoch): then it takes over and the old connection is cut.
     */
    private void hold(Peer s, long epoch, DataInputStream in, DataOutputStream out) throws IOException {
        int n = in.readInt();
        if (n < 0 || n > Wire.MAX_HELD) {
            throw new IOException("implausible placement of " + n + " experts");
        }
        Set<Long> next = new HashSet<>();
        for (int i = 0; i < n; i++) {
            next.add(key(in.readInt(), in.readInt()));
        }
        boolean mine;
        Peer replaced = null;
        Set<Long> dropped = new HashSet<>();
        synchronized (held) {
            mine = leader == null || leader == s || epoch > leaderEpoch;
            if (mine) {
                replaced = leader != null && leader != s ? leader : null;
                leader = s;
                leaderEpoch = epoch;
                dropped.addAll(held);
                dropped.removeAll(next);
                held.clear();
                held.addAll(next);
            }
        }
        for (long k : dropped) { // what this worker kept for experts it no longer holds (their repacked weights) may go
            experts.release((int) (k >> 32), (int) k);
        }
        if (replaced != null) {
            LOG.log(System.Logger.Level.WARNING, "a leader that started later took over this worker");
            replaced.close();
        }
        out.writeInt(mine ? Wire.OK : Wire.ERROR);
        if (!mine) {
            out.writeUTF("this worker is placed by another leader");
        }
        out.flush();
    }

    private void run(Peer s, DataInputStream in, DataOutputStream out) throws IOException {
        int layer = in.readInt();
        int groups = in.readInt();
        if (groups < 0 || groups > 1 << 16) {
            throw new IOException("implausible group count " + groups);
        }
        int[] ids = new int[groups];
        int[] rows = new int[groups];
        float[][] inputs = new float[groups][];
        String refused = null;
        long total = 0;
        for (int g = 0; g < groups; g++) {
            ids[g] = in.readInt();
            rows[g] = in.readInt();
            int w = in.readInt();
            if (w != width) {
                throw new IOException("rows of width " + w + " where the model's hidden size is " + width);
            }
            int n = Wire.count(rows[g], w);
            total += n;
            if (total > Wire.MAX_FLOATS) {
                throw new IOException("a message of more than " + Wire.MAX_FLOATS + " floats");
            }
            inputs[g] = new float[n];
            Wire.readFloats(in, inputs[g], 0, inputs[g].length);
            synchronized (held) {
                if (refused == null && leader != s) {
                    refused = "this worker is led by another connection";
                } else if (refused == null && !held.contains(key(layer, ids[g]))) {
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
     * waits until it serves (on a free loopback port). The worker is given {@code token} through its environment.
     */
    public static Spawned spawn(Path model, int threads, long heapMb, InternalToken token) throws IOException {
        String javaBin = ProcessHandle.current().info().command().orElse("java");
        ProcessBuilder builder = new ProcessBuilder(javaBin, "--add-modules=jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx" + heapMb + "m",
                // local workers share the checkpoint's page cache with their leader rather than each copying it
                "-XX:+UseSerialGC", "-D" + CpuOps.PLACE_PROPERTY + "=off",
                // the leader's choice of kernels: an expert's floats must be the same on both sides
                "-D" + CpuOps.REPACK_PROPERTY + "=" + System.getProperty(CpuOps.REPACK_PROPERTY, "on"), "-cp", classPath(), ExpertWorker.class.getName(),
                "--model", model.toString(), "--port", "0", "--bind", "127.0.0.1", "--threads", String.valueOf(threads),
                "--parent", String.valueOf(ProcessHandle.current().pid()))
                .redirectErrorStream(true);
        builder.environment().put(InternalToken.ENV, token.value());
        Process p = builder.start();
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
        for (Class<?> c : List.of(ExpertWorker.class, InternalToken.class, com.fasterxml.jackson.databind.ObjectMapper.class,
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
        InternalToken token;
        try {
            token = InternalToken.fromEnvironment().orElse(null);
        } catch (IllegalArgumentException e) {
            token = null;
            System.err.println("expert worker: " + e.getMessage());
        }
        if (token == null) {
            System.err.println("expert worker: set " + InternalToken.ENV + " (the service credential leaders present)");
            System.exit(2);
        }
        CpuOps ops = CpuOps.create(CpuOps.vectorAvailable(), threads, false);
        ops.deferPacking(); // a worker computes only its experts: the lm_head and projections it never multiplies stay unpacked
        Transformer t = Transformer.load(model, ops);
        try (ExpertWorker w = new ExpertWorker(t.localExperts(), new ServerSocket(port, 16, InetAddress.getByName(bind)), token,
                t.config().hiddenSize())) {
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
