package dev.deepserve.accounting;

import io.quarkus.runtime.StartupEvent;
import io.vertx.mutiny.sqlclient.Pool;
import jakarta.annotation.Priority;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;
import jakarta.enterprise.inject.Instance;
import org.eclipse.microprofile.config.inject.ConfigProperty;
import org.flywaydb.core.Flyway;

/**
 * Brings a service's schema (the gateway's or billing's: Flyway's own {@code quarkus.flyway.schemas} and
 * {@code locations}, with {@code migrate-at-start} off) to this build's migrations before anything else at start uses
 * it: Flyway runs only when the schema lacks one ({@link Migrations}), since running it on a current schema costs each
 * replica's start 0.3–0.6 s on a 2-core machine. Replicas that start together on a new database are serialized by
 * Flyway's lock. Observers that need the schema current run after this one ({@link #PRIORITY} + 1 or later).
 */
@ApplicationScoped
public class SchemaAtStart {

    public static final int PRIORITY = 1;

    @ConfigProperty(name = "quarkus.flyway.schemas")
    String schema;
    @ConfigProperty(name = "quarkus.flyway.locations")
    String location;

    void migrate(@Observes @Priority(PRIORITY) StartupEvent ev, Pool pool, Instance<Flyway> flyway) {
        String done = Migrations.migrateUnlessCurrent(SchemaAtStart.class.getClassLoader(), location, Migrations.history(pool, schema),
                () -> flyway.get().migrate());
        System.getLogger(SchemaAtStart.class.getName()).log(System.Logger.Level.INFO, "schema " + schema + " " + done);
    }
}
