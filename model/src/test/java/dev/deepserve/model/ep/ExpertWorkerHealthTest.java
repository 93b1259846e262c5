package dev.deepserve.model.ep;

import org.junit.jupiter.api.Test;

import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * An expert worker's health port answers the services' probe paths, {@code /q/health/live} and {@code /q/health/ready},
 * with 200 and status UP.
 */
class ExpertWorkerHealthTest {

    @Test
    void theHealthPortAnswersTheProbesTheServicesAnswer() throws Exception {
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        ExpertWorker.health("127.0.0.1", port);
        HttpClient http = HttpClient.newHttpClient();
        for (String path : new String[] {"/q/health/live", "/q/health/ready"}) {
            HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path)).build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(200, r.statusCode());
            assertTrue(r.body().contains("\"status\":\"UP\""), r.body());
        }
    }
}
