package dev.deepserve.model.ep;

import org.junit.jupiter.api.Test;

import java.util.Arrays;
import java.util.SortedMap;
import java.util.TreeMap;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * EPLB on skewed loads: hot experts (the shared expert included) get replicas on distinct workers while cold ones keep
 * one, every worker gets the same number of slots, and the max/mean worker load drops below round-robin's and under
 * 1.2. Layers are planned independently, one worker gets no replicas, and switching placements holds the union of both.
 */
class EplbTest {

    static SortedMap<Integer, long[]> load(long[]... layers) {
        SortedMap<Integer, long[]> m = new TreeMap<>();
        for (int i = 0; i < layers.length; i++) {
            m.put(i + 1, layers[i]);
        }
        return m;
    }

    @Test
    void hotExpertsGetReplicasAndTheWorkersEvenOut() {
        long[] skewed = {4000, 30, 20, 10, 10, 5, 5, 0, 2500}; // expert 8: the shared expert, every token uses it
        SortedMap<Integer, long[]> load = load(skewed);
        Placement plan = Eplb.plan(load, 3, 3);
        Placement naive = Placement.roundRobin(3, new TreeMap<>(java.util.Map.of(1, skewed.length)));
        assertTrue(plan.replicas(1, 0).length >= 2, "the hottest expert is replicated");
        assertTrue(plan.replicas(1, 8).length >= 2, "so is the shared expert");
        assertEquals(1, plan.replicas(1, 7).length, "a cold expert keeps one replica");
        for (int w = 0; w < 3; w++) {
            assertEquals(4, plan.slots(w), "every worker holds ceil((9 + 3) / 3) replicas");
        }
        for (int x = 0; x < skewed.length; x++) {
            int[] r = plan.replicas(1, x);
            assertEquals(r.length, Arrays.stream(r).distinct().count(), "replicas of one expert sit on different workers");
        }
        double before = Eplb.imbalance(naive, load);
        double after = Eplb.imbalance(plan, load);
        assertTrue(after < before && after < 1.2, "max/mean worker load " + before + " → " + after);
    }

    @Test
    void everyLayerIsPlannedOnItsOwnAndOneWorkerHoldsEverything() {
        SortedMap<Integer, long[]> load = load(new long[] {1, 2, 3, 4}, new long[] {9, 0, 0, 0});
        Placement plan = Eplb.plan(load, 2, 2);
        assertTrue(plan.replicas(2, 0).length == 2 && plan.replicas(1, 0).length == 1, "layer 2's hot expert is replicated, layer 1's is not");
        Placement single = Eplb.plan(load, 1, 5);
        assertEquals(8, single.slots(0), "no replicas with one worker: an expert never has two replicas on the same worker");
        assertThrows(IllegalArgumentException.class, () -> Eplb.plan(load, 0, 0));
    }

    @Test
    void switchingHoldsTheUnionOfBothPlacements() {
        SortedMap<Integer, long[]> load = load(new long[] {100, 0, 0, 0, 0, 0});
        Placement a = Placement.roundRobin(2, new TreeMap<>(java.util.Map.of(1, 6)));
        Placement b = Eplb.plan(load, 2, 1);
        for (int w = 0; w < 2; w++) {
            var union = Placement.union(a, b, w);
            for (int[] le : a.heldBy(w)) {
                assertTrue(union.stream().anyMatch(u -> Arrays.equals(u, le)));
            }
            for (int[] le : b.heldBy(w)) {
                assertTrue(union.stream().anyMatch(u -> Arrays.equals(u, le)));
            }
        }
    }
}
