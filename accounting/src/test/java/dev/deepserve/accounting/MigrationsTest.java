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
    void theNewestBillingMigrationIsFoundOnTheClassPath() throws Exception {
        String newest = Migrations.newest(getClass().getClassLoader(), "db/billing");
        int highest;
        try (var files = java.nio.file.Files.list(java.nio.file.Path.of("src/main/resources/db/billing"))) {
            highest = files.map(f -> f.getFileName().toString()).filter(n -> n.matches("V[0-9]+__.*\\.sql"))
                    .mapToInt(n -> Integer.parseInt(n.substring(1, n.indexOf("__")))).max().orElseThrow();
        }
        assertEquals(Integer.toString(highest), newest);
        assertEquals(null, Migrations.newest(getClass().getClassLoader(), "db/none-here"));
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
            assertEquals("10", Migrations.newest(loader, "db/x"), "numeric order, only the location's own files");
        }
    }

    @Test
    void aHistoryIsCurrentOnlyWhenItReachesTheNewestAndNothingFailed() {
        assertTrue(Migrations.current(List.of("1", "2", "10"), true, "10"));
        assertTrue(Migrations.current(List.of("1", "11"), true, "10"), "a newer replica migrated further");
        assertFalse(Migrations.current(List.of("1", "9"), true, "10"), "9 < 10 numerically");
        assertFalse(Migrations.current(List.of("1", "10"), false, "10"), "a failed migration: Flyway must say so");
        assertFalse(Migrations.current(List.of(), true, "1"), "a new schema");
        assertTrue(Migrations.current(List.of("1.10"), true, "1.9"));
        assertTrue(Migrations.current(List.of("2"), true, "2.0"));
        assertFalse(Migrations.current(List.of("not-a-version"), true, "1"));
    }

    @Test
    void flywayRunsExactlyWhenTheSchemaLacksAMigration() {
        AtomicInteger runs = new AtomicInteger();
        ClassLoader loader = getClass().getClassLoader();
        String newest = Migrations.newest(loader, "db/billing");
        Migrations.migrateUnlessCurrent(loader, "db/billing", new Migrations.History(List.of(newest), true), runs::incrementAndGet);
        assertEquals(0, runs.get());
        Migrations.migrateUnlessCurrent(loader, "db/billing", null, runs::incrementAndGet);
        assertEquals(1, runs.get(), "no history could be read");
        Migrations.migrateUnlessCurrent(loader, "db/billing", new Migrations.History(List.of("1"), true), runs::incrementAndGet);
        assertEquals(2, runs.get());
    }

    @Test
    void onlyAPlainSchemaNameGoesIntoTheQuery() {
        assertTrue(Migrations.historyQuery("gateway").contains("FROM gateway.flyway_schema_history"));
        assertThrows(IllegalArgumentException.class, () -> Migrations.historyQuery("x; DROP TABLE y"));
    }
}
