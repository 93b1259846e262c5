package dev.deepserve.model.ep;

import dev.deepserve.internal.InternalToken;
import dev.deepserve.model.engine.ExpertBackend;

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.util.ArrayList;
import java.util.List;
import java.util.SortedMap;
import java.util.TreeMap;

/**
 * Expert parallelism (DeepSeek-V3 §3.4.2) from the side of the process that runs attention and routing: the routed
 * experts (and the shared expert, as one more expert every token uses) are spread over N workers — worker 0 is this
 * process, workers 1.. are {@link ExpertWorker}s reached over TCP. Each MoE layer sends every worker the tokens of
 * the experts it holds (an expert with replicas has its tokens split between them), computes its own share meanwhile,
 * and gathers the results; the caller combines them in a fixed order, so the output equals a one-worker run bit for
 * bit.
 *
 * <p>Redundant experts: tokens per expert are counted as they pass; every {@code rebalanceEvery} forward steps a new
 * placement is planned with {@link Eplb} from the recent load (halved at each rebalance, so it follows drift) and
 * switched to between two layers: workers first hold the union of both placements, then the new one only, so no
 * request ever finds its expert missing.
 */
public final class ExpertParallel implements ExpertBackend, AutoCloseable {

    /** {@code redundant}: extra replicas per layer; {@code rebalanceEvery}: forward steps between plans (0: never). */
    public record Options(int redundant, int rebalanceEvery) {
    }

    private final ExpertBackend local;
    private final List<Remote> remotes = new ArrayList<>();
    private final Options options;
    private final SortedMap<Integer, long[]> load = new TreeMap<>();
    private final int firstLayer;
    private final long[] tokensPerWorker;
    private volatile Placement placement;
    private long steps;
    private int rebalances;
    /** Set when a worker's connection failed: its stream can no longer be trusted, so nothing runs any more. */
    private volatile IllegalStateException broken;

    private static final class Remote {
        final InetSocketAddress address;
        final Socket socket;
        final DataInputStream in;
        final DataOutputStream out;

        /**
         * Connects and authenticates with the service token and this leader's epoch: a worker reads nothing else
         * before it. The socket is closed on any failure (a leaked one would hold a worker's connection slot).
         */
        Remote(InetSocketAddress address, InternalToken token, long epoch) throws IOException {
            this.address = address;
            this.socket = new Socket();
            try {
                socket.connect(address, 5000);
                socket.setTcpNoDelay(true);
                socket.setKeepAlive(true);
                this.in = new DataInputStream(new BufferedInputStream(socket.getInputStream(), 1 << 16));
                this.out = new DataOutputStream(new BufferedOutputStream(socket.getOutputStream(), 1 << 16));
                socket.setSoTimeout(10_000);
                Wire.writeHello(out, token.value(), epoch);
                int status;
                try {
                    status = in.readInt();
                } catch (java.io.EOFException e) {
                    status = Wire.ERROR;
                }
                if (status != Wire.OK) {
                    throw new IOException("the worker refused this service's credential (or has no free connection)");
                }
                socket.setSoTimeout(0);
            } catch (IOException | RuntimeException e) {
                socket.close();
                throw e;
            }
        }

        IllegalStateException failed(Exception e) {
            return new IllegalStateException("expert worker " + address.getHostString() + ":" + address.getPort() + " failed: " + e.getMessage(), e);
        }
    }

