package dev.deepserve.model.engine;

import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.ep.ExpertParallel;
import dev.deepserve.model.ep.ExpertWorker;
import dev.deepserve.internal.InternalToken;
import dev.deepserve.model.config.ModelConfig;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Expert parallelism across real processes: this JVM (worker 0) and two {@code ExpertWorker} JVMs on the same
 * checkpoint. Logits with three workers — experts spread, replicas added and moved by EPLB mid-run — equal the
 * one-process logits bit for bit, for prefill, batched decode steps and the MTP module.
 */
class ExpertParallelTest {

    @TempDir
    static Path tmp;
    static Path dir;
    static final List<Process> workers = new ArrayList<>();
    static final List<InetSocketAddress> addresses = new ArrayList<>();
    static final InternalToken TOKEN = InternalToken.generate();

    @BeforeAll
    static void startWorkers() throws Exception {
        dir = TestCheckpoints.write(tmp.resolve("v3"), TestCheckpoints.ODD_V3, 7, 1);
        for (int i = 0; i < 3; i++) {
            addresses.add(start());
        }
    }

    static InetSocketAddress start() throws Exception {
        ExpertWorker.Spawned w = ExpertWorker.spawn(dir, 1, 256, TOKEN);
        workers.add(w.process());
        return w.address();
    }

    @AfterAll
    static void stopWorkers() {
        workers.forEach(Process::destroy);
    }

    /** Prefill of three prompts, then decode steps fed with each sequence's greedy token; every logit row is returned. */
    static List<float[]> run(Transformer m) {
        int[][] prompts = {{1, 17, 999, 404, 3}, {250, 77}, {500, 12, 640, 8, 3, 3, 9}};
        List<float[]> out = new ArrayList<>();
        KvCache[] caches = new KvCache[prompts.length];
        KvCache mtpCache = m.mtp().newCache(1);
        int[] next = new int[prompts.length];
        for (int i = 0; i < prompts.length; i++) {
            caches[i] = m.newCache(1);
            float[] h = m.forward(prompts[i], caches[i]);
            float[] logits = m.logits(h, 0, prompts[i].length);
            out.add(logits);
            next[i] = argmax(logits, prompts[i].length - 1, m.config().vocabSize());
            if (i == 0) {
                int[] shifted = Arrays.copyOfRange(prompts[0], 1, prompts[0].length + 1);
                shifted[shifted.length - 1] = next[0];
                out.add(m.mtp().logits(m.mtp().forward(h, List.of(new Transformer.Step(shifted, mtpCache)), m), 0, shifted.length, m));
            }
        }
        for (int step = 0; step < 10; step++) {
            List<Transformer.Step> steps = new ArrayList<>();
            for (int i = 0; i < prompts.length; i++) {
                steps.add(new Transformer.Step(new int[] {next[i]}, caches[i]));
            }
            float[] logits = m.logits(m.forward(steps), 0, prompts.length);
            out.add(logits);
            for (int i = 0; i < prompts.length; i++) {
                next[i] = argmax(logits, i, m.config().vocabSize());
            }
        }
        return out;
    }

    static int argmax(float[] logits, int row, int vocab) {
        int best = 0;
        for (int v = 1; v < vocab; v++) {
            if (logits[row * vocab + v] > logits[row * vocab + best]) {
                best = v;
            }
        }
        return best;
    }

    @Test
    void threeWorkersWithRedundantExpertsGiveExactlyTheLogitsOfOne() {
        List<float[]> alone;
        try (Transformer m = Transformer.load(dir, CpuOps.best())) {
            alone = run(m);
        }
        try (Transformer m = Transformer.load(dir, CpuOps.best());
             ExpertParallel ep = new ExpertParallel(m.localExperts(), addresses.subList(0, 2), m.moeLayers(), new ExpertParallel.Options(3, 3), TOKEN)) {
            m.expertBackend(ep);
            List<float[]> spread = run(m);
            assertEquals(alone.size(), spread.size());
            for (int i = 0; i < alone.size(); i++) {
                assertArrayEquals(alone.get(i), spread.get(i), "forward " + i + " differs with experts on three workers");
            }
            long[] tokens = ep.tokensPerWorker();
            assertTrue(tokens[1] > 0 && tokens[2] > 0, "the other processes computed experts: " + Arrays.toString(tokens));
            assertTrue(ep.rebalances() >= 3, "placements were re-planned mid-run: " + ep.rebalances());
            int layer = m.moeLayers().firstKey();
            int shared = m.moeLayers().get(layer) - 1;
            assertTrue(ep.placement().replicas(layer, shared).length >= 2, "the shared expert, hit by every token, got a replica");
        }
    }

    /** Weights a backend holds in panels now, from its description ("…, 12 weights and 8 bands in panels (3 MiB)"). */
    static int inPanels(CpuOps ops) {
        java.util.regex.Matcher m = java.util.regex.Pattern.compile(", (\\d+) weights?( and \\d+ bands?)? in panels").matcher(ops.describe());
        return m.find() ? Integer.parseInt(m.group(1)) : 0;
    }

