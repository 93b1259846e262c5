package dev.deepserve.images;

import com.google.cloud.tools.jib.api.Containerizer;
import com.google.cloud.tools.jib.api.Jib;
import com.google.cloud.tools.jib.api.JibContainer;
import com.google.cloud.tools.jib.api.JibContainerBuilder;
import com.google.cloud.tools.jib.api.RegistryImage;
import com.google.cloud.tools.jib.api.TarImage;
import com.google.cloud.tools.jib.api.buildplan.AbsoluteUnixPath;
import com.google.cloud.tools.jib.api.buildplan.FileEntriesLayer;
import com.google.cloud.tools.jib.api.buildplan.FileEntry;
import com.google.cloud.tools.jib.api.buildplan.FilePermissions;
import com.google.cloud.tools.jib.api.buildplan.ImageFormat;
import com.google.cloud.tools.jib.api.buildplan.Port;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * Builds the OCI image of every service and of the CLI with Jib, from scratch: layers (1) C libraries and /etc,
 * (2) the jlinked Java runtime, (3) the application's dependencies, (4) the application itself — ordered from what
 * changes least, so a rebuild re-sends only the last layers, and (5) each service's AOT cache, trained by running the
 * stack on the image's own runtime ({@link AotTraining}) and named on the entrypoint. Files carry a fixed timestamp,
 * the runtime is cached per JDK and the caches per input digest, so the same inputs give the same image digest. Each image goes to {@code OUT/<name>.tar} (docker/podman load, skopeo copy) and, with
 * {@code --push true}, to the registry (credentials from DEEPSERVE_REGISTRY_USERNAME / DEEPSERVE_REGISTRY_PASSWORD).
 *
 * <p>Usage: {@code Images --root DIR --out DIR [--tag T] [--registry R] [--push true|false] [--only all|a,b] [--aot true|false]}
 */
public final class Images {

    /** How one image runs: where its files come from and how it starts. */
    record Spec(String name, String description, Path appDir, List<String> command, int port, boolean engine) {
    }

    static final Instant EPOCH_PLUS_ONE = Instant.ofEpochSecond(1);
    static final String APP = "/deployments";
    /** Where a service image keeps its AOT cache. */
    static final String AOT_CACHE = APP + "/app.aot";

    private Images() {
    }

    /** The images this project ships; the engines get the Vector API and a larger heap share. */
    static List<Spec> specs(Path root) {
        List<Spec> out = new ArrayList<>();
        out.add(quarkus(root, "tokenizer-service", "DeepSeek-V3 tokenizer service", 8001, false));
        out.add(quarkus(root, "prefill-service", "deepserve prefill engine (MLA prompt forward, prefix cache, KV hand-off)", 8002, true));
        out.add(quarkus(root, "decode-service", "deepserve decode engine (continuous batching, MTP speculation)", 8003, true));
        out.add(quarkus(root, "billing", "deepserve billing (usage ledger, balances, admin console)", 8004, false));
        out.add(quarkus(root, "gateway", "deepserve OpenAI-compatible API gateway", 8000, false));
        out.add(new Spec("cli", "deepserve command line (model generation, tokenize, stack)", root.resolve("stack/target"),
                List.of("-jar", APP + "/deepserve-stack.jar"), 0, true));
        return out;
    }

    private static Spec quarkus(Path root, String name, String description, int port, boolean engine) {
        return new Spec(name, description, root.resolve(name).resolve("target/quarkus-app"), List.of("-jar", APP + "/quarkus-run.jar"), port, engine);
    }

