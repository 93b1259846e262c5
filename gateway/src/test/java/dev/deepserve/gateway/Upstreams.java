package dev.deepserve.gateway;

import dev.deepserve.embedded.MockUpstream;
import io.quarkus.test.common.QuarkusTestResourceLifecycleManager;

import java.net.ServerSocket;
import java.util.Map;

/**
 * Two scripted OpenAI-compatible providers for the upstream tests — {@code mock} (wants an API key) and
 * {@code backup} (the fallback for {@code mock/mock-reasoner}) — plus {@code dead}, a port nothing listens on.
 */
public class Upstreams implements QuarkusTestResourceLifecycleManager {

    static final String MOCK_KEY = "sk-upstream-0123456789abcdef";
    static MockUpstream mock;
    static MockUpstream backup;

    @Override
    public Map<String, String> start() {
        mock = MockUpstream.start();
        mock.expectedKey = MOCK_KEY;
        backup = MockUpstream.start();
        int dead;
        try (ServerSocket s = new ServerSocket(0)) {
            dead = s.getLocalPort();
        } catch (java.io.IOException e) {
            throw new IllegalStateException(e);
        }
        return Map.of("deepserve.upstreams", "mock=" + mock.baseUrl() + ",backup=" + backup.baseUrl() + ",dead=http://127.0.0.1:" + dead + "/v1",
                "DEEPSERVE_UPSTREAM_MOCK_API_KEY", MOCK_KEY,
                "deepserve.upstream-fallbacks", "mock/mock-reasoner=backup/mock-chat",
                "deepserve.proxy.breaker-failures", "5",
                "deepserve.upstream-allow-http-hosts", "127.0.0.1",
                "deepserve.admin-key", "admin-secret-for-tests-0123456789",
                "deepserve.max-streams-per-key", "3");
    }

    @Override
    public void stop() {
        if (mock != null) {
            mock.close();
        }
        if (backup != null) {
            backup.close();
        }
    }
}
