package dev.deepserve.images;

import java.io.IOException;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * The training run behind each service image's AOT cache (JEP 483/514/515: classes loaded and linked, method
 * profiles). The whole stack ({@code deepserve up -d}) runs on the images' own jlinked Java runtime, on free ports and
 * a throwaway home; chat requests (plain and streamed) go through gateway → tokenizer → engine → Kafka → billing; on
 * {@code deepserve down} every service JVM writes its cache ({@code -XX:AOTCacheOutput}, see the stack's AotCache).
 *
 * <p>A cache is only used with the Java runtime, the jars (their sizes and modification times), the module options
 * and the compressed-oops mode it was recorded with; where the runtime and the jars lie does not matter, nor do the
 * heap size (below 32 GB) and Serial vs G1 (measured on Temurin 25). So the runtime here is the image's own, the
 * services run from a copy of their files carrying the image's timestamp, the stack gives each service the images'
 * options that count ({@code --add-modules} and {@code -XX:-UseCompressedOops} for the engines only), and the run gets
 * none of the build's own environment (no JAVA_TOOL_OPTIONS, model directory or upstream keys). Each cache is then
 * opened once with {@code -XX:AOTMode=on} under the image's options (an engine's on a 64 GB machine), which fails on a
 * cache the image could not use. The caches are kept under the build cache by a digest of the runtime, every file of the
 * services and the stack launcher, so the same inputs give the same cache and the same image digest, and a rebuild
 * whose jars are byte for byte the same trains nothing; the newest {@value #KEPT} are kept.
 */
final class AotTraining {

    static final List<String> SERVICES = List.of("tokenizer-service", "prefill-service", "decode-service", "billing", "gateway");
    /** What the training run sends through the gateway; enough for the request path's classes and profiles. */
    static final int REQUESTS = 40;
    /** Trained cache sets kept under the build cache (each a few hundred MB). */
    static final int KEPT = 3;

    private AotTraining() {
    }

    /**
     * The AOT cache of each of {@code specs}' services (the CLI image has none), trained once per input digest under
     * {@code cache}. Fails, saying why, when the training run does.
     */
    static Map<String, Path> caches(Path root, List<Images.Spec> specs, Path runtime, Path cache, Path work) throws Exception {
        List<Images.Spec> services = specs.stream().filter(s -> !s.name().equals("cli")).toList();
        Map<String, Path> out = new LinkedHashMap<>();
        if (services.isEmpty()) {
            return out;
        }
        String key = digest(root, runtime);
        Path dir = cache.resolve("aot-" + key);
        if (Files.isDirectory(dir)) {
            System.out.println("AOT caches: trained before for these inputs (" + dir + ")");
        } else {
            // trained beside, checked, then renamed into place: a directory that exists holds a complete, usable set
            Path partial = cache.resolve("aot-" + key + ".partial-" + ProcessHandle.current().pid());
            BaseRoot.deleteTree(partial);
            train(root, runtime, partial, work.resolve("aot-training"));
            try {
                Files.move(partial, dir, StandardCopyOption.ATOMIC_MOVE);
            } catch (java.nio.file.FileAlreadyExistsException | java.nio.file.DirectoryNotEmptyException concurrent) {
                BaseRoot.deleteTree(partial); // another build trained the same inputs meanwhile
            }
            evict(cache, dir);
            System.out.println("AOT caches: kept in " + dir);
        }
        for (Images.Spec s : services) {
            out.put(s.name(), dir.resolve(s.name() + ".aot"));
        }
        return out;
    }

    /** The stack on {@code runtime}, its training traffic, its stop; the caches it wrote are moved into {@code dir}. */
    static void train(Path root, Path runtime, Path dir, Path work) throws Exception {
        long t0 = System.nanoTime();
        Path home = work.resolve("home");
        if (Files.exists(home.resolve("stack.pid"))) {
            System.out.println("AOT caches: stopping the stack a cut-short training run left behind");
            stack(root, runtime, Map.of("DEEPSERVE_HOME", home.toString()), work.resolve("previous-training.log"), Duration.ofMinutes(16), "down");
        }
        BaseRoot.deleteTree(work);
        Files.createDirectories(home);
        Path stage = work.resolve("project");
        for (String service : SERVICES) {
            stage(root.resolve(service).resolve("target/quarkus-app"), stage.resolve(service).resolve("target/quarkus-app"));
        }
        Map<String, String> env = new LinkedHashMap<>();
        env.put("DEEPSERVE_PROJECT_DIR", stage.toString()); // the services' files as the images hold them
        env.put("DEEPSERVE_TOKENIZER_DIR", BaseRoot.run(List.of(root.resolve("scripts/fetch-tokenizer.sh").toString()), "fetching the tokenizer files").strip());
        env.put("DEEPSERVE_HOME", home.toString());
        env.put("DEEPSERVE_AOT", "true");
        Map<String, Integer> ports = new LinkedHashMap<>();
        for (String name : List.of("GATEWAY", "TOKENIZER", "PREFILL", "DECODE", "BILLING", "PG", "KAFKA", "KAFKA_CONTROLLER")) {
            ports.put(name, freePort());
            env.put("DEEPSERVE_" + name + "_PORT", Integer.toString(ports.get(name)));
        }
        Path log = work.resolve("training.log");
        Files.createFile(log, java.nio.file.attribute.PosixFilePermissions.asFileAttribute(java.nio.file.attribute.PosixFilePermissions.fromString("rw-------")));
        System.out.println("AOT caches: training run — the stack on the images' Java runtime, " + REQUESTS + " chat requests, then its stop (log: " + log + ")");
        Duration stop = Duration.ofMinutes(16); // the stack gives each recording service minutes to write its cache
        // a build stopped during the run (Ctrl-C) stops the stack it started, which runs detached
        Thread stopOnExit = new Thread(() -> {
            try {
                stack(root, runtime, env, log, stop, "down");
            } catch (Exception ignored) {
                // the next training run stops what is left (above)
            }
        }, "aot-training-stop");
        Runtime.getRuntime().addShutdownHook(stopOnExit);
        try {
            stack(root, runtime, env, log, Duration.ofMinutes(10), "up", "-d");
            String key = Files.readString(home.resolve("secrets/api-key")).strip();
            drive("http://127.0.0.1:" + ports.get("GATEWAY"), key);
        } catch (Exception e) {
            try {
                stack(root, runtime, env, log, stop, "down");
            } catch (Exception alsoDown) {
                e.addSuppressed(alsoDown);
            }
            forget(stopOnExit);
            throw e;
        }
        stack(root, runtime, env, log, stop, "down"); // the services write their caches as they stop
        forget(stopOnExit);
        Files.createDirectories(dir);
        List<String> missing = new ArrayList<>();
        try (Stream<Path> files = Files.list(home.resolve("aot"))) {
            for (Path f : files.filter(f -> f.toString().endsWith(".aot")).toList()) {
                Files.move(f, dir.resolve(f.getFileName()), StandardCopyOption.REPLACE_EXISTING);
            }
        }
        for (String service : SERVICES) {
            if (!Files.isRegularFile(dir.resolve(service + ".aot"))) {
                missing.add(service);
            }
        }
        if (!missing.isEmpty()) {
            throw new IOException("the training run wrote no AOT cache for " + missing + " (a service killed before it finished writing?); see " + log
                    + " and " + home.resolve("logs") + "; -Ddeepserve.image.aot=false builds the images without caches");
        }
        for (Images.Spec spec : Images.specs(root)) {
            if (SERVICES.contains(spec.name())) {
                check(runtime, spec, dir.resolve(spec.name() + ".aot"), stage.resolve(spec.name()).resolve("target/quarkus-app/quarkus-run.jar"));
            }
        }
        BaseRoot.deleteTree(work);
        System.out.printf("AOT caches: trained and checked in %.0f s%n", (System.nanoTime() - t0) / 1e9);
    }

    private static void forget(Thread hook) {
        try {
            Runtime.getRuntime().removeShutdownHook(hook);
        } catch (IllegalStateException shuttingDown) {
            // the JVM is exiting: the hook runs, and its down finds the stack already stopped
        }
    }

    /**
     * Opens {@code cache} the way the image will (its options, its jar with the image's timestamps; an engine on a
     * 64 GB machine, as k8s/ runs them) in {@code -XX:AOTMode=on}, which fails where the default mode would only warn
     * and start without it; {@code -version} stops the JVM once the cache is mapped and its class path checked.
     */
    static void check(Path runtime, Images.Spec spec, Path cache, Path jar) throws IOException, InterruptedException {
        List<String> command = new ArrayList<>(List.of(runtime.resolve("bin/java").toString()));
        if (spec.engine()) {
            command.add("-XX:MaxRAM=64g");
        }
        command.addAll(Images.jvmOptions(spec));
        command.addAll(List.of("-XX:AOTCache=" + cache, "-XX:AOTMode=on", "-cp", jar.toString(), "-version"));
        ProcessBuilder pb = new ProcessBuilder(command).redirectErrorStream(true);
        pb.environment().keySet().removeIf(name -> name.contains("JAVA_OPTIONS") || name.equals("JDK_JAVA_OPTIONS")); // the image's options only
        Process p = pb.start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(2, TimeUnit.MINUTES) || p.exitValue() != 0) {
            throw new IOException("the AOT cache trained for " + spec.name() + " would not be used by its image: " + out.strip().lines().findFirst().orElse(""));
        }
    }

    /** Deletes all but the newest {@value #KEPT} trained sets (and partial ones older than a day). */
    static void evict(Path cache, Path keep) throws IOException {
        List<Path> sets;
        try (Stream<Path> dirs = Files.list(cache)) {
            sets = dirs.filter(d -> d.getFileName().toString().startsWith("aot-") && Files.isDirectory(d)).toList();
        }
        List<Path> complete = new ArrayList<>(sets.stream().filter(d -> !d.getFileName().toString().contains(".partial-")).toList());
        complete.sort(java.util.Comparator.comparing((Path d) -> {
            try {
                return Files.getLastModifiedTime(d).toMillis();
            } catch (IOException e) {
                return 0L;
            }
        }).reversed());
        for (Path d : complete.subList(Math.min(KEPT, complete.size()), complete.size())) {
            if (!d.equals(keep)) {
                BaseRoot.deleteTree(d);
            }
        }
        long dayAgo = System.currentTimeMillis() - TimeUnit.DAYS.toMillis(1);
        for (Path d : sets) {
            if (d.getFileName().toString().contains(".partial-") && Files.getLastModifiedTime(d).toMillis() < dayAgo) {
                BaseRoot.deleteTree(d);
            }
        }
    }

    /** Plain and streamed chat completions of a few lengths, each required to succeed. */
    static void drive(String gateway, String key) throws Exception {
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
        for (int i = 0; i < REQUESTS; i++) {
            boolean stream = i % 2 == 1;
            String body = """
                    {"model":"deepseek-chat","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Training request %d: say something about caches."}],
                     "stream":%s,"stream_options":{"include_usage":true},"max_tokens":%d,"temperature":%s}"""
                    .formatted(i, stream, 4 + i % 8, i % 3 == 0 ? "0" : "0.7");
            if (!stream) {
                body = body.replace(",\"stream_options\":{\"include_usage\":true}", "");
            }
            HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create(gateway + "/v1/chat/completions")).timeout(Duration.ofSeconds(60))
                    .header("Authorization", "Bearer " + key).header("Content-Type", "application/json")
                    .POST(HttpRequest.BodyPublishers.ofString(body)).build(), HttpResponse.BodyHandlers.ofString());
            if (r.statusCode() != 200) {
                throw new IOException("training request " + i + " got " + r.statusCode() + ": " + r.body().lines().findFirst().orElse(""));
            }
        }
        for (String path : List.of("/v1/models", "/user/balance")) {
            http.send(HttpRequest.newBuilder(URI.create(gateway + path)).header("Authorization", "Bearer " + key).build(), HttpResponse.BodyHandlers.discarding());
        }
    }

    /**
     * A copy of a service's files with the timestamp the image gives every file (the AOT cache checks jars' times):
     * copies, not links, so the build's own files keep theirs.
     */
    static void stage(Path from, Path to) throws IOException {
        if (!Files.isRegularFile(from.resolve("quarkus-run.jar"))) {
            throw new IOException(from + " is missing; build the project first (./mvnw -B package -DskipTests)");
        }
        java.nio.file.attribute.FileTime time = java.nio.file.attribute.FileTime.from(Images.EPOCH_PLUS_ONE);
        try (Stream<Path> files = Files.walk(from)) {
            for (Path f : files.filter(Files::isRegularFile).toList()) {
                Path target = to.resolve(from.relativize(f).toString());
                Files.createDirectories(target.getParent());
                Files.copy(f, target, StandardCopyOption.REPLACE_EXISTING);
                Files.setLastModifiedTime(target, time);
            }
        }
    }

    /**
     * The stack launcher ({@code deepserve-stack.jar args}, what ./deepserve runs) on {@code runtime}, so that it starts
     * the services on that runtime too; output appended to {@code log}; fails on a non-zero exit.
     */
    static void stack(Path root, Path runtime, Map<String, String> env, Path log, Duration timeout, String... args) throws Exception {
        List<String> command = new ArrayList<>(List.of(runtime.resolve("bin/java").toString(), "-Xmx1g", "-XX:+UseSerialGC",
                "-jar", root.resolve("stack/target/deepserve-stack.jar").toString()));
        command.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(command).directory(root.toFile()).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()));
        // nothing of the build's own environment: JAVA_TOOL_OPTIONS or DEEPSERVE_JAVA_OPTS would change the options
        // the caches are recorded with, DEEPSERVE_MODEL_DIR would load a real checkpoint, DEEPSERVE_BIND open the stack
        Map<String, String> inherited = pb.environment();
        Map<String, String> kept = new LinkedHashMap<>();
        for (String name : List.of("PATH", "HOME", "LANG", "TMPDIR", "DEEPSERVE_CACHE")) {
            if (inherited.containsKey(name)) {
                kept.put(name, inherited.get(name));
            }
        }
        inherited.clear();
        inherited.putAll(kept);
        inherited.putAll(env);
        Process p = pb.start();
        if (!p.waitFor(timeout.toMillis(), TimeUnit.MILLISECONDS)) {
            p.destroyForcibly();
            throw new IOException("deepserve " + String.join(" ", args) + " did not finish in " + timeout.toMinutes() + " min; see " + log);
        }
        if (p.exitValue() != 0) {
            // the last lines say why; the throwaway stack's keys stay in the owner-only log
            List<String> lines = Files.readAllLines(log).stream().filter(l -> !l.matches("(?i)^\\s*[a-z-]*key:.*")).toList();
            throw new IOException("deepserve " + String.join(" ", args) + " failed (exit " + p.exitValue() + "): "
                    + String.join(" | ", lines.subList(Math.max(0, lines.size() - 3), lines.size())) + "; see " + log);
        }
    }

    /**
     * What a cache depends on: the runtime's module image, every file of the services' applications, and the stack
     * launcher that trains them (it chooses their options); the training procedure's own version is part of it, so a
     * change here retrains.
     */
    static String digest(Path root, Path runtime) throws IOException {
        try {
            MessageDigest d = MessageDigest.getInstance("SHA-256");
            d.update(("training v3 " + REQUESTS).getBytes(StandardCharsets.UTF_8));
            hashFile(d, runtime.resolve("lib/modules"));
            hashFile(d, runtime.resolve("release"));
            hashFile(d, root.resolve("stack/target/deepserve-stack.jar"));
            for (Images.Spec s : Images.specs(root)) {
                if (s.name().equals("cli")) {
                    continue;
                }
                d.update((s.name() + " " + Images.jvmOptions(s)).getBytes(StandardCharsets.UTF_8));
                try (Stream<Path> files = Files.walk(s.appDir())) {
                    for (Path f : files.filter(Files::isRegularFile).sorted().toList()) {
                        d.update(s.appDir().relativize(f).toString().getBytes(StandardCharsets.UTF_8));
                        hashFile(d, f);
                    }
                }
            }
            return HexFormat.of().formatHex(d.digest(), 0, 10);
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    private static void hashFile(MessageDigest d, Path f) throws IOException {
        try (var in = Files.newInputStream(f)) {
            byte[] buf = new byte[1 << 16];
            for (int n; (n = in.read(buf)) > 0; ) {
                d.update(buf, 0, n);
            }
        }
    }

    private static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }
}