    /** The JVM options every image starts with: container-aware heap, the CPU engines' Vector API. */
    static List<String> jvmOptions(Spec spec) {
        List<String> o = new ArrayList<>(List.of("-XX:MaxRAMPercentage=" + (spec.engine() ? "85" : "75"), "-XX:+ExitOnOutOfMemoryError",
                "--enable-native-access=ALL-UNNAMED", "-Djava.io.tmpdir=/tmp", "-Djava.awt.headless=true"));
        if (spec.engine()) {
            o.add("--add-modules=jdk.incubator.vector");
            // an AOT cache is refused whole when compressed oops differ from its training run, and the JVM turns them
            // off by itself above a 32 GB heap (85 % of the engines' 64 Gi): off always, here and in the stack that trains
            o.add("-XX:-UseCompressedOops");
        }
        return o;
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> a = new LinkedHashMap<>();
        for (int i = 0; i < args.length; i++) {
            if (!args[i].startsWith("--") || i + 1 == args.length || args[i + 1] == null || args[i + 1].startsWith("--")) {
                throw new IllegalArgumentException("expected --option value pairs, got: " + String.join(" ", args));
            }
            a.put(args[i].substring(2), args[++i]);
        }
        Path root = Path.of(a.getOrDefault("root", ".")).toAbsolutePath().normalize();
        Path out = Path.of(a.getOrDefault("out", "images/target/images")).toAbsolutePath();
        String tag = a.getOrDefault("tag", "0.1.0");
        String registry = a.getOrDefault("registry", "ghcr.io/deepserve");
        boolean push = Boolean.parseBoolean(a.getOrDefault("push", "false"));
        List<String> only = List.of(a.getOrDefault("only", "all").split(",")).stream().map(String::strip)
                .filter(s -> !s.isEmpty() && !s.equals("all")).toList();
        List<Spec> specs = specs(root).stream().filter(s -> only.isEmpty() || only.contains(s.name())).toList();
        if (specs.isEmpty()) {
            throw new IllegalArgumentException("no image named " + only + "; known: " + specs(root).stream().map(Spec::name).toList());
        }
        boolean aot = Boolean.parseBoolean(a.getOrDefault("aot", "true"));
        build(specs, Path.of(System.getProperty("java.home")), out, registry, tag, push, aot ? root : null);
    }

    /**
     * Builds each image into {@code out}; returns the tarballs. With a project {@code trainFrom}, the service images
     * carry AOT caches trained on that project's stack; with null, none.
     */
    static List<Path> build(List<Spec> specs, Path jdk, Path out, String registry, String tag, boolean push, Path trainFrom) throws Exception {
        for (Spec s : specs) {
            if (!Files.isDirectory(s.appDir())) {
                throw new IOException(s.name() + ": " + s.appDir() + " is missing; build the project first (./mvnw -B package -DskipTests)");
            }
        }
        Path work = Files.createDirectories(out.resolve("work"));
        long t0 = System.nanoTime();
        String cacheEnv = System.getenv("DEEPSERVE_CACHE");
        Path cache = cacheEnv != null ? Path.of(cacheEnv) : Path.of(System.getProperty("user.home"), ".cache", "deepserve");
        Path runtime = BaseRoot.runtime(jdk, cache);
        java.util.Set<String> hostProvided = new java.util.TreeSet<>();
        List<BaseRoot.Entry> libs = new ArrayList<>(BaseRoot.nativeLibraries(runtime));
        for (BaseRoot.Entry e : BaseRoot.jarNativeLibraries(specs.stream().map(Spec::appDir).toList(), work, hostProvided)) {
            if (libs.stream().noneMatch(l -> l.target().equals(e.target()))) {
                libs.add(e);
            }
        }
        FileEntriesLayer os = layer("os", libs, BaseRoot.etc(work));
        if (!hostProvided.isEmpty()) {
            System.out.println("left to the host that runs the images (e.g. the NVIDIA driver's libcuda): " + String.join(", ", hostProvided));
        }
        FileEntriesLayer jre = layer("jre", BaseRoot.runtimeEntries(runtime));
        System.out.printf("base: Java runtime (%s) and %d C libraries ready in %d ms%n", String.join(",", BaseRoot.MODULES),
                os.getEntries().size(), (System.nanoTime() - t0) / 1_000_000);
        Map<String, Path> aot = trainFrom == null ? Map.of() : AotTraining.caches(trainFrom, specs, runtime, cache, work);
        List<Path> tars = new ArrayList<>();
        int n = 0;
        for (Spec s : specs) {
            long t1 = System.nanoTime();
            String reference = registry + "/" + s.name() + ":" + tag;
            JibContainerBuilder image = container(s, os, jre, aot.get(s.name()));
            Path tar = out.resolve(s.name() + ".tar");
            JibContainer built = image.containerize(Containerizer.to(TarImage.at(tar).named(reference))
                    .setApplicationLayersCache(work.resolve("cache")).setBaseImageLayersCache(work.resolve("cache")).setToolName("deepserve-images"));
            tars.add(tar);
            n++;
            System.out.printf("[%d/%d] %-18s %s  %s  %,d MB  (%d ms)%n", n, specs.size(), s.name(), reference, built.getDigest(),
                    Files.size(tar) >> 20, (System.nanoTime() - t1) / 1_000_000);
            if (push) {
                RegistryImage target = RegistryImage.named(reference);
                String user = System.getenv("DEEPSERVE_REGISTRY_USERNAME");
                String password = System.getenv("DEEPSERVE_REGISTRY_PASSWORD");
                if (user != null && password != null) {
                    target.addCredential(user, password);
                }
                JibContainer pushed = container(s, os, jre, aot.get(s.name())).containerize(Containerizer.to(target)
                        .setApplicationLayersCache(work.resolve("cache")).setBaseImageLayersCache(work.resolve("cache"))
                        .setAllowInsecureRegistries(Boolean.getBoolean("deepserve.image.insecure")).setToolName("deepserve-images"));
                System.out.printf("      pushed %s@%s%n", reference, pushed.getDigest());
            }
        }
        return tars;
    }

