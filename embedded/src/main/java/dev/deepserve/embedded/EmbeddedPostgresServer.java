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
 *
 * <p>Every role needs a password (scram-sha-256): {@code pg_hba.conf} has no {@code trust} line. initdb makes a cluster
 * that trusts loopback; on the first start the superuser and the {@code deepserve} role get generated passwords (one
 * transaction), kept owner-only in the data directory ({@value #CREDENTIALS}), then {@code pg_hba.conf} is replaced by
 * password-only lines and reloaded, this method waits until a password-less login is refused and ends any other
 * session — all before it returns, so before any service can connect. Later starts write the same lines before the
 * server starts. A first start cut short anywhere is finished by the next one: until the credentials file exists the
 * cluster still trusts loopback and is secured again; once it exists, its passwords are the ones set.
 */
public final class EmbeddedPostgresServer implements AutoCloseable {

    public static final String DATABASE = "deepserve";
    public static final String USER = "deepserve";
    /** The passwords' file in the data directory (0600): the superuser's on the first line, {@link #USER}'s on the second. */
    static final String CREDENTIALS = "deepserve-credentials";

    private final EmbeddedPostgres postgres;
    private final int port;
    private final Credentials credentials;

    /** The superuser's password and the {@code deepserve} role's. */
    record Credentials(String superuser, String app) {
        static Credentials generate() {
            return new Credentials(random(), random());
        }

        private static String random() {
            byte[] bytes = new byte[24];
            new java.security.SecureRandom().nextBytes(bytes);
            return java.util.HexFormat.of().formatHex(bytes);
        }

        /** The kept credentials of a secured cluster, or null before its first start finished setting them. */
        static Credentials read(Path dataDir) throws IOException {
            Path file = dataDir.resolve(CREDENTIALS);
            if (Files.isRegularFile(file)) {
                java.util.List<String> lines = Files.readAllLines(file);
                if (lines.size() >= 2) {
                    return new Credentials(lines.get(0).strip(), lines.get(1).strip());
                }
            }
            return null;
        }
    }

    private EmbeddedPostgresServer(EmbeddedPostgres postgres, Credentials credentials) {
        this.postgres = postgres;
        this.port = postgres.getPort();
        this.credentials = credentials;
    }

    /** The {@link #USER} role's password (generated on the first start, the same afterwards). */
    public String password() {
        return credentials.app();
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
        Credentials known = Credentials.read(dataDir);
        EmbeddedPostgres.Builder builder = EmbeddedPostgres.builder();
        if (known != null) {
            // a secured cluster: password-only lines before it starts, and zonky's own readiness check logs in with one
            builder.setDataDirectoryCustomizer(dir -> passwordsOnly(dir.toPath(), bind))
                    .setConnectConfig("password", known.superuser());
        }
        EmbeddedPostgres pg = builder
                .setDataDirectory(dataDir)
                .setCleanDataDirectory(false)
                .setOverrideWorkingDirectory(binariesDir.toFile())
                .setPort(port)
                .setPGStartupWait(Duration.ofSeconds(60))
                .setServerConfig("listen_addresses", bind.equals("127.0.0.1") || bind.equals("0.0.0.0") ? bind : "127.0.0.1," + bind)
                .setServerConfig("max_connections", "200")
                .setServerConfig("password_encryption", "scram-sha-256")
                .setServerConfig("unix_socket_directories", "")
                .setOutputRedirector(ProcessBuilder.Redirect.DISCARD)
                .setErrorRedirector(ProcessBuilder.Redirect.DISCARD)
                .setRegisterShutdownHook(stopAtExit)
                .start();
        try {
            Credentials credentials = known != null ? known : secure(pg.getPort(), dataDir, bind);
            EmbeddedPostgresServer server = new EmbeddedPostgresServer(pg, credentials);
            server.ensureDatabase();
            return server;
        } catch (IOException | RuntimeException e) {
            pg.close();
            throw e;
        }
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
        return DriverManager.getConnection(jdbcUrl(), USER, password());
    }

    /**
     * The first start of a cluster initdb left trusting loopback: passwords for the superuser and {@link #USER} (created
     * here if missing), kept first in a pending file, then the password-only {@code pg_hba.conf}, reloaded; the pending
     * file becomes the kept one last, so a start cut short anywhere still finds the passwords it set.
     */
    private static Credentials secure(int port, Path dataDir, String bind) throws IOException {
        Credentials c = Credentials.generate();
        String url = "jdbc:postgresql://127.0.0.1:" + port + "/postgres";
        try (Connection admin = DriverManager.getConnection(url + "?user=postgres")) {
            // both passwords in one transaction (the passwords are hex: nothing to quote)
            admin.setAutoCommit(false);
            admin.createStatement().execute("ALTER ROLE postgres PASSWORD '" + c.superuser() + "'");
            try (ResultSet rs = admin.createStatement().executeQuery("SELECT 1 FROM pg_roles WHERE rolname = '" + USER + "'")) {
                admin.createStatement().execute((rs.next() ? "ALTER ROLE " : "CREATE ROLE ") + USER + " LOGIN PASSWORD '" + c.app() + "'");
            }
            admin.commit();
            admin.setAutoCommit(true);
            // kept before the lines change: from here on every start knows the passwords it must use
            Path pending = dataDir.resolve(CREDENTIALS + ".new");
            Files.deleteIfExists(pending);
            try (var out = Files.newBufferedWriter(Files.createFile(pending,
                    PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------"))))) {
                out.write(c.superuser() + "\n" + c.app() + "\n");
            }
            Files.move(pending, dataDir.resolve(CREDENTIALS), java.nio.file.StandardCopyOption.ATOMIC_MOVE);
            passwordsOnly(dataDir, bind);
            admin.createStatement().execute("SELECT pg_reload_conf()");
            // the reload is a signal: wait until the server refuses a password-less login, then end every other
            // session that a trusting moment may have let in
            long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
            while (trusts(url)) {
                if (System.nanoTime() > deadline) {
                    throw new IOException("embedded PostgreSQL still accepts logins without a password after its reload");
                }
                Thread.sleep(20);
            }
            admin.createStatement().execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'");
        } catch (SQLException e) {
            throw new IOException("embedded PostgreSQL started but its roles could not be given passwords: " + e.getMessage(), e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while securing the embedded PostgreSQL", e);
        }
        return c;
    }

    /** Whether the server lets the superuser in without a password. */
    private static boolean trusts(String url) {
        try (Connection c = DriverManager.getConnection(url + "?user=postgres")) {
            return true;
        } catch (SQLException refused) {
            return false;
        }
    }

    /** {@code pg_hba.conf} with password (scram-sha-256) lines only: loopback, and every address when bound beyond it. */
    static void passwordsOnly(Path dataDir, String bind) {
        StringBuilder hba = new StringBuilder("# written by deepserve at every start: every connection needs a password; no trust lines\n")
                .append("host all all 127.0.0.1/32 scram-sha-256\n")
                .append("host all all ::1/128 scram-sha-256\n");
        if (!bind.equals("127.0.0.1")) {
            // the superuser stays a loopback-only role
            hba.append("host all postgres 0.0.0.0/0 reject\n");
            hba.append("host all all 0.0.0.0/0 scram-sha-256\n");
        }
        try {
            Files.writeString(dataDir.resolve("pg_hba.conf"), hba.toString());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot write " + dataDir.resolve("pg_hba.conf"), e);
        }
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
        String admin = "jdbc:postgresql://127.0.0.1:" + port + "/postgres";
        try (Connection c = DriverManager.getConnection(admin, "postgres", credentials.superuser())) {
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
