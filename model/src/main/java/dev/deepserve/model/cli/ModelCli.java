package dev.deepserve.model.cli;

import dev.deepserve.model.ModelDirectory;
import dev.deepserve.model.config.ModelConfigException;
import dev.deepserve.model.engine.Mtp;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.weights.SafetensorsFormatException;
import dev.deepserve.model.tiny.TinyCheckpoint;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
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
        Map<String, String> opts = options(args, 1, Set.of("--out", "--config", "--seed", "--shards", "--model", "--tokens"), Set.of("--mtp", "--fp8-activations"));
        switch (args[0]) {
            case "generate-tiny" -> generateTiny(opts, out, err, env);
            case "logits" -> logits(opts, out, err);
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

    /**
     * {@code model logits --model DIR --tokens 1,2,3 --out FILE [--mtp]}: one causal prefill over the tokens, writing
     * little-endian float32 logits {@code [T, vocab]} of the main head, or with {@code --mtp} the first MTP module's
     * {@code [T-1, vocab]} (row i predicts token i+2 from the main hidden state at i and token i+1).
     * {@code --fp8-activations} quantizes activations to FP8 in 1×128 tiles before FP8 matmuls (DeepSeek-V3 §3.3).
     */
    private static void logits(Map<String, String> opts, PrintStream out, PrintStream err) {
        Path dir = Path.of(require(opts, "--model", "logits"));
        Path file = Path.of(require(opts, "--out", "logits"));
        int[] tokens = tokenList(require(opts, "--tokens", "logits"));
        boolean mtp = opts.containsKey("--mtp");
        ModelDirectory md = new ModelDirectory(dir);
        if (!Files.isRegularFile(md.config())) {
            throw new UsageError("logits: " + dir + " has no config.json");
        }
        md.weightsProblem().ifPresent(p -> {
            throw new UsageError("logits: " + p);
        });
        long t0 = System.nanoTime();
        try (CpuOps ops = CpuOps.create(CpuOps.vectorAvailable(), Runtime.getRuntime().availableProcessors(), opts.containsKey("--fp8-activations"));
             Transformer model = Transformer.load(dir, ops)) {
            var config = model.config();
            if (mtp && model.mtp() == null) {
                throw new UsageError("logits --mtp: this checkpoint has no MTP module (num_nextn_predict_layers is 0)");
            }
            if (mtp && tokens.length < 2) {
                throw new UsageError("logits --mtp: needs at least 2 tokens");
            }
            for (int t : tokens) {
                if (t >= config.vocabSize()) {
                    throw new UsageError("logits: token id " + t + " is outside the vocabulary [0, " + config.vocabSize() + ")");
                }
            }
            long t1 = System.nanoTime();
            float[] hidden = model.forward(tokens, model.newCache(tokens.length));
            float[] result;
            int rows;
            if (mtp) {
                rows = tokens.length - 1;
                Mtp module = model.mtp();
                int[] next = java.util.Arrays.copyOfRange(tokens, 1, tokens.length);
                float[] states = module.forward(hidden, java.util.List.of(new Transformer.Step(next, module.newCache(rows))), model);
                result = module.logits(states, 0, rows, model);
            } else {
                rows = tokens.length;
                result = model.logits(hidden, 0, rows);
            }
            long t2 = System.nanoTime();
            writeFloats(file, result);
            err.printf("%s: %d tokens on %s (load %d ms, forward %d ms)%n", config.modelType(), tokens.length, ops.describe(),
                    (t1 - t0) / 1_000_000, (t2 - t1) / 1_000_000);
            out.println("wrote " + (mtp ? "MTP " : "") + "logits [" + rows + ", " + config.vocabSize() + "] float32 LE to " + file.toAbsolutePath());
        } catch (ModelConfigException | SafetensorsFormatException e) {
            throw new UsageError("logits: " + e.getMessage());
        } catch (IOException e) {
            throw new UsageError("logits: cannot write " + file + ": " + e.getMessage());
        }
    }

    private static int[] tokenList(String csv) {
        String[] parts = csv.split(",", -1);
        int[] ids = new int[parts.length];
        for (int i = 0; i < parts.length; i++) {
            try {
                ids[i] = Integer.parseInt(parts[i].trim());
            } catch (NumberFormatException e) {
                throw new UsageError("--tokens must be comma-separated token ids, got '" + parts[i].trim() + "'");
            }
            if (ids[i] < 0) {
                throw new UsageError("--tokens: token id " + ids[i] + " is negative");
            }
        }
        return ids;
    }

    private static void writeFloats(Path file, float[] values) throws IOException {
        Path parent = file.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        ByteBuffer buf = ByteBuffer.allocate(values.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        buf.asFloatBuffer().put(values);
        Files.write(file, buf.array());
    }

    /**
     * Where the fetch scripts cache what they download, by their rule: {@code $DEEPSERVE_CACHE} when set and not empty,
     * else {@code $HOME/.cache/deepserve} (the JVM's user.home only when HOME is unset).
     */
    public static Path cacheDir(Map<String, String> env) {
        String cache = env.get("DEEPSERVE_CACHE");
        if (cache != null && !cache.isBlank()) {
            return Path.of(cache);
        }
        String home = env.get("HOME");
        return Path.of(home != null && !home.isBlank() ? home : System.getProperty("user.home"), ".cache", "deepserve");
    }

    /** The cached tokenizer files; generating without them would give a model directory nothing can tokenize for. */
    public static Path tokenizerDir(Map<String, String> env) {
        Path dir = env.containsKey("DEEPSERVE_TOKENIZER_DIR") ? Path.of(env.get("DEEPSERVE_TOKENIZER_DIR"))
                : cacheDir(env).resolve(TOKENIZER_CACHE_NAME);
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
