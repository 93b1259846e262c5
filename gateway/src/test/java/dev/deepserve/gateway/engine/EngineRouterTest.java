package dev.deepserve.gateway.engine;

import org.junit.jupiter.api.Test;

import java.net.URI;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;

/**
 * Engine instance choice: a shared prompt prefix goes back to the instance that saw it, unless load beyond the slack
 * says otherwise; refusing instances sit out.
 */
class EngineRouterTest {

    static final URI A = URI.create("http://a:1");
    static final URI B = URI.create("http://b:1");

    static int[] prompt(int length, int seed) {
        int[] p = new int[length];
        for (int i = 0; i < length; i++) {
            p[i] = seed * 1000 + i;
        }
        return p;
    }

    static int[] withSuffix(int[] prefix, int extra, int seed) {
        int[] p = Arrays.copyOf(prefix, prefix.length + extra);
        for (int i = prefix.length; i < p.length; i++) {
            p[i] = seed * 7919 + i;
        }
        return p;
    }

    @Test
    void aSharedPrefixGoesBackToTheInstanceThatSawIt() {
        EngineRouter r = new EngineRouter(List.of(A, B), 4);
        int[] system = prompt(3 * 64, 1);
        EngineRouter.Instance first = r.pick("r1", withSuffix(system, 10, 1));
        // another conversation arrives while the first runs: it goes to the idle instance
        EngineRouter.Instance other = r.pick("r2", prompt(200, 2));
        assertNotEquals(first, other, "an unknown prompt goes to the least loaded instance");
        r.finished("r1");
        r.finished("r2");
        for (int i = 0; i < 5; i++) {
            assertSame(first, r.pick("s" + i, withSuffix(system, 30 + i, 10 + i)));
            r.finished("s" + i);
        }
    }

    @Test
    void loadBeyondTheSlackWinsOverAPrefixMatch() {
        EngineRouter r = new EngineRouter(List.of(A, B), 2);
        int[] system = prompt(128, 3);
        EngineRouter.Instance hot = r.pick("h0", withSuffix(system, 5, 0));
        for (int i = 1; i <= 2; i++) {
            assertSame(hot, r.pick("h" + i, withSuffix(system, 5, i)), "within the slack the prefix decides");
        }
        // hot now has 3 in flight, the other 0: beyond a slack of 2
        EngineRouter.Instance next = r.pick("h3", withSuffix(system, 5, 3));
        assertNotEquals(hot, next);
        assertEquals(1, next.inFlight.get());
        r.finished("h0");
        r.finished("h0");
        assertEquals(2, hot.inFlight.get(), "finishing twice counts once");
        assertNull(r.of("h0"));
        assertSame(next, r.of("h3"));
    }

    @Test
    void anInstanceThatRefusedSitsOut() {
        EngineRouter r = new EngineRouter(List.of(A, B), 8);
        EngineRouter.Instance a = r.pick("x", prompt(10, 5));
        r.sitOut(a);
        r.finished("x");
        for (int i = 0; i < 4; i++) {
            assertNotEquals(a, r.pick("y" + i, prompt(10, 5)));
        }
        EngineRouter single = new EngineRouter(List.of(A), 0);
        EngineRouter.Instance only = single.pick("z", prompt(3, 1));
        single.sitOut(only);
        assertSame(only, single.pick("z2", prompt(3, 1)), "with one instance there is nowhere else to go");
    }

    @Test
    void onlyWholeBlocksCount() {
        assertEquals(0, EngineRouter.chain(prompt(63, 1)).length);
        assertEquals(2, EngineRouter.chain(prompt(128, 1)).length);
        long[] a = EngineRouter.chain(prompt(192, 1));
        long[] b = EngineRouter.chain(withSuffix(prompt(128, 1), 64, 9));
        assertEquals(a[1], b[1]);
        assertNotEquals(a[2], b[2]);
    }
}
