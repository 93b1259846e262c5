package dev.deepserve.billing.api;

import dev.deepserve.accounting.ApiKeys;
import dev.deepserve.billing.config.BillingConfig;
import jakarta.ws.rs.container.ContainerRequestContext;
import jakarta.ws.rs.core.Response;
import org.jboss.resteasy.reactive.server.ServerRequestFilter;

/** Every /admin request must carry the admin key as a bearer token; user API keys are never accepted here. */
public class AdminAuth {

    private final BillingConfig config;

    AdminAuth(BillingConfig config) {
        this.config = config;
    }

    @ServerRequestFilter
    public Response check(ContainerRequestContext request) {
        if (!request.getUriInfo().getPath().startsWith("/admin")) {
            return null;
        }
        if (config.adminKey().isEmpty() || config.adminKey().get().isBlank()) {
            return ApiError.response(503, "service_unavailable", "the admin API is disabled: set DEEPSERVE_ADMIN_KEY");
        }
        String header = request.getHeaderString("Authorization");
        String token = header != null && header.startsWith("Bearer ") ? header.substring(7).trim() : null;
        if (!ApiKeys.sameSecret(token, config.adminKey().get())) {
            return ApiError.response(401, "authentication_error", token == null
                    ? "missing admin key: send Authorization: Bearer <admin key>" : "invalid admin key");
        }
        return null;
    }
}