    /** The image of one spec on the shared base layers, with its AOT cache when {@code aotCache} is not null. */
    static JibContainerBuilder container(Spec s, FileEntriesLayer os, FileEntriesLayer jre, Path aotCache) throws IOException {
        List<BaseRoot.Entry> libs = new ArrayList<>();
        List<BaseRoot.Entry> app = new ArrayList<>();
        try (Stream<Path> files = Files.walk(s.appDir())) {
            for (Path f : files.filter(Files::isRegularFile).sorted().toList()) {
                String rel = s.appDir().relativize(f).toString().replace('\\', '/');
                if (s.name().equals("cli") && !(rel.equals("deepserve-stack.jar") || rel.startsWith("lib/"))) {
                    continue; // stack/target also holds classes, test output and reports
                }
                (rel.startsWith("lib/") ? libs : app).add(BaseRoot.Entry.file(f, APP + "/" + rel, false));
            }
        }
        List<String> entrypoint = new ArrayList<>();
        entrypoint.add(BaseRoot.JAVA_HOME + "/bin/java");
        entrypoint.addAll(jvmOptions(s));
        if (aotCache != null) {
            entrypoint.add("-XX:AOTCache=" + AOT_CACHE); // a cache that does not fit is reported and skipped: the service still starts
        }
        entrypoint.addAll(s.command());
        Map<String, String> env = new LinkedHashMap<>();
        env.put("JAVA_HOME", BaseRoot.JAVA_HOME);
        env.put("PATH", BaseRoot.JAVA_HOME + "/bin:/usr/bin:/bin");
        env.put("LANG", "C.UTF-8");
        if (s.name().equals("gateway")) {
            // the usage journal needs a writable directory (the app's own is root's); k8s mounts a volume over it
            env.put("DEEPSERVE_USAGE_JOURNAL_DIR", "/tmp/deepserve/usage-journal");
        }
        if (s.engine()) {
            // the GPU pools' nodes run the NVIDIA container runtime: it mounts the driver's libcuda for JCuda's driver API
            env.put("NVIDIA_VISIBLE_DEVICES", "all");
            env.put("NVIDIA_DRIVER_CAPABILITIES", "compute,utility");
        }
        Map<String, String> labels = new LinkedHashMap<>();
        labels.put("org.opencontainers.image.title", "deepserve " + s.name());
        labels.put("org.opencontainers.image.description", s.description());
        labels.put("org.opencontainers.image.source", "https://github.com/deepserve/deepserve");
        labels.put("org.opencontainers.image.base.name", "scratch (jlinked Java " + Runtime.version().feature() + ")");
        JibContainerBuilder b = Jib.fromScratch()
                .setFormat(ImageFormat.Docker) // docker-save tarballs: docker, podman, kind and skopeo all load them
                .addFileEntriesLayer(os)
                .addFileEntriesLayer(jre)
                .addFileEntriesLayer(layer("dependencies", libs))
                .addFileEntriesLayer(layer("application", app))
                .setEntrypoint(entrypoint)
                .setEnvironment(env)
                .setLabels(labels)
                .setUser(BaseRoot.UID + ":" + BaseRoot.UID)
                .setWorkingDirectory(AbsoluteUnixPath.get(APP))
                .setCreationTime(EPOCH_PLUS_ONE);
        if (aotCache != null) {
            b.addFileEntriesLayer(layer("aot-cache", List.of(BaseRoot.Entry.file(aotCache, AOT_CACHE, false))));
        }
        if (s.port() > 0) {
            b.addExposedPort(Port.tcp(s.port()));
        }
        return b;
    }

    @SafeVarargs
    static FileEntriesLayer layer(String name, List<BaseRoot.Entry>... groups) {
        FileEntriesLayer.Builder b = FileEntriesLayer.builder().setName(name);
        for (List<BaseRoot.Entry> group : groups) {
            for (BaseRoot.Entry e : group) {
                b.addEntry(new FileEntry(e.source(), AbsoluteUnixPath.get(e.target()), FilePermissions.fromOctalString(e.mode()), EPOCH_PLUS_ONE, "0:0"));
            }
        }
        return b.build();
    }
}