    /**
     * A worker packs nothing at load and then only the experts it computes, and a placement that moves experts away
     * frees their panels, on the worker and on the leader for its own share; the logits stay the one-process logits.
     */
    @Test
    void aWorkerPacksOnlyItsExpertsAndPlacementsFreeThoseMovedAway() throws Exception {
        org.junit.jupiter.api.Assumptions.assumeTrue(CpuOps.vectorAvailable(), "Vector API module not present");
        List<float[]> alone;
        try (Transformer m = Transformer.load(dir, CpuOps.best())) {
            alone = run(m);
        }
        CpuOps workerOps = CpuOps.create(true, 1, false);
        workerOps.deferPacking();
        CpuOps leaderOps = CpuOps.create(true, 1, false);
        try (Transformer wm = Transformer.load(dir, workerOps);
             ExpertWorker worker = new ExpertWorker(wm.localExperts(), new java.net.ServerSocket(0, 16, java.net.InetAddress.getLoopbackAddress()), TOKEN,
                     wm.config().hiddenSize());
             Transformer m = Transformer.load(dir, leaderOps)) {
            Thread serving = new Thread(worker::serve, "in-process expert worker");
            serving.setDaemon(true);
            serving.start();
            assertEquals(0, inPanels(workerOps), "a worker packs nothing at load: " + workerOps.describe());
            int atLoad = inPanels(leaderOps); // the leader's lm_head, projections and dense MLP
            try (ExpertParallel ep = new ExpertParallel(m.localExperts(), List.of(new InetSocketAddress(java.net.InetAddress.getLoopbackAddress(), worker.port())),
                    m.moeLayers(), new ExpertParallel.Options(2, 2), TOKEN)) {
                m.expertBackend(ep);
                List<float[]> spread = run(m);
                for (int i = 0; i < alone.size(); i++) {
                    assertArrayEquals(alone.get(i), spread.get(i), "forward " + i + " differs with packed experts on an in-process worker");
                }
                assertTrue(ep.rebalances() >= 3, "placements were re-planned mid-run: " + ep.rebalances());
                int workerHeld = ep.placement().heldBy(1).size();
                int leaderHeld = ep.placement().heldBy(0).size();
                assertTrue(inPanels(workerOps) > 0, "the worker computed experts through panels: " + workerOps.describe());
                assertTrue(inPanels(workerOps) <= 3 * workerHeld, "no panels for experts moved away: " + workerOps.describe() + ", holds " + workerHeld);
                assertTrue(inPanels(leaderOps) - atLoad <= 3 * leaderHeld, "the leader's own share likewise: " + leaderOps.describe() + ", holds " + leaderHeld);
            }
        } finally {
            workerOps.close();
            leaderOps.close();
        }
    }

    /** Opens a connection to a worker and presents {@code token}; answers the worker's status (0 = accepted). */
    static int hello(DataOutputStream out, DataInputStream in, String token) throws Exception {
        return hello(out, in, token, 1);
    }

    static int hello(DataOutputStream out, DataInputStream in, String token, long epoch) throws Exception {
        out.writeInt(3);
        out.writeInt(token.length());
        out.writeBytes(token);
        out.writeLong(epoch);
        out.flush();
        return in.readInt();
    }

    static int hidden() {
        return ModelConfig.read(dir.resolve("config.json")).hiddenSize();
    }

    @Test
    void aWorkerRefusesAnExpertItWasNotGiven() throws Exception {
        try (Socket s = new Socket(addresses.get(2).getAddress(), addresses.get(2).getPort())) {
            DataOutputStream out = new DataOutputStream(s.getOutputStream());
            DataInputStream in = new DataInputStream(s.getInputStream());
            assertEquals(0, hello(out, in, TOKEN.value()));
            out.writeInt(2); // HOLD nothing
            out.writeInt(0);
            out.flush();
            assertEquals(0, in.readInt());
            out.writeInt(1); // RUN expert 0 of layer 1 on one row
            out.writeInt(1);
            out.writeInt(1);
            out.writeInt(0);
            out.writeInt(1);
            out.writeInt(hidden());
            out.write(new byte[4 * hidden()]);
            out.flush();
            assertEquals(1, in.readInt());
            assertTrue(in.readUTF().contains("not held by this worker"));
        }
    }

