package dev.deepserve.images;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * What every image runs on, assembled from this machine instead of pulled from a registry: a Java runtime cut from the
 * build's JDK with jlink (the modules Quarkus, Vert.x, Kafka, the PG driver and the Vector API need), the C libraries
 * its binaries load (found with ldd, copied at the paths the loader looks in), and a few files of /etc (a non-root
 * user, name-service order). No shell, no package manager — the distroless idea.
 */
final class BaseRoot {

    /**
     * The modules the services use: java.se for the platform APIs, plus JDK modules they reach at run time
     * (jdk.security.auth: embedded PostgreSQL asks it for the uid, to start initdb under {@code unshare -U} as root).
     */
    static final List<String> MODULES = List.of("java.se", "jdk.unsupported", "jdk.incubator.vector", "jdk.management", "jdk.jfr",
            "jdk.net", "jdk.naming.dns", "jdk.zipfs", "jdk.crypto.cryptoki", "jdk.localedata", "jdk.charsets", "jdk.httpserver", "jdk.security.auth");
    static final String JAVA_HOME = "/opt/java";
    /** java.desktop's native parts that need X11 or ALSA: servers run headless, so they (and those libraries) stay out. */
    static final Set<String> DESKTOP_ONLY = Set.of("libawt_xawt.so", "libjawt.so", "libjsound.so", "libsplashscreen.so");
    static final int UID = 185;

    /** One file (or empty directory) of the root, where it goes, and its octal mode. */
    record Entry(Path source, String target, String mode) {
        static Entry file(Path source, String target, boolean executable) {
            return new Entry(source, target, executable ? "755" : "644");
        }
    }

    private BaseRoot() {
    }

    /** With the JDK's default CDS archive, as a JDK has it: what the CLI and a service without its AOT cache start from. */
    static final List<String> JLINK_OPTIONS = List.of("--strip-debug", "--no-man-pages", "--no-header-files", "--compress=zip-6", "--generate-cds-archive");

