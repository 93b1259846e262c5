package dev.deepserve.embedded;

import io.quarkus.test.common.QuarkusTestResourceLifecycleManager;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Path;
import java.util.Map;

/**
 * Quarkus test resource: a real PostgreSQL (embedded, fresh data directory under target/) for {@code @QuarkusTest}s.
 * Use with {@code @QuarkusTestResource(EmbeddedPostgresResource.class)}.
 */
public class EmbeddedPostgresResource implements QuarkusTestResourceLifecycleManager {

    private EmbeddedPostgresServer server;

    @Override
    public Map<String, String> start() {
        try {
            Path target = Path.of("target").toAbsolutePath();
            server = EmbeddedPostgresServer.start(target.resolve("pg-data-" + ProcessHandle.current().pid() + "-" + System.nanoTime()),
                    target.resolve("pg-bin"), 0);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return Map.of(
                "quarkus.datasource.reactive.url", server.reactiveUrl(),
                "quarkus.datasource.jdbc.url", server.jdbcUrl(),
                "quarkus.datasource.username", EmbeddedPostgresServer.USER,
                "quarkus.datasource.password", server.password());
    }

    @Override
    public void stop() {
        if (server != null) {
            server.close();
        }
    }
}