    @Test
    void aPeerWithoutTheServiceCredentialIsReadNoFurtherThanItsHandshake() throws Exception {
        InetSocketAddress worker = addresses.get(2);
        // a HOLD before any handshake (answered OK before the credential existed), a RUN with a huge block, a wrong
        // token, a token length meant to allocate: each ends the connection unanswered
        for (int[] opening : new int[][] {{2, 0}, {1, 1, 1, 0, 1 << 30, 1 << 30}, {3, 8, 0x77726f6e, 0x672d746f, 0, 1}, {3, Integer.MAX_VALUE}}) {
            try (Socket s = new Socket(worker.getAddress(), worker.getPort())) {
                DataOutputStream out = new DataOutputStream(s.getOutputStream());
                for (int v : opening) {
                    out.writeInt(v);
                }
                out.flush();
                assertEquals(-1, s.getInputStream().read(), "the worker closed the connection without an answer: " + Arrays.toString(opening));
            }
        }
        try (Socket s = new Socket(worker.getAddress(), worker.getPort())) {
            DataOutputStream out = new DataOutputStream(s.getOutputStream());
            DataInputStream in = new DataInputStream(s.getInputStream());
            assertEquals(0, hello(out, in, TOKEN.value()), "and it still serves a leader with the credential");
            // an authenticated peer's block of the wrong width, or too large, is refused before it is allocated
            out.writeInt(1);
            out.writeInt(1);
            out.writeInt(1);
            out.writeInt(0);
            out.writeInt(1 << 20);
            out.writeInt(hidden() + 1);
            out.flush();
            assertEquals(-1, s.getInputStream().read(), "a block that does not fit the model ends the connection");
        }
    }

    @Test
    void peersStuckInTheirHandshakeCannotLockTheLeaderOut() throws Exception {
        InetSocketAddress worker = start();
        List<Socket> idle = new ArrayList<>();
        try {
            for (int i = 0; i < 12; i++) {
                Socket s = new Socket(worker.getAddress(), worker.getPort());
                s.getOutputStream().write(3); // one byte of a HELLO, then nothing
                idle.add(s);
            }
            try (Socket leader = new Socket(worker.getAddress(), worker.getPort())) {
                DataOutputStream out = new DataOutputStream(leader.getOutputStream());
                DataInputStream in = new DataInputStream(leader.getInputStream());
                assertEquals(0, hello(out, in, TOKEN.value()), "the newest handshake pushes the oldest stalled one out");
                out.writeInt(2);
                out.writeInt(0);
                out.flush();
                assertEquals(0, in.readInt());
            }
        } finally {
            for (Socket s : idle) {
                s.close();
            }
        }
    }

    @Test
    void onlyTheLeaderThatPlacedTheExpertsMayMoveThemUntilALaterOneTakesOver() throws Exception {
        InetSocketAddress worker = start();
        try (Socket leader = new Socket(worker.getAddress(), worker.getPort());
             Socket other = new Socket(worker.getAddress(), worker.getPort());
             Socket restarted = new Socket(worker.getAddress(), worker.getPort())) {
            DataOutputStream lo = new DataOutputStream(leader.getOutputStream());
            DataInputStream li = new DataInputStream(leader.getInputStream());
            DataOutputStream oo = new DataOutputStream(other.getOutputStream());
            DataInputStream oi = new DataInputStream(other.getInputStream());
            DataOutputStream ro = new DataOutputStream(restarted.getOutputStream());
            DataInputStream ri = new DataInputStream(restarted.getInputStream());
            assertEquals(0, hello(lo, li, TOKEN.value(), 100));
            assertEquals(0, hello(oo, oi, TOKEN.value(), 100));
            assertEquals(0, hello(ro, ri, TOKEN.value(), 200));
            lo.writeInt(2);
            lo.writeInt(0);
            lo.flush();
            assertEquals(0, li.readInt());
            oo.writeInt(2);
            oo.writeInt(0);
            oo.flush();
            assertEquals(1, oi.readInt(), "a peer of the same epoch may not move the experts");
            assertTrue(oi.readUTF().contains("another leader"));
            ro.writeInt(2);
            ro.writeInt(0);
            ro.flush();
            assertEquals(0, ri.readInt(), "a leader that started later takes over");
            assertEquals(-1, leader.getInputStream().read(), "and the earlier leader's connection is cut");
        }
    }

    @Test
    void aWorkerThatDiesFailsTheStepNamingItAndNothingRunsOnAStaleConnection() throws Exception {
        InetSocketAddress doomed = start();
        try (Transformer m = Transformer.load(dir, CpuOps.best());
             ExpertParallel ep = new ExpertParallel(m.localExperts(), List.of(doomed), m.moeLayers(), new ExpertParallel.Options(0, 0), TOKEN)) {
            m.expertBackend(ep);
            m.forward(new int[] {1, 2, 3}, m.newCache(1));
            workers.getLast().destroyForcibly().waitFor();
            IllegalStateException e = assertThrows(IllegalStateException.class, () -> m.forward(new int[] {4, 5, 6, 7}, m.newCache(1)));
            assertTrue(e.getMessage().contains(String.valueOf(doomed.getPort())), e.getMessage());
            IllegalStateException again = assertThrows(IllegalStateException.class, () -> m.forward(new int[] {4}, m.newCache(1)));
            assertTrue(again.getMessage().startsWith("expert parallelism stopped"), again.getMessage());
            assertTrue(ep.failure().contains(String.valueOf(doomed.getPort())), "readiness can say why: " + ep.failure());
        }
    }
}
