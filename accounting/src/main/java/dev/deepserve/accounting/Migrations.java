package dev.deepserve.accounting;

import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Row;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.JarURLConnection;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.jar.JarEntry;
import java.util.jar.JarFile;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * The Flyway migrations a service carries ({@code V<version>__<name>.sql} under a classpath location), and whether a
 * schema's history already holds every one of them: a start whose schema is current skips Flyway, which costs a
 * gateway or billing replica 0.3–0.6 s of its start on a 2-core machine even when there is nothing to migrate.
 * Flyway still runs for anything else (a new database, an upgrade, a migration added between applied ones, a failed
 * one), and says what is wrong; what the skip gives up is Flyway's check that applied files were not edited since.
 * Shared by the gateway and billing, each of which migrates its own schema.
 */
public final class Migrations {

    /** A versioned migration's file name; Flyway reads {@code _} in a version as {@code .}. */
    private static final Pattern VERSIONED = Pattern.compile("V([0-9]+(?:[._][0-9]+)*)__[^/]*\\.sql");

    private Migrations() {
    }

    /**
     * The versions of the versioned migrations at {@code location} (Flyway's setting: {@code db/gateway} or
     * {@code classpath:db/gateway}), oldest first; none for a location elsewhere or several (then Flyway decides).
     */
    public static List<String> carried(ClassLoader loader, String location) {
        List<String> versions = new ArrayList<>();
        String path = location.startsWith("classpath:") ? location.substring("classpath:".length()) : location;
        if (path.contains(",") || path.contains(":")) {
            return versions;
        }
        for (String name : fileNames(loader, path)) {
            Matcher m = VERSIONED.matcher(name);
            if (m.matches()) {
                versions.add(m.group(1).replace('_', '.'));
            }
        }
        versions.sort(Migrations::compare);
        return versions;
    }

    /**
     * Whether a schema whose history holds {@code applied} (the versions of its versioned migrations) has every one of
     * {@code carried}: never when a migration failed, and never when the build carries none (its migrations were not
     * found: Flyway decides). Versions the build does not carry (a newer replica migrated further) do not matter.
     */
    public static boolean current(Collection<String> applied, boolean allSucceeded, List<String> carried) {
        if (!allSucceeded || carried.isEmpty()) {
            return false;
        }
        for (String c : carried) {
            if (applied.stream().noneMatch(v -> v != null && isVersion(v) && compare(v, c) == 0)) {
                return false;
            }
        }
        return true;
    }

    /** What a schema's Flyway history says: the versions of its versioned migrations, and whether all succeeded. */
    public record History(List<String> versions, boolean allSucceeded) {
    }

    /**
     * {@code schema}'s {@link History}, read over {@code pool} (blocking, up to 30 s), or null when it cannot be read: no
     * history table yet (a new database) or PostgreSQL not reachable, where Flyway decides and says why it cannot.
     */
    public static History history(Pool pool, String schema) {
        try {
            Row row = pool.query(historyQuery(schema)).execute().await().atMost(Duration.ofSeconds(30)).iterator().next();
            return new History(Arrays.asList(row.getArrayOfStrings(1)), row.getBoolean(0));
        } catch (RuntimeException e) {
            System.getLogger(Migrations.class.getName()).log(System.Logger.Level.DEBUG, "the " + schema + " schema's migration history cannot be read: " + e.getMessage());
            return null;
        }
    }

    /** The query that reads {@code schema}'s {@link History}: one row, whether all succeeded and the versions as text[]. */
    public static String historyQuery(String schema) {
        if (!schema.matches("[a-z_][a-z0-9_]*")) {
            throw new IllegalArgumentException("not a schema name: " + schema);
        }
        return "SELECT coalesce(bool_and(success), true), coalesce(array_agg(version), '{}') FROM " + schema
                + ".flyway_schema_history WHERE version IS NOT NULL";
    }

    /**
     * Runs {@code migrate} unless {@code history} (null when it could not be read: a new database, or none reachable)
     * already holds every migration at {@code location}; says which it did, for the start's log.
     */
    public static String migrateUnlessCurrent(ClassLoader loader, String location, History history, Runnable migrate) {
        List<String> carried = carried(loader, location);
        String newest = carried.isEmpty() ? "none found" : carried.getLast();
        if (history != null && current(history.versions(), history.allSucceeded(), carried)) {
            return "has every migration this build carries (" + carried.size() + ", up to " + newest + "): Flyway skipped";
        }
        migrate.run();
        return "brought up to date by Flyway (this build's newest migration: " + newest + ")";
    }

    /** Orders dotted versions numerically, part by part ({@code 1.10} after {@code 1.9}; {@code 2} equals {@code 2.0}). */
    static int compare(String a, String b) {
        String[] x = a.split("\\.");
        String[] y = b.split("\\.");
        for (int i = 0; i < Math.max(x.length, y.length); i++) {
            java.math.BigInteger p = i < x.length ? new java.math.BigInteger(x[i]) : java.math.BigInteger.ZERO;
            java.math.BigInteger q = i < y.length ? new java.math.BigInteger(y[i]) : java.math.BigInteger.ZERO;
            int c = p.compareTo(q);
            if (c != 0) {
                return c;
            }
        }
        return 0;
    }

    private static boolean isVersion(String v) {
        return v.matches("[0-9]+(\\.[0-9]+)*");
    }

    /** The file names directly under {@code location}, from every directory or jar on the class path that has it. */
    private static List<String> fileNames(ClassLoader loader, String location) {
        List<String> names = new ArrayList<>();
        try {
            for (URL url : Collections.list(loader.getResources(location))) {
                switch (url.getProtocol()) {
                    case "file" -> {
                        try (Stream<Path> files = Files.list(Path.of(url.toURI()))) {
                            files.forEach(f -> names.add(f.getFileName().toString()));
                        }
                    }
                    case "jar" -> {
                        JarURLConnection connection = (JarURLConnection) url.openConnection();
                        connection.setUseCaches(false);
                        String prefix = location.endsWith("/") ? location : location + "/";
                        try (JarFile jar = connection.getJarFile()) {
                            for (JarEntry e : Collections.list(jar.entries())) {
                                String n = e.getName();
                                if (n.startsWith(prefix) && n.length() > prefix.length() && n.indexOf('/', prefix.length()) < 0) {
                                    names.add(n.substring(prefix.length()));
                                }
                            }
                        }
                    }
                    default -> throw new IllegalStateException("cannot list the migrations at " + url);
                }
            }
        } catch (IOException e) {
            throw new UncheckedIOException("cannot list the migrations under " + location + ": " + e.getMessage(), e);
        } catch (URISyntaxException e) {
            throw new IllegalStateException("cannot list the migrations under " + location + ": " + e.getMessage(), e);
        }
        return names;
    }
}
