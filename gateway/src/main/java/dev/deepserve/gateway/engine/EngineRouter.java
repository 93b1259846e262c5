package dev.deepserve.gateway.engine;

import java.net.URI;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Picks the engine instance for a generation when there are several (DEEPSERVE_DECODE_URL with more than one URL:
 * prefill instances when disaggregated, decode instances otherwise). An instance that already holds a request's
 * prompt prefix in its prefix cache serves it cheapest, so the router remembers which whole 64-token prompt blocks
 * (hash chains, as the prefix cache keys them) each instance saw lately and prefers the longest match — among the
 * instances whose load (requests in flight) is within {@code slack} of the least loaded one, so one hot prefix
 * cannot pile everything onto one instance. An instance that refused or could not be reached sits out briefly.
 */
public final class EngineRouter {

    static final int BLOCK = 64;
    private static final int REMEMBERED_BLOCKS = 1 << 16;
    private static final long SIT_OUT = TimeUnit.SECONDS.toNanos(2);

    /** One engine instance as the router sees it. */
    public static final class Instance {
        final URI base;
        final AtomicInteger inFlight = new AtomicInteger();
        volatile long downUntil;
        private final Map<Long, Boolean> blocks = new LinkedHashMap<>(1024, 0.75f, true) {
            @Override
            protected boolean removeEldestEntry(Map.Entry<Long, Boolean> eldest) {
                return size() > REMEMBERED_BLOCKS;
            }
        };

        Instance(URI base) {
            this.base = base;
        }

        public URI base() {
            return base;
        }

        synchronized int matched(long[] chain) {
            int n = 0;
            while (n < chain.length && blocks.containsKey(chain[n])) {
                n++;
            }
            return n;
        }

        synchronized void remember(long[] chain) {
            for (long h : chain) {
                blocks.put(h, Boolean.TRUE);
            }
        }
    }

    private final List<Instance> instances = new ArrayList<>();
    private final Map<String, Instance> byRequest = new ConcurrentHashMap<>();
    private final int slack;

    public EngineRouter(List<URI> bases, int slack) {
        if (bases.isEmpty()) {
            throw new IllegalArgumentException("at least one engine URL is needed");
        }
        bases.forEach(b -> instances.add(new Instance(b)));
        this.slack = slack;
    }

    /** Hash chain of the prompt's whole blocks: block k's key covers every token up to the end of block k. */
    static long[] chain(int[] prompt) {
        long[] out = new long[prompt.length / BLOCK];
        long h = 0x9E3779B97F4A7C15L;
        for (int b = 0; b < out.length; b++) {
            for (int i = b * BLOCK; i < (b + 1) * BLOCK; i++) {
                h = mix(h ^ prompt[i]);
            }
            out[b] = h;
        }
        return out;
    }

    private static long mix(long z) {
        z = (z ^ (z >>> 33)) * 0xff51afd7ed558ccdL;
        z = (z ^ (z >>> 33)) * 0xc4ceb9fe1a85ec53L;
        return z ^ (z >>> 33);
    }

    /** Chooses the instance for this request and counts it in flight there until {@link #finished}. */
    public Instance pick(String requestId, int[] prompt) {
        Instance chosen;
        if (instances.size() == 1) {
            chosen = instances.getFirst();
        } else {
            long now = System.nanoTime();
            long[] chain = chain(prompt);
            List<Instance> up = instances.stream().filter(i -> i.downUntil - now <= 0).toList();
            List<Instance> pool = up.isEmpty() ? instances : up;
            int least = pool.stream().mapToInt(i -> i.inFlight.get()).min().orElse(0);
            chosen = null;
            int best = -1;
            for (Instance i : pool) {
                int load = i.inFlight.get();
                if (load > least + slack) {
                    continue;
                }
                int m = i.matched(chain);
                if (m > best || m == best && load < chosen.inFlight.get()) {
                    best = m;
                    chosen = i;
                }
            }
            chosen.remember(chain);
        }
        chosen.inFlight.incrementAndGet();
        Instance previous = byRequest.put(requestId, chosen);
        if (previous != null) {
            previous.inFlight.decrementAndGet();
        }
        return chosen;
    }

    /** The instance that holds this request, if it is in flight. */
    public Instance of(String requestId) {
        return byRequest.get(requestId);
    }

    public void finished(String requestId) {
        Instance i = byRequest.remove(requestId);
        if (i != null) {
            i.inFlight.decrementAndGet();
        }
    }

    /** The instance refused or could not be reached: others get the next requests for a while. */
    public void sitOut(Instance i) {
        i.downUntil = System.nanoTime() + SIT_OUT;
    }

    public List<Instance> instances() {
        return List.copyOf(instances);
    }
}
