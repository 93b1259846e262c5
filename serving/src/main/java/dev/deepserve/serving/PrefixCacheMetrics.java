package dev.deepserve.serving;

import dev.deepserve.model.engine.PrefixCache;
import io.micrometer.core.instrument.FunctionCounter;
import io.micrometer.core.instrument.Gauge;
import io.micrometer.core.instrument.MeterRegistry;

/** The prefix cache's gauges and counters, the same on prefill and decode instances: its memory and its disk tier. */
public final class PrefixCacheMetrics {

    private PrefixCacheMetrics() {
    }

    public static void register(MeterRegistry registry, PrefixCache prefix) {
        Gauge.builder("deepserve.prefix.cache.bytes", prefix, PrefixCache::usedBytes).description("memory held by the prefix cache").register(registry);
        Gauge.builder("deepserve.prefix.cache.disk.bytes", prefix, p -> p.disk() == null ? 0 : p.disk().usedBytes())
                .description("disk held by the prefix cache's disk tier").register(registry);
        FunctionCounter.builder("deepserve.prefix.cache.disk.blocks", prefix, p -> p.disk() == null ? 0 : p.disk().hits()).tag("outcome", "read")
                .description("prefix blocks served from the disk tier").register(registry);
        FunctionCounter.builder("deepserve.prefix.cache.disk.blocks", prefix, p -> p.disk() == null ? 0 : p.disk().dropped()).tag("outcome", "dropped")
                .description("damaged or mismatched disk blocks deleted instead of served").register(registry);
        FunctionCounter.builder("deepserve.prefix.cache.disk.blocks", prefix, p -> p.disk() == null ? 0 : p.disk().skipped()).tag("outcome", "skipped")
                .description("evicted blocks not written (writer behind, disk short of space)").register(registry);
    }
}
