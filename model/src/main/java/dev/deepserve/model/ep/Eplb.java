package dev.deepserve.model.ep;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.SortedMap;
import java.util.TreeMap;

/**
 * Redundant-expert placement from observed load (DeepSeek-V3 §3.4: duplicate high-load experts, then spread the
 * replicas so every worker gets about the same number of tokens — the greedy scheme DeepSeek's EPLB publishes).
 * Per layer: {@code redundant} extra replicas go one at a time to the expert with the most tokens per replica; then the
 * replicas, heaviest first, go to the least-loaded worker that still has a free slot and does not hold that expert yet.
 * Every worker has the same number of slots: {@code ceil((experts + redundant) / workers)}.
 */
public final class Eplb {

    private Eplb() {
    }

    /**
     * @param load      per MoE layer, tokens seen per expert id (shared expert included)
     * @param workers   workers to place on
     * @param redundant extra replicas per layer
     */
    public static Placement plan(SortedMap<Integer, long[]> load, int workers, int redundant) {
        if (workers < 1) {
            throw new IllegalArgumentException("need at least one worker");
        }
        SortedMap<Integer, int[][]> layers = new TreeMap<>();
        for (Map.Entry<Integer, long[]> e : load.entrySet()) {
            layers.put(e.getKey(), planLayer(e.getValue(), workers, Math.max(0, redundant)));
        }
        return new Placement(workers, layers);
    }

    static int[][] planLayer(long[] load, int workers, int redundant) {
        int experts = load.length;
        // an expert never needs more replicas than workers
        int extra = Math.min(redundant, experts * (workers - 1));
        int[] replicas = new int[experts];
        java.util.Arrays.fill(replicas, 1);
        for (int i = 0; i < extra; i++) {
            int best = -1;
            for (int x = 0; x < experts; x++) {
                if (replicas[x] < workers && (best < 0 || (double) (load[x] + 1) / replicas[x] > (double) (load[best] + 1) / replicas[best])) {
                    best = x;
                }
            }
            replicas[best]++;
        }
        record Unit(int expert, double load) {
        }
        List<Unit> units = new ArrayList<>();
        for (int x = 0; x < experts; x++) {
            for (int r = 0; r < replicas[x]; r++) {
                units.add(new Unit(x, (double) (load[x] + 1) / replicas[x]));
            }
        }
        units.sort(Comparator.comparingDouble(Unit::load).reversed().thenComparingInt(Unit::expert));
        int slots = (units.size() + workers - 1) / workers;
        double[] workerLoad = new double[workers];
        int[] used = new int[workers];
        List<List<Integer>> holders = new ArrayList<>();
        for (int x = 0; x < experts; x++) {
            holders.add(new ArrayList<>());
        }
        for (Unit u : units) {
            int pick = -1;
            for (int w = 0; w < workers; w++) {
                if (used[w] < slots && !holders.get(u.expert()).contains(w) && (pick < 0 || workerLoad[w] < workerLoad[pick])) {
                    pick = w;
                }
            }
            if (pick < 0) {
                throw new IllegalStateException("no slot left for a replica of expert " + u.expert()); // cannot happen: slots cover all units
            }
            holders.get(u.expert()).add(pick);
            workerLoad[pick] += u.load();
            used[pick]++;
        }
        int[][] out = new int[experts][];
        for (int x = 0; x < experts; x++) {
            out[x] = holders.get(x).stream().sorted().mapToInt(Integer::intValue).toArray();
        }
        return out;
    }

    /** The most tokens any worker would get under {@code placement} for {@code load}, over the mean: 1.0 is perfect balance. */
    public static double imbalance(Placement placement, SortedMap<Integer, long[]> load) {
        double worst = 0;
        for (Map.Entry<Integer, long[]> e : load.entrySet()) {
            double[] w = new double[placement.workers()];
            double total = 0;
            long[] l = e.getValue();
            for (int x = 0; x < l.length; x++) {
                int[] r = placement.replicas(e.getKey(), x);
                for (int v : r) {
                    w[v] += (double) l[x] / r.length;
                }
                total += l[x];
            }
            double max = java.util.Arrays.stream(w).max().orElse(0);
            if (total > 0) {
                worst = Math.max(worst, max / (total / placement.workers()));
            }
        }
        return worst;
    }
}