    /**
     * The runtime cut from {@code jdk}, cached under {@code cache} by the JDK's release and the jlink inputs. jlink's
     * output is not byte-for-byte the same from run to run (lib/modules differs; measured on Temurin 25), so the
     * runtime is cut once per JDK and reused: that keeps image digests stable across builds on a machine.
     */
    static Path runtime(Path jdk, Path cache) throws IOException, InterruptedException {
        String key;
        try {
            java.security.MessageDigest d = java.security.MessageDigest.getInstance("SHA-256");
            d.update(Files.readAllBytes(jdk.resolve("release")));
            d.update((MODULES + " " + JLINK_OPTIONS).getBytes(StandardCharsets.UTF_8));
            key = java.util.HexFormat.of().formatHex(d.digest(), 0, 8);
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
        Path dir = cache.resolve("jre-" + key);
        if (Files.isExecutable(dir.resolve("bin/java"))) {
            return dir;
        }
        Path partial = cache.resolve("jre-" + key + ".partial-" + ProcessHandle.current().pid());
        deleteTree(partial);
        Files.createDirectories(cache);
        List<String> command = new ArrayList<>(List.of(jdk.resolve("bin/jlink").toString(), "--add-modules", String.join(",", MODULES)));
        command.addAll(JLINK_OPTIONS);
        command.addAll(List.of("--output", partial.toString()));
        run(command, "jlink");
        try {
            Files.move(partial, dir, java.nio.file.StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException raced) {
            deleteTree(partial); // another build cut the same runtime meanwhile: use that one
        }
        return dir;
    }

    /** The runtime's files under {@link #JAVA_HOME}. */
    static List<Entry> runtimeEntries(Path runtime) throws IOException {
        List<Entry> out = new ArrayList<>();
        try (Stream<Path> files = Files.walk(runtime)) {
            for (Path f : files.filter(Files::isRegularFile).filter(f -> !DESKTOP_ONLY.contains(f.getFileName().toString())).sorted().toList()) {
                out.add(Entry.file(f, JAVA_HOME + "/" + runtime.relativize(f).toString().replace('\\', '/'), Files.isExecutable(f)));
            }
        }
        return out;
    }

    /** The shared libraries the runtime's ELF files need, with the loader itself, at the paths they are looked up by. */
    static List<Entry> nativeLibraries(Path runtime) throws IOException, InterruptedException {
        Set<String> ownNames = new TreeSet<>(); // the runtime's own libraries (libjvm.so, ...): loaded from lib/ by the JVM itself
        List<Path> elves;
        try (Stream<Path> files = Files.walk(runtime)) {
            files.filter(Files::isRegularFile).forEach(f -> ownNames.add(f.getFileName().toString()));
        }
        try (Stream<Path> files = Files.walk(runtime)) {
            elves = files.filter(f -> !DESKTOP_ONLY.contains(f.getFileName().toString())).filter(BaseRoot::isElf).toList();
        }
        return entries(closure(elves, ownNames::contains), runtime.toRealPath());
    }

    /**
     * What the native libraries shipped inside the applications' jars need (e.g. JCuda's driver binding: libstdc++,
     * libgcc_s). Libraries this machine lacks are left to the host that runs the image (libcuda comes with the NVIDIA
     * driver, mounted by its container runtime) and listed in {@code missing}.
     */
    static List<Entry> jarNativeLibraries(List<Path> appDirs, Path work, Set<String> missing) throws IOException, InterruptedException {
        Path dir = Files.createDirectories(work.resolve("jar-natives"));
        List<Path> elves = new ArrayList<>();
        for (Path app : appDirs) {
            try (Stream<Path> files = Files.walk(app)) {
                for (Path jar : files.filter(f -> f.toString().endsWith(".jar")).toList()) {
                    try (java.util.zip.ZipFile zip = new java.util.zip.ZipFile(jar.toFile())) {
                        for (java.util.zip.ZipEntry e : java.util.Collections.list(zip.entries())) {
                            if (e.getName().endsWith(".so") && e.getName().contains("linux") && (e.getName().contains("x86_64") || e.getName().contains("amd64"))) {
                                Path out = dir.resolve(e.getName().replace('/', '_'));
                                try (InputStream in = zip.getInputStream(e)) {
                                    Files.copy(in, out, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
                                }
                                elves.add(out);
                            }
                        }
                    }
                }
            }
        }
        return entries(closure(elves, name -> missing.add(name) || true), Path.of("/nonexistent"));
    }

    /** The libraries {@code elves} load (ldd), the loader included; a library ldd cannot find fails unless {@code absentOk}. */
    private static Set<String> closure(List<Path> elves, java.util.function.Predicate<String> absentOk) throws IOException, InterruptedException {
        Set<String> libs = new TreeSet<>();
        Pattern resolved = Pattern.compile("=>\\s+(/\\S+)\\s+\\(");
        Pattern interpreter = Pattern.compile("^\\s*(/\\S+)\\s+\\(");
        for (Path f : elves) {
            String out = run(List.of("ldd", f.toString()), "ldd " + f.getFileName());
            for (String line : out.split("\n")) {
                if (line.contains("not found")) {
                    String name = line.strip().split("\\s+")[0];
                    if (!absentOk.test(name)) {
                        throw new IOException(f + " needs a library this machine lacks: " + line.strip());
                    }
                    continue;
                }
                Matcher m = resolved.matcher(line);
                Matcher i = interpreter.matcher(line);
                if (m.find()) {
                    libs.add(m.group(1));
                } else if (i.find()) {
                    libs.add(i.group(1));
                }
            }
        }
        return libs;
    }

    /** Each library at its path and at its twin under the other of /lib and /usr/lib; skips those under {@code own}. */
    private static List<Entry> entries(Set<String> libs, Path own) throws IOException {
        List<Entry> out = new ArrayList<>();
        for (String lib : libs) {
            Path real = Path.of(lib).toRealPath();
            if (real.startsWith(own)) {
                continue; // found through the runtime's RPATH: already in the image under /opt/java
            }
            out.add(Entry.file(real, lib, true));
            // the loader searches the multiarch directories under both /lib and /usr/lib (merged /usr on the build host)
            String other = lib.startsWith("/usr/lib/") ? lib.substring(4) : lib.startsWith("/lib/") ? "/usr" + lib : null;
            if (other != null) {
                out.add(Entry.file(real, other, true));
            }
        }
        return out;
    }

    private static boolean isElf(Path f) {
        if (!Files.isRegularFile(f)) {
            return false;
        }
        try (InputStream in = Files.newInputStream(f)) {
            byte[] magic = in.readNBytes(4);
            return magic.length == 4 && magic[0] == 0x7f && magic[1] == 'E' && magic[2] == 'L' && magic[3] == 'F';
        } catch (IOException e) {
            return false;
        }
    }

    /** /etc files a JVM service wants (a non-root user to run as, name-service order: files, then DNS) and a writable /tmp. */
    static List<Entry> etc(Path work) throws IOException {
        Path dir = Files.createDirectories(work.resolve("etc"));
        Files.writeString(dir.resolve("passwd"), "root:x:0:0:root:/root:/sbin/nologin\ndeepserve:x:" + UID + ":" + UID + ":deepserve:/deployments:/sbin/nologin\n");
        Files.writeString(dir.resolve("group"), "root:x:0:\ndeepserve:x:" + UID + ":\n");
        Files.writeString(dir.resolve("nsswitch.conf"), "passwd: files\ngroup: files\nhosts: files dns\n");
        Path tmp = Files.createDirectories(work.resolve("tmp"));
        return List.of(Entry.file(dir.resolve("passwd"), "/etc/passwd", false), Entry.file(dir.resolve("group"), "/etc/group", false),
                Entry.file(dir.resolve("nsswitch.conf"), "/etc/nsswitch.conf", false),
                new Entry(tmp, "/tmp", "777")); // the JVM, Vert.x and JCuda's native loader write there
    }

    static String run(List<String> command, String what) throws IOException, InterruptedException {
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (!p.waitFor(10, TimeUnit.MINUTES) || p.exitValue() != 0) {
            throw new IOException(what + " failed: " + out.strip());
        }
        return out;
    }

    static void deleteTree(Path dir) throws IOException {
        if (!Files.exists(dir)) {
            return;
        }
        try (Stream<Path> files = Files.walk(dir)) {
            for (Path f : files.sorted(java.util.Comparator.reverseOrder()).toList()) {
                Files.delete(f);
            }
        }
    }
}
