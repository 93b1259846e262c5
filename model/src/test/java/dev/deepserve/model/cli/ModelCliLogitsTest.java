package dev.deepserve.model.cli;

import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.model.config.ModelConfig;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.tiny.TinyCheckpoint;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The {@code model logits} contract of DESIGN.md: little-endian float32 [T, vocab], or [T-1, vocab] with --mtp. */
class ModelCliLogitsTest {

    @TempDir
    static Path tmp;
    static Path model;

    static synchronized Path tinyModel() throws Exception {
        if (model == null) {
            ObjectNode json = TinyCheckpoint.preset("tiny-v3").toJson();
            json.put("vocab_size", 300);
            json.put("num_hidden_layers", 2);
            model = tmp.resolve("m");
            new TinyCheckpoint(ModelConfig.parse(json), 3).write(model, 2, null, new PrintStream(OutputStream.nullOutputStream()));
        }
        return model;
    }

    static String run(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ModelCli.run(args, new PrintStream(out), new PrintStream(OutputStream.nullOutputStream()), Map.of());
        return out.toString();
    }

    static float[] read(Path f) throws Exception {
        ByteBuffer b = ByteBuffer.wrap(Files.readAllBytes(f)).order(ByteOrder.LITTLE_ENDIAN);
        float[] v = new float[b.remaining() / 4];
        b.asFloatBuffer().get(v);
        return v;
    }

    @Test
    void writesMainAndMtpLogitsInTheContractLayout() throws Exception {
        Path dir = tinyModel();
        Path main = tmp.resolve("main.bin");
        Path mtp = tmp.resolve("mtp.bin");
        assertTrue(run("logits", "--model", dir.toString(), "--tokens", "1, 2,3,299", "--out", main.toString()).contains("[4, 300]"));
        run("logits", "--model", dir.toString(), "--tokens", "1,2,3,299", "--out", mtp.toString(), "--mtp");
        float[] mainLogits = read(main);
        float[] mtpLogits = read(mtp);
        assertEquals(4 * 300, mainLogits.length);
        assertEquals(3 * 300, mtpLogits.length);
        try (Transformer t = Transformer.load(dir, CpuOps.best())) {
            int[] tokens = {1, 2, 3, 299};
            float[] h = t.forward(tokens, t.newCache(4));
            assertArrayEquals(t.logits(h, 0, 4), mainLogits);
            var module = t.mtp();
            float[] s = module.forward(h, List.of(new Transformer.Step(new int[] {2, 3, 299}, module.newCache(3))), t);
            assertArrayEquals(module.logits(s, 0, 3, t), mtpLogits);
        }
    }

    @Test
    void badArgumentsGiveOneLineErrors() throws Exception {
        String dir = tinyModel().toString();
        String out = tmp.resolve("x.bin").toString();
        assertEquals("logits: token id 300 is outside the vocabulary [0, 300)",
                assertThrows(ModelCli.UsageError.class, () -> run("logits", "--model", dir, "--tokens", "1,300", "--out", out)).getMessage());
        assertEquals("--tokens must be comma-separated token ids, got 'x'",
                assertThrows(ModelCli.UsageError.class, () -> run("logits", "--model", dir, "--tokens", "1,x", "--out", out)).getMessage());
        assertEquals("logits --mtp: needs at least 2 tokens",
                assertThrows(ModelCli.UsageError.class, () -> run("logits", "--model", dir, "--tokens", "1", "--out", out, "--mtp")).getMessage());
        assertTrue(assertThrows(ModelCli.UsageError.class, () -> run("logits", "--model", tmp.resolve("none").toString(), "--tokens", "1", "--out", out))
                .getMessage().contains("has no config.json"));
        assertEquals("logits: --out is required",
                assertThrows(ModelCli.UsageError.class, () -> run("logits", "--model", dir, "--tokens", "1")).getMessage());
    }
}
