package dev.deepserve.images;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * The tokenizer-service image, built the way {@code -Pimages} builds every image: a docker-save archive with the
 * right entrypoint, user, port and layers, with an AOT cache trained by a run of the whole stack; reproducible (same
 * inputs, same digests); and it really runs — its layers unpacked into a root file system and the entrypoint started
 * there as the image's user (chroot in a private mount and PID namespace with /proc and /dev, as a container runtime
 * would), answering health and tokenize requests, its own classes loaded from the AOT cache.
 * The run needs root (CI has it); elsewhere that one test is skipped saying so.
 */
class ImagesTest {

    static final ObjectMapper JSON = new ObjectMapper();
    static final Path ROOT = Path.of("..").toAbsolutePath().normalize();

    @TempDir
    static Path tmp;
    static Images.Spec spec;
    static Path tar;
    static Path unpacked;
    static JsonNode manifest;
    static JsonNode config;

    @BeforeAll
    static void build() throws Exception {
        spec = Images.specs(ROOT).stream().filter(s -> s.name().equals("tokenizer-service")).findFirst().orElseThrow();
        // the AOT cache's training runs the whole stack: every service and the stack launcher must be packaged
        boolean packaged = Files.isRegularFile(ROOT.resolve("stack/target/deepserve-stack.jar"))
                && Images.specs(ROOT).stream().allMatch(s -> Files.isDirectory(s.appDir()) && (s.name().equals("cli") || Files.isRegularFile(s.appDir().resolve("quarkus-run.jar"))));
        if (!packaged) {
            if ("true".equals(System.getenv("CI"))) {
                fail("the services and the stack were not packaged before the images module");
            }
            assumeTrue(false, "the services are not packaged (./mvnw -B package -DskipTests)");
        }
        tar = Images.build(List.of(spec), Path.of(System.getProperty("java.home")), tmp.resolve("out"), "localhost/deepserve", "test", false, ROOT).get(0);
        unpacked = Files.createDirectories(tmp.resolve("archive"));
        BaseRoot.run(List.of("tar", "-xf", tar.toString(), "-C", unpacked.toString()), "tar");
        manifest = JSON.readTree(unpacked.resolve("manifest.json").toFile()).get(0);
        config = JSON.readTree(unpacked.resolve(manifest.get("Config").asText()).toFile()).get("config");
    }

    static Path rootfs(String name) throws IOException, InterruptedException {
        Path root = Files.createDirectories(tmp.resolve(name));
        for (JsonNode layer : manifest.get("Layers")) {
            BaseRoot.run(List.of("tar", "--warning=no-unknown-keyword", "-xzf", unpacked.resolve(layer.asText()).toString(), "-C", root.toString()), "tar");
        }
        return root;
    }

    @Test
    void theArchiveCarriesTheServiceItsRuntimeAndHowToStartIt() throws Exception {
        assertEquals("localhost/deepserve/tokenizer-service:test", manifest.get("RepoTags").get(0).asText());
        assertEquals(5, manifest.get("Layers").size(), "os, jre, dependencies, application, AOT cache");
        List<String> entrypoint = new ArrayList<>();
        config.get("Entrypoint").forEach(e -> entrypoint.add(e.asText()));
        assertEquals("/opt/java/bin/java", entrypoint.get(0));
        assertEquals(List.of("-jar", "/deployments/quarkus-run.jar"), entrypoint.subList(entrypoint.size() - 2, entrypoint.size()));
        assertTrue(entrypoint.contains("-XX:MaxRAMPercentage=75"), "the heap follows the container's memory limit");
        assertTrue(entrypoint.contains("-XX:AOTCache=/deployments/app.aot"), "the JVM starts from the image's AOT cache");
        assertEquals("185:185", config.get("User").asText(), "not root");
        assertTrue(config.get("ExposedPorts").has("8001/tcp"));
        assertEquals("/deployments", config.get("WorkingDir").asText());

        Path root = rootfs("inspect");
        assertTrue(Files.isExecutable(root.resolve("opt/java/bin/java")));
        assertTrue(Files.isExecutable(root.resolve("lib64/ld-linux-x86-64.so.2")), "the ELF interpreter is where binaries look for it");
        assertTrue(Files.isRegularFile(root.resolve("deployments/quarkus-run.jar")));
        assertTrue(Files.size(root.resolve("deployments/app.aot")) > 10_000_000, "the trained AOT cache");
        try (Stream<Path> lib = Files.list(root.resolve("deployments/lib/main"))) {
            assertTrue(lib.count() > 50, "the dependencies layer holds the fast-jar's libraries");
        }
        assertTrue(Files.readString(root.resolve("etc/passwd")).contains("deepserve:x:185:185"));
        assertEquals("rwxrwxrwx", PosixFilePermissions.toString(Files.getPosixFilePermissions(root.resolve("tmp"))));
        assertFalse(Files.exists(root.resolve("lib/x86_64-linux-gnu/libX11.so.6")), "headless: no X11 in a server image");
        assertFalse(Files.exists(root.resolve("bin/sh")), "no shell");
    }