    /**
     * @param local   experts run in this process (worker 0)
     * @param workers the other workers' addresses
     * @param layers  MoE layer ids and their expert count including the shared slot ({@code Transformer.moeLayers()})
     * @param token   the service credential the workers were given
     */
    public ExpertParallel(ExpertBackend local, List<InetSocketAddress> workers, SortedMap<Integer, Integer> layers, Options options,
                          InternalToken token) {
        if (layers.isEmpty()) {
            throw new IllegalArgumentException("the model has no MoE layers to spread");
        }
        this.local = local;
        this.options = options;
        this.firstLayer = layers.firstKey();
        layers.forEach((l, n) -> load.put(l, new long[n]));
        // this leader's epoch: when it started, so a worker it reaches prefers it over an earlier leader's leftovers
        long epoch = System.currentTimeMillis();
        try {
            for (InetSocketAddress a : workers) {
                remotes.add(new Remote(a, token, epoch));
            }
        } catch (IOException e) {
            close();
            throw new IllegalStateException("cannot reach an expert worker: " + e.getMessage(), e);
        }
        this.tokensPerWorker = new long[1 + remotes.size()];
        Placement start = Placement.roundRobin(1 + remotes.size(), layers);
        try {
            hold(start, start);
        } catch (RuntimeException e) {
            close();
            throw e;
        }
        this.placement = start;
    }

    public Placement placement() {
        return placement;
    }

    public int workers() {
        return 1 + remotes.size();
    }

    /** Token-expert rows each worker has computed so far. */
    public long[] tokensPerWorker() {
        synchronized (tokensPerWorker) {
            return tokensPerWorker.clone();
        }
    }

    /** The most token rows any worker has computed, over the mean: 1.0 when the load is perfectly even. */
    public double imbalance() {
        long[] t = tokensPerWorker();
        long total = java.util.Arrays.stream(t).sum();
        return total == 0 ? 1.0 : java.util.Arrays.stream(t).max().orElse(0) / ((double) total / t.length);
    }

    /** Why expert parallelism stopped (a worker's connection failed), or null while it runs. */
    public String failure() {
        IllegalStateException b = broken;
        return b == null ? null : b.getMessage();
    }

    public int rebalances() {
        return rebalances;
    }

    /** Plans a placement from the load seen since the last one and switches to it now. */
    public synchronized void rebalance() {
        Placement next = Eplb.plan(load, workers(), options.redundant());
        Placement now = placement;
        hold(now, next);       // hold both: nothing in between can miss its expert
        placement = next;
        hold(next, next);      // then let go of what the new placement moved away
        releaseMovedAway(now, next);
        for (long[] l : load.values()) {
            for (int x = 0; x < l.length; x++) {
                l[x] /= 2;
            }
        }
        rebalances++;
    }

    /** Lets this process's own experts (worker 0) that {@code next} moved elsewhere free what they kept. */
    private void releaseMovedAway(Placement now, Placement next) {
        for (int[] e : now.heldBy(0)) {
            if (java.util.Arrays.stream(next.replicas(e[0], e[1])).noneMatch(worker -> worker == 0)) {
                local.release(e[0], e[1]);
            }
        }
    }

    private void hold(Placement a, Placement b) {
        for (int i = 0; i < remotes.size(); i++) {
            Remote r = remotes.get(i);
            try {
                Wire.writeHold(r.out, Placement.union(a, b, i + 1));
                if (r.in.readInt() != Wire.OK) {
                    throw new IOException("the worker refused its experts: " + r.in.readUTF());
                }
            } catch (IOException e) {
                broken = r.failed(e);
                throw broken;
            }
        }
    }

    /** A contiguous share of one group's rows, for one worker. */
    private record Share(int group, int expert, int from, int rows) {
    }

