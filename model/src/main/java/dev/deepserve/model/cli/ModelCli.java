package dev.deepserve.model.cli;

import dev.deepserve.model.config.ModelConfigException;
import dev.deepserve.model.tiny.TinyCheckpoint;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.Set;

/** {@code ./deepserve model ...}: checkpoint tools. Errors are thrown as {@link UsageError} with a one-line message. */
public final class ModelCli {

    /** Where scripts/fetch-tokenizer.sh caches the pinned DeepSeek-V3 tokenizer files. */
    public static final String TOKENIZER_CACHE_NAME = "tokenizer-deepseek_v3-3.7.2";

    public static final class UsageError extends RuntimeException {
        public UsageError(String message) {
            super(message);
        }
    }

    private ModelCli() {
    }

    public static void run(String[] args, PrintStream out, PrintStream err, Map<String, String> env) {
        if (args.length == 0) {
            throw new UsageError("model: missing subcommand (generate-tiny or logits)");
        }
        Map<String, String> opts = options(args, 1, Set.of("--out", "--config", "--seed", "--shards", "--model", "--tokens"), Set.of("--mtp"));
        switch (args[0]) {
            case "generate-tiny" -> generateTiny(opts, out, err, env);
            case "logits" -> throw new UsageError("model logits: the forward pass is not built yet (model engine issue)");
            default -> throw new UsageError("model: unknown subcommand '" + args[0] + "' (expected generate-tiny or logits)");
        }
    }

    private static void generateTiny(Map<String, String> opts, PrintStream out, PrintStream err, Map<String, String> env) {
        Path dir = Path.of(require(opts, "--out", "generate-tiny"));
        String preset = opts.getOrDefault("--config", "tiny-v3");
        long seed = parseLong(opts.getOrDefault("--seed", "0"), "--seed");
        int shards = (int) parseLong(opts.getOrDefault("--shards", "1"), "--shards");
        if (shards < 1 || shards > 1000) {
            throw new UsageError("generate-tiny: --shards must be between 1 and 1000");
        }
        try {
            var config = TinyCheckpoint.preset(preset);
            if (Files.exists(dir.resolve("config.json"))) {
                throw new UsageError("generate-tiny: " + dir + " already holds a checkpoint (config.json); choose another --out or remove it");
            }
            Path tokenizer = tokenizerDir(env);
            new TinyCheckpoint(config, seed).write(dir, shards, tokenizer, err);
            out.println("wrote " + preset + " (seed " + seed + ") to " + dir.toAbsolutePath());
        } catch (IllegalArgumentException | ModelConfigException e) {
            throw new UsageError("generate-tiny: " + e.getMessage());
        } catch (IOException e) {
            throw new UsageError("generate-tiny: cannot write " + dir + ": " + e.getMessage());
        }
    }

    /** The cached tokenizer files; generating without them would give a model directory nothing can tokenize for. */
    public static Path tokenizerDir(Map<String, String> env) {
        Path dir = env.containsKey("DEEPSERVE_TOKENIZER_DIR") ? Path.of(env.get("DEEPSERVE_TOKENIZER_DIR"))
                : Path.of(env.getOrDefault("DEEPSERVE_CACHE", System.getProperty("user.home") + "/.cache/deepserve")).resolve(TOKENIZER_CACHE_NAME);
        if (!Files.isRegularFile(dir.resolve("tokenizer.json")) || !Files.isRegularFile(dir.resolve("tokenizer_config.json"))) {
            throw new UsageError("the DeepSeek-V3 tokenizer files are not in " + dir + "; fetch them with scripts/fetch-tokenizer.sh (or set DEEPSERVE_TOKENIZER_DIR)");
        }
        return dir;
    }

    private static Map<String, String> options(String[] args, int from, Set<String> valued, Set<String> flags) {
        Map<String, String> opts = new HashMap<>();
        for (int i = from; i < args.length; i++) {
            String a = args[i];
            if (flags.contains(a)) {
                opts.put(a, "true");
            } else if (valued.contains(a)) {
                if (i + 1 >= args.length) {
                    throw new UsageError(a + " needs a value");
                }
                opts.put(a, args[++i]);
            } else {
                throw new UsageError("unknown option '" + a + "'");
            }
        }
        return opts;
    }

    private static String require(Map<String, String> opts, String name, String command) {
        String v = opts.get(name);
        if (v == null) {
            throw new UsageError(command + ": " + name + " is required");
        }
        return v;
    }

    private static long parseLong(String v, String name) {
        try {
            return Long.parseLong(v);
        } catch (NumberFormatException e) {
            throw new UsageError(name + " must be an integer, got '" + v + "'");
        }
    }
}
