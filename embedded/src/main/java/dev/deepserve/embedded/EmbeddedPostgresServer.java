package dev.deepserve.embedded;

import io.zonky.test.db.postgres.embedded.EmbeddedPostgres;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.Duration;

/**
 * Embedded PostgreSQL from zonky's binaries, with a persistent data directory.
 *
 * <p>PostgreSQL refuses to run as root; when this JVM is root (containers, CI) zonky starts {@code initdb} and
 * {@code pg_ctl} under {@code unshare -U}, where they run as an unmapped user that still owns the root-owned data
 * directory. As a normal user they run as that user.
 */
public final class EmbeddedPostgresServer implements AutoCloseable {

    public static final String DATABASE = "deepserve";
    public static final String USER = "deepserve";
    public static final String PASSWORD = "deepserve";

    private final EmbeddedPostgres postgres;
    private final int port;

    private EmbeddedPostgresServer(EmbeddedPostgres postgres) {
        this.postgres = postgres;
        this.port = postgres.getPort();
    }

    /**
     * Starts PostgreSQL on {@code port} (0 = any free port) with its data in {@code dataDir}, creating the cluster on
     * first start and the {@code deepserve} database and role if missing.
     */
    public static EmbeddedPostgresServer start(Path dataDir, Path binariesDir, int port) throws IOException {
        return start(dataDir, binariesDir, port, true);
    }

    /**
     * As {@link #start(Path, Path, int)}; {@code stopAtExit} false leaves stopping it to the caller's {@link #close}:
     * a JVM's shutdown hooks run all at once, so a supervisor that must stop its services before their database
     * (the gateway returns its balance leases as it stops) cannot let the database's own hook race them.
     */
    public static EmbeddedPostgresServer start(Path dataDir, Path binariesDir, int port, boolean stopAtExit) throws IOException {
        return start(dataDir, binariesDir, port, stopAtExit, "127.0.0.1");
    }

    /**
     * As above, listening on {@code bind} (an IPv4 address; 0.0.0.0 for all) besides loopback, which the server's own
     * connections use.
     */
    public static EmbeddedPostgresServer start(Path dataDir, Path binariesDir, int port, boolean stopAtExit, String bind) throws IOException {
        Files.createDirectories(binariesDir);
        Files.createDirectories(dataDir.getParent());
        if (!Files.exists(dataDir)) {
            Files.createDirectory(dataDir, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------")));
        }
        EmbeddedPostgres pg = EmbeddedPostgres.builder()
                .setDataDirectory(dataDir)
                .setCleanDataDirectory(false)
                .setOverrideWorkingDirectory(binariesDir.toFile())
                .setPort(port)
                .setPGStartupWait(Duration.ofSeconds(60))
                .setServerConfig("listen_addresses", bind.equals("127.0.0.1") || bind.equals("0.0.0.0") ? bind : "127.0.0.1," + bind)
                .setServerConfig("max_connections", "200")
                .setServerConfig("unix_socket_directories", "")
                .setOutputRedirector(ProcessBuilder.Redirect.DISCARD)
                .setErrorRedirector(ProcessBuilder.Redirect.DISCARD)
                .setRegisterShutdownHook(stopAtExit)
                .start();
        EmbeddedPostgresServer server = new EmbeddedPostgresServer(pg);
        server.ensureDatabase();
        return server;
    }

    public int port() {
        return port;
    }

    public String jdbcUrl() {
        return "jdbc:postgresql://127.0.0.1:" + port + "/" + DATABASE;
    }

    /** URL form used by the Vert.x reactive PostgreSQL client. */
    public String reactiveUrl() {
        return "postgresql://127.0.0.1:" + port + "/" + DATABASE;
    }

    public Connection connect() throws SQLException {
        return DriverManager.getConnection(jdbcUrl(), USER, PASSWORD);
    }

    @Override
    public void close() {
        try {
            postgres.close();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private void ensureDatabase() throws IOException {
        String admin = "jdbc:postgresql://127.0.0.1:" + port + "/postgres?user=postgres";
        try (Connection c = DriverManager.getConnection(admin)) {
            try (ResultSet rs = c.createStatement().executeQuery("SELECT 1 FROM pg_roles WHERE rolname = '" + USER + "'")) {
                if (!rs.next()) {
                    c.createStatement().execute("CREATE ROLE " + USER + " LOGIN PASSWORD '" + PASSWORD + "'");
                }
            }
            try (ResultSet rs = c.createStatement().executeQuery("SELECT 1 FROM pg_database WHERE datname = '" + DATABASE + "'")) {
                if (!rs.next()) {
                    c.createStatement().execute("CREATE DATABASE " + DATABASE + " OWNER " + USER);
                }
            }
        } catch (SQLException e) {
            throw new IOException("embedded PostgreSQL started but the deepserve database could not be prepared: " + e.getMessage(), e);
        }
    }

}