    @Override
    public synchronized float[][] run(int layer, int[] experts, float[][] inputs, int[] rows) {
        if (broken != null) {
            throw new IllegalStateException("expert parallelism stopped: " + broken.getMessage(), broken);
        }
        if (layer == firstLayer && options.rebalanceEvery() > 0 && ++steps % options.rebalanceEvery() == 0) {
            rebalance();
        }
        Placement p = placement;
        int width = -1;
        List<List<Share>> perWorker = new ArrayList<>();
        for (int w = 0; w < workers(); w++) {
            perWorker.add(new ArrayList<>());
        }
        long[] layerLoad = load.get(layer);
        for (int g = 0; g < experts.length; g++) {
            if (rows[g] > 0) {
                width = inputs[g].length / rows[g];
            }
            if (layerLoad != null && experts[g] < layerLoad.length) {
                layerLoad[experts[g]] += rows[g];
            }
            int[] replicas = p.replicas(layer, experts[g]);
            int from = 0;
            for (int j = 0; j < replicas.length; j++) {
                int n = rows[g] / replicas.length + (j < rows[g] % replicas.length ? 1 : 0);
                if (n > 0) {
                    perWorker.get(replicas[j]).add(new Share(g, experts[g], from, n));
                }
                from += n;
            }
        }
        float[][] outputs = new float[experts.length][];
        for (int g = 0; g < experts.length; g++) {
            outputs[g] = new float[inputs[g].length];
        }
        if (width <= 0) {
            return outputs;
        }
        // send every remote its shares, compute ours, then gather theirs
        int rowWidth = width;
        eachRemote(perWorker, (r, shares) -> {
            r.out.writeInt(Wire.RUN);
            r.out.writeInt(layer);
            r.out.writeInt(shares.size());
            for (Share s : shares) {
                r.out.writeInt(s.expert());
                r.out.writeInt(s.rows());
                r.out.writeInt(rowWidth);
                Wire.writeFloats(r.out, inputs[s.group()], s.from() * rowWidth, s.rows() * rowWidth);
            }
            r.out.flush();
        });
        // every remote that was sent shares is read back, whatever fails, so the connections stay in step
        RuntimeException failure = null;
        List<Share> mine = perWorker.get(0);
        if (!mine.isEmpty()) {
            int[] ids = new int[mine.size()];
            int[] n = new int[mine.size()];
            float[][] in = new float[mine.size()][];
            for (int k = 0; k < mine.size(); k++) {
                Share s = mine.get(k);
                ids[k] = s.expert();
                n[k] = s.rows();
                in[k] = java.util.Arrays.copyOfRange(inputs[s.group()], s.from() * width, (s.from() + s.rows()) * width);
            }
            try {
                float[][] y = local.run(layer, ids, in, n);
                for (int k = 0; k < mine.size(); k++) {
                    Share s = mine.get(k);
                    System.arraycopy(y[k], 0, outputs[s.group()], s.from() * width, s.rows() * width);
                }
            } catch (RuntimeException e) {
                failure = e;
            }
        }
        RuntimeException[] refused = {failure};
        eachRemote(perWorker, (r, shares) -> {
            if (r.in.readInt() != Wire.OK) {
                String message = r.in.readUTF();
                refused[0] = refused[0] != null ? refused[0] : new IllegalStateException("expert worker " + r.address.getPort() + ": " + message);
                return;
            }
            for (Share s : shares) {
                Wire.readFloats(r.in, outputs[s.group()], s.from() * rowWidth, s.rows() * rowWidth);
            }
        });
        failure = refused[0];
        if (failure != null) {
            throw failure;
        }
        synchronized (tokensPerWorker) {
            for (int w = 0; w < workers(); w++) {
                for (Share s : perWorker.get(w)) {
                    tokensPerWorker[w] += s.rows();
                }
            }
        }
        return outputs;
    }

    /** One exchange with one remote worker over its shares. */
    private interface RemoteCall {
        void call(Remote remote, List<Share> shares) throws IOException;
    }

    /**
     * Calls {@code call} for every remote worker that has shares this layer, in worker order. A broken connection
     * stops expert parallelism: the connections are closed, because a stream left mid-message cannot be trusted.
     */
    private void eachRemote(List<List<Share>> perWorker, RemoteCall call) {
        for (int i = 0; i < remotes.size(); i++) {
            List<Share> shares = perWorker.get(i + 1);
            if (shares.isEmpty()) {
                continue;
            }
            Remote r = remotes.get(i);
            try {
                call.call(r, shares);
            } catch (IOException e) {
                broken = r.failed(e);
                close();
                throw broken;
            }
        }
    }

    @Override
    public void close() {
        for (Remote r : remotes) {
            try {
                r.socket.close();
            } catch (IOException ignored) {
                // closing anyway
            }
        }
    }
}
