package dev.deepserve.model.ep;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.SortedMap;
import java.util.TreeMap;
import java.util.TreeSet;

/**
 * Which workers hold which experts: per MoE layer, for every expert id (the shared expert included) the workers holding
 * a replica of it. An expert with several replicas has its tokens split between them.
 */
public record Placement(int workers, SortedMap<Integer, int[][]> layers) {

    public Placement {
        for (Map.Entry<Integer, int[][]> e : layers.entrySet()) {
            int[][] replicas = e.getValue();
            for (int x = 0; x < replicas.length; x++) {
                if (replicas[x].length == 0) {
                    throw new IllegalArgumentException("layer " + e.getKey() + " expert " + x + " has no worker");
                }
                for (int w : replicas[x]) {
                    if (w < 0 || w >= workers) {
                        throw new IllegalArgumentException("layer " + e.getKey() + " expert " + x + " placed on worker " + w + " of " + workers);
                    }
                }
            }
        }
    }

    /** Experts dealt round-robin, one replica each: where serving starts before any load was seen. */
    public static Placement roundRobin(int workers, SortedMap<Integer, Integer> expertsPerLayer) {
        SortedMap<Integer, int[][]> layers = new TreeMap<>();
        expertsPerLayer.forEach((layer, n) -> {
            int[][] r = new int[n][];
            for (int x = 0; x < n; x++) {
                r[x] = new int[] {(x + layer) % workers};
            }
            layers.put(layer, r);
        });
        return new Placement(workers, layers);
    }

    /** The workers holding {@code expert} of {@code layer}. */
    public int[] replicas(int layer, int expert) {
        int[][] r = layers.get(layer);
        if (r == null || expert < 0 || expert >= r.length) {
            throw new IllegalArgumentException("no placement for layer " + layer + " expert " + expert);
        }
        return r[expert];
    }

    /** What worker {@code w} must hold: {@code [layer, expert]} pairs in order. */
    public List<int[]> heldBy(int w) {
        List<int[]> out = new ArrayList<>();
        layers.forEach((layer, r) -> {
            for (int x = 0; x < r.length; x++) {
                if (Arrays.stream(r[x]).anyMatch(v -> v == w)) {
                    out.add(new int[] {layer, x});
                }
            }
        });
        return out;
    }

    /** Replicas worker {@code w} holds in all. */
    public int slots(int w) {
        return heldBy(w).size();
    }

    /** Both placements' holdings of worker {@code w} together (what it keeps while switching from one to the other). */
    public static List<int[]> union(Placement a, Placement b, int w) {
        TreeSet<Long> keys = new TreeSet<>();
        for (Placement p : List.of(a, b)) {
            for (int[] le : p.heldBy(w)) {
                keys.add(((long) le[0] << 32) | le[1]);
            }
        }
        List<int[]> out = new ArrayList<>();
        for (long k : keys) {
            out.add(new int[] {(int) (k >>> 32), (int) k});
        }
        return out;
    }
}
