package dev.deepserve.billing.config;

import io.smallrye.config.ConfigMapping;
import io.smallrye.config.WithDefault;

import java.util.Optional;

/** Billing settings; each key can be overridden by its env var (DEEPSERVE_ADMIN_KEY, ...). */
@ConfigMapping(prefix = "deepserve")
public interface BillingConfig {

    /** The admin key for /admin and the console. Without it the admin API answers 503. */
    Optional<String> adminKey();

    /** Most rows a usage query or CSV export returns. */
    @WithDefault("100000")
    int maxUsageRows();
}
