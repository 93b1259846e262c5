package dev.deepserve.stack;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * Java's AOT cache (JEP 483/514: classes loaded and linked, method profiles) for each service JVM of the stack,
 * kept in {@code $DEEPSERVE_HOME/aot}. A service's first start records one ({@code -XX:AOTCacheOutput}: that run is the
 * training, the cache is written when the service stops); later starts use it ({@code -XX:AOTCache}). A cache is
 * used only with the jar, Java and options it was recorded with (a stamp beside it says which); anything else
 * records afresh. The JVM falls back to a plain start when a cache does not fit, so a cache never stops a service.
 * {@code DEEPSERVE_AOT=false} turns it off.
 */
final class AotCache {

    private final Path dir;
    private final boolean enabled;

    AotCache(Path dir, boolean enabled) {
        this.dir = dir;
        this.enabled = enabled;
    }

    /** Whether a JVM started with {@code jvmOptions} records its cache (which it writes as it exits). */
    static boolean records(List<String> jvmOptions) {
        return jvmOptions.stream().anyMatch(o -> o.startsWith("-XX:AOTCacheOutput="));
    }

    /** The options that make {@code service}'s JVM record or use its cache (none when off or the directory is unusable). */
    List<String> options(String service, Path jar, List<String> jvmOptions) {
        if (!enabled) {
            return List.of();
        }
        Path cache = dir.resolve(service + ".aot");
        Path stamp = dir.resolve(service + ".aot.stamp");
        try {
            dev.deepserve.internal.OwnerOnly.directory(dir);
            String expected = Files.size(jar) + " " + Files.getLastModifiedTime(jar).toMillis() + " " + Runtime.version() + " " + String.join(" ", jvmOptions);
            // the JVM's aot log speaks of optional optimizations it skips (a proxy class, a module flag): noise for a person
            if (Files.isRegularFile(cache) && Files.isRegularFile(stamp) && Files.readString(stamp).equals(expected)) {
                return List.of("-XX:AOTCache=" + cache, "-Xlog:aot*=off");
            }
            Files.deleteIfExists(cache);
            Files.writeString(stamp, expected);
            return List.of("-XX:AOTCacheOutput=" + cache, "-Xlog:aot*=off");
        } catch (IOException | RuntimeException e) {
            return List.of();
        }
    }
}
