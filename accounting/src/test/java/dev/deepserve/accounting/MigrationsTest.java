package dev.deepserve.accounting;

import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** When a start may skip Flyway: the newest migration a build carries, and whether a schema's history reaches it. */
class MigrationsTest {

    @Test
    void theBillingMigrationsAreFoundOnTheClassPath() throws Exception {
        List<String> carried = Migrations.carried(getClass().getClassLoader(), "db/billing");
        List<String> files;
        try (var listed = java.nio.file.Files.list(java.nio.file.Path.of("src/main/resources/db/billing"))) {
            files = listed.map(f -> f.getFileName().toString()).filter(n -> n.matches("V[0-9]+__.*\\.sql"))
                    .map(n -> Integer.parseInt(n.substring(1, n.indexOf("__")))).sorted().map(String::valueOf).toList();
        }
        assertEquals(files, carried);
        assertEquals(carried, Migrations.carried(getClass().getClassLoader(), "classpath:db/billing"), "Flyway's own spelling");
        assertEquals(List.of(), Migrations.carried(getClass().getClassLoader(), "db/none-here"));
        assertEquals(List.of(), Migrations.carried(getClass().getClassLoader(), "filesystem:/srv/db"), "not on the class path: Flyway decides");
        assertEquals(List.of(), Migrations.carried(getClass().getClassLoader(), "db/billing,db/other"), "several: Flyway decides");
    }

    @Test
    void theNewestMigrationIsFoundInAJar(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
        java.nio.file.Path jar = dir.resolve("m.jar");
        try (var out = new java.util.jar.JarOutputStream(java.nio.file.Files.newOutputStream(jar))) {
            for (String name : List.of("db/x/", "db/x/V2__b.sql", "db/x/V10__c.sql", "db/x/V9_1__d.sql", "db/x/R__view.sql", "db/x/sub/V99__deeper.sql", "db/xy/V50__other.sql")) {
                out.putNextEntry(new java.util.jar.JarEntry(name));
                out.closeEntry();
            }
        }
        try (var loader = new java.net.URLClassLoader(new java.net.URL[] {jar.toUri().toURL()}, null)) {
            assertEquals(List.of("2", "9.1", "10"), Migrations.carried(loader, "db/x"), "numeric order, only the location's own versioned files");
        }
    }

    @Test
    void aHistoryIsCurrentOnlyWhenItHoldsEveryCarriedMigrationAndNothingFailed() {
        assertTrue(Migrations.current(List.of("1", "2", "10"), true, List.of("1", "2", "10")));
        assertTrue(Migrations.current(List.of("1", "2", "11"), true, List.of("1", "2")), "a newer replica migrated further");
        assertFalse(Migrations.current(List.of("1", "10"), true, List.of("1", "9", "10")), "9 was added between applied ones: Flyway must say so");
        assertFalse(Migrations.current(List.of("1", "10"), false, List.of("1", "10")), "a failed migration: Flyway must say so");
        assertFalse(Migrations.current(List.of(), true, List.of("1")), "a new schema");
        assertFalse(Migrations.current(List.of("1"), true, List.of()), "no migrations found in the build: Flyway decides");
        assertTrue(Migrations.current(List.of("2"), true, List.of("2.0")));
        assertFalse(Migrations.current(List.of("not-a-version"), true, List.of("1")));
    }

    @Test
    void flywayRunsExactlyWhenTheSchemaLacksAMigration() {
        AtomicInteger runs = new AtomicInteger();
        ClassLoader loader = getClass().getClassLoader();
        List<String> all = Migrations.carried(loader, "db/billing");
        Migrations.migrateUnlessCurrent(loader, "db/billing", new Migrations.History(all, true), runs::incrementAndGet);
        assertEquals(0, runs.get());
        Migrations.migrateUnlessCurrent(loader, "db/billing", null, runs::incrementAndGet);
        assertEquals(1, runs.get(), "no history could be read");
        Migrations.migrateUnlessCurrent(loader, "db/billing", new Migrations.History(all.subList(0, all.size() - 1), true), runs::incrementAndGet);
        assertEquals(2, runs.get(), "an upgrade");
    }

    @Test
    void onlyAPlainSchemaNameGoesIntoTheQuery() {
        assertTrue(Migrations.historyQuery("gateway").contains("FROM gateway.flyway_schema_history"));
        assertThrows(IllegalArgumentException.class, () -> Migrations.historyQuery("x; DROP TABLE y"));
    }
}
