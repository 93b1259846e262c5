package dev.deepserve.gateway;

import dev.deepserve.embedded.EmbeddedPostgresResource;
import org.flywaydb.core.Flyway;

import java.util.Map;

/**
 * Embedded PostgreSQL with billing's schema applied (accounts, keys, prices), as the billing service would have
 * left it: the gateway reads and reserves there, and migrates only its own schema.
 */
public class BillingSchema extends EmbeddedPostgresResource {

    @Override
    public Map<String, String> start() {
        Map<String, String> config = super.start();
        Flyway.configure().dataSource(config.get("quarkus.datasource.jdbc.url"), config.get("quarkus.datasource.username"),
                        config.get("quarkus.datasource.password"))
                .schemas("billing").locations("classpath:db/billing").load().migrate();
        return config;
    }
}
