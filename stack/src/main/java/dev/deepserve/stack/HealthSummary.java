package dev.deepserve.stack;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/** Turns a SmallRye Health JSON answer into the one line a person needs: which checks are down and why. */
final class HealthSummary {

    private static final ObjectMapper JSON = new ObjectMapper();

    private HealthSummary() {
    }

    static String reasons(ServiceProcess.Readiness readiness) {
        if (readiness == null) {
            return "not probed yet";
        }
        if (readiness.status() < 0) {
            return readiness.body();
        }
        try {
            JsonNode root = JSON.readTree(readiness.body());
            List<String> down = new ArrayList<>();
            for (JsonNode check : root.path("checks")) {
                if (!"UP".equals(check.path("status").asText())) {
                    StringBuilder line = new StringBuilder(check.path("name").asText());
                    JsonNode data = check.path("data");
                    if (data.has("reason")) {
                        line.append(": ").append(data.get("reason").asText());
                    } else {
                        for (Map.Entry<String, JsonNode> e : data.properties()) {
                            if (!"UP".equals(e.getValue().asText())) {
                                line.append(" [").append(e.getKey()).append(": ").append(e.getValue().asText()).append(']');
                            }
                        }
                    }
                    down.add(line.toString());
                }
            }
            return down.isEmpty() ? "HTTP " + readiness.status() : String.join("; ", down);
        } catch (Exception e) {
            return "HTTP " + readiness.status();
        }
    }
}