    @Test
    void theSameInputsGiveTheSameImage() throws Exception {
        Path again = Images.build(List.of(spec), Path.of(System.getProperty("java.home")), tmp.resolve("again"), "localhost/deepserve", "test", false, ROOT).get(0);
        Path dir = Files.createDirectories(tmp.resolve("again-archive"));
        BaseRoot.run(List.of("tar", "-xf", again.toString(), "-C", dir.toString()), "tar");
        JsonNode second = JSON.readTree(dir.resolve("manifest.json").toFile()).get(0);
        assertEquals(manifest.get("Config").asText(), second.get("Config").asText(), "same image id");
        assertEquals(manifest.get("Layers"), second.get("Layers"), "same layer digests");
    }

    /**
     * Pushing: the same image into a real registry (the Distribution registry, Debian's docker-registry, when it is
     * installed — CI installs it), whose manifest then names the same config (image id) as the tarball.
     */
    @Test
    void pushingPutsTheSameImageIntoARegistry() throws Exception {
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/docker-registry")), "no registry to push to (apt install docker-registry)");
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        Path config = tmp.resolve("registry.yml");
        Files.writeString(config, """
                version: 0.1
                log: {level: warn}
                storage: {filesystem: {rootdirectory: %s}}
                http: {addr: 127.0.0.1:%d}
                """.formatted(Files.createDirectories(tmp.resolve("registry-data")), port));
        Process registry = new ProcessBuilder("/usr/bin/docker-registry", "serve", config.toString()).redirectErrorStream(true)
                .redirectOutput(tmp.resolve("registry.log").toFile()).start();
        try {
            HttpClient http = HttpClient.newHttpClient();
            URI base = URI.create("http://127.0.0.1:" + port);
            int status = 0;
            for (int i = 0; i < 100 && status != 200; i++) {
                try {
                    status = http.send(HttpRequest.newBuilder(base.resolve("/v2/")).build(), HttpResponse.BodyHandlers.discarding()).statusCode();
                } catch (IOException e) {
                    Thread.sleep(100);
                }
            }
            assertEquals(200, status, "the registry did not start: " + Files.readString(tmp.resolve("registry.log")));
            System.setProperty("deepserve.image.insecure", "true");
            try {
                Images.build(List.of(spec), Path.of(System.getProperty("java.home")), tmp.resolve("pushed"), "127.0.0.1:" + port + "/deepserve", "test", true, ROOT);
            } finally {
                System.clearProperty("deepserve.image.insecure");
            }
            HttpResponse<String> m = http.send(HttpRequest.newBuilder(base.resolve("/v2/deepserve/tokenizer-service/manifests/test"))
                    .header("Accept", "application/vnd.docker.distribution.manifest.v2+json").build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(200, m.statusCode(), m.body());
            JsonNode pushed = JSON.readTree(m.body());
            assertEquals(5, pushed.get("layers").size());
            String configDigest = "sha256:" + java.util.HexFormat.of().formatHex(java.security.MessageDigest.getInstance("SHA-256")
                    .digest(Files.readAllBytes(unpacked.resolve(manifest.get("Config").asText()))));
                        assertEquals(configDigest, pushed.get("config").get("digest").asText(), "the registry holds the image the tarball holds");
        } finally {
            registry.destroy();
            registry.waitFor();
        }
    }

    @Test
    void theServiceRunsFromTheImageAsItsUserAndAnswers() throws Exception {
        boolean root = "0".equals(BaseRoot.run(List.of("id", "-u"), "id").strip());
        assumeTrue(root && Files.isExecutable(Path.of("/usr/bin/unshare")) && Files.isExecutable(Path.of("/usr/sbin/chroot")),
                "running the image needs root, unshare and chroot");
        Path tokenizer = Stream.of(System.getenv("DEEPSERVE_TOKENIZER_DIR"), dev.deepserve.model.cli.ModelCli.cacheDir(System.getenv()).resolve(dev.deepserve.model.cli.ModelCli.TOKENIZER_CACHE_NAME).toString())
                .filter(d -> d != null && Files.isRegularFile(Path.of(d, "tokenizer.json"))).map(Path::of).findFirst().orElse(null);
        assumeTrue(tokenizer != null, "no tokenizer files (scripts/fetch-tokenizer.sh)");
        Path fs = rootfs("run");
        Files.createDirectories(fs.resolve("proc"));
        Files.createDirectories(fs.resolve("dev"));
        Path model = Files.createDirectories(fs.resolve("model"));
        for (String f : List.of("tokenizer.json", "tokenizer_config.json")) {
            Files.copy(tokenizer.resolve(f), model.resolve(f));
        }
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        List<String> command = new ArrayList<>(List.of("/usr/bin/unshare", "--mount", "--pid", "--fork", "--kill-child", "/bin/sh", "-c",
                "mount --bind /dev \"$R/dev\" && mount -t proc proc \"$R/proc\" && exec /usr/sbin/chroot --userspec=185:185 \"$R\" \"$@\"", "run-image"));
        config.get("Entrypoint").forEach(e -> command.add(e.asText()));
        ProcessBuilder pb = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(tmp.resolve("service.log").toFile());
        Map<String, String> env = pb.environment();
        env.clear();
        config.get("Env").forEach(e -> env.put(e.asText().substring(0, e.asText().indexOf('=')), e.asText().substring(e.asText().indexOf('=') + 1)));
        env.put("R", fs.toString());
        env.put("DEEPSERVE_MODEL_DIR", "/model");
        env.put("QUARKUS_HTTP_PORT", String.valueOf(port));
        String token = dev.deepserve.internal.InternalToken.generate().value();
        env.put(dev.deepserve.internal.InternalToken.ENV, token);
        env.put("JAVA_TOOL_OPTIONS", "-Xlog:class+load=info:file=/tmp/class-load.log"); // where each class came from
        Process p = pb.start();
        try {
            HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();
            URI base = URI.create("http://127.0.0.1:" + port);
            int status = 0;
            long deadline = System.nanoTime() + Duration.ofSeconds(90).toNanos();
            while (status != 200 && p.isAlive() && System.nanoTime() < deadline) {
                try {
                    status = http.send(HttpRequest.newBuilder(base.resolve("/q/health/ready")).build(), HttpResponse.BodyHandlers.discarding()).statusCode();
                } catch (IOException e) {
                    Thread.sleep(250);
                }
            }
            assertEquals(200, status, "the service in the image never got ready:\n" + Files.readString(tmp.resolve("service.log")));
            HttpResponse<String> r = http.send(HttpRequest.newBuilder(base.resolve("/tokenize")).header("Content-Type", "application/json")
                    .header(dev.deepserve.internal.InternalToken.HEADER, token)
                    .POST(HttpRequest.BodyPublishers.ofString("{\"text\":\"Hello from a container image\"}")).build(), HttpResponse.BodyHandlers.ofString());
            assertEquals(200, r.statusCode(), r.body());
            assertTrue(JSON.readTree(r.body()).get("count").asInt() > 3, r.body());
            long pid = p.descendants().filter(h -> h.info().command().orElse("").endsWith("/opt/java/bin/java")).findFirst()
                    .map(ProcessHandle::pid).orElse(-1L);
            assertTrue(pid > 0, "the JVM runs from the image's /opt/java");
            assertEquals("185", BaseRoot.run(List.of("stat", "-c", "%u", "/proc/" + pid), "stat").strip(), "it runs as the image's user, not root");
            List<String> loaded = Files.readAllLines(fs.resolve("tmp/class-load.log"));
            assertTrue(loaded.stream().anyMatch(l -> l.contains(" dev.deepserve.tokenize.") && l.contains("source: shared objects file")),
                    "the service's own classes come from the image's AOT cache:\n" + String.join("\n", loaded.stream().filter(l -> l.contains("dev.deepserve")).limit(5).toList()));
        } finally {
            p.descendants().forEach(ProcessHandle::destroy);
            p.destroy();
            p.waitFor();
        }
    }
}
