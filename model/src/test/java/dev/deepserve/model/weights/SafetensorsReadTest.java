package dev.deepserve.model.weights;

import dev.deepserve.model.ModelDirectory;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Safetensors through the checkpoint mapping: every dtype (F32, BF16, F16, FP8 E4M3) reads back its values, a sharded
 * checkpoint loads bit for bit like a single file, and a missing tensor, a wrong shape, a truncated file or a corrupt
 * header length fails with a message naming the tensor or the fault.
 */
class SafetensorsReadTest {

    @TempDir
    Path tmp;

    private static SafetensorsWriter sample() {
        SafetensorsWriter w = new SafetensorsWriter();
        w.add("a.f32", DType.F32, new long[] {2, 3}, b -> {
            for (int i = 0; i < 6; i++) {
                b.putFloat(i * 1.5f - 2);
            }
        });
        w.add("b.bf16", DType.BF16, new long[] {4}, b -> {
            for (float v : new float[] {1f, -2.5f, 0.15625f, 65536f}) {
                b.putShort(Bf16.encode(v));
            }
        });
        w.add("c.f16", DType.F16, new long[] {3}, b -> {
            for (float v : new float[] {0.5f, -1024f, 6.1035156e-5f}) {
                b.putShort(Fp16.encode(v));
            }
        });
        w.add("d.fp8", DType.F8_E4M3, new long[] {2, 2}, b -> b.put(new byte[] {0x38, (byte) 0xB8, 0x7E, 0x01}));
        return w;
    }

    @Test
    void everyDtypeReadsBackThroughTheMapping() throws Exception {
        sample().write(tmp, 1, done -> { });
        try (CheckpointWeights w = CheckpointWeights.open(new ModelDirectory(tmp))) {
            Tensor a = w.tensor("a.f32", 2, 3);
            for (int i = 0; i < 6; i++) {
                assertEquals(i * 1.5f - 2, a.get(i));
            }
            Tensor b = w.tensor("b.bf16", 4);
            assertEquals(-2.5f, b.get(1));
            assertEquals(65536f, b.get(3));
            assertEquals(-1024f, w.tensor("c.f16", 3).get(1));
            assertEquals(6.1035156e-5f, w.tensor("c.f16", 3).get(2));
            Tensor d = w.tensor("d.fp8", 2, 2);
            assertEquals(1f, d.get(0));
            assertEquals(-1f, d.get(1));
            assertEquals(448f, d.get(2));
            assertEquals(0x1p-9f, d.get(3));
        }
    }

    @Test
    void shardedCheckpointLoadsTheSameAsASingleFile() throws Exception {
        Path single = tmp.resolve("single");
        Path sharded = tmp.resolve("sharded");
        sample().write(single, 1, done -> { });
        sample().write(sharded, 3, done -> { });
        assertTrue(Files.exists(sharded.resolve("model.safetensors.index.json")));
        assertTrue(Files.exists(sharded.resolve("model-00003-of-00003.safetensors")));
        try (CheckpointWeights one = CheckpointWeights.open(new ModelDirectory(single));
             CheckpointWeights many = CheckpointWeights.open(new ModelDirectory(sharded))) {
            assertEquals(one.all().keySet(), many.all().keySet());
            for (String name : one.all().keySet()) {
                Tensor x = one.all().get(name);
                Tensor y = many.all().get(name);
                assertEquals(x.toString(), y.toString());
                for (long i = 0; i < x.numel(); i++) {
                    assertEquals(Float.floatToIntBits(x.get(i)), Float.floatToIntBits(y.get(i)), name + "[" + i + "]");
                }
            }
        }
    }

    @Test
    void missingTensorOrWrongShapeNamesTensorAndExpectedShape() throws Exception {
        sample().write(tmp, 1, done -> { });
        try (CheckpointWeights w = CheckpointWeights.open(new ModelDirectory(tmp))) {
            var missing = assertThrows(SafetensorsFormatException.class, () -> w.tensor("model.norm.weight", 256));
            assertTrue(missing.getMessage().contains("model.norm.weight") && missing.getMessage().contains("[256]"), missing.getMessage());
            var shape = assertThrows(SafetensorsFormatException.class, () -> w.tensor("a.f32", 3, 2));
            assertTrue(shape.getMessage().contains("a.f32 has shape [2, 3], expected [3, 2]"), shape.getMessage());
        }
    }

    @Test
    void truncatedAndCorruptFilesGiveClearErrors() throws Exception {
        sample().write(tmp, 1, done -> { });
        Path file = tmp.resolve("model.safetensors");
        try (RandomAccessFile raf = new RandomAccessFile(file.toFile(), "rw")) {
            raf.setLength(raf.length() - 3);
        }
        var truncated = assertThrows(SafetensorsFormatException.class, () -> SafetensorsFile.open(file));
        assertTrue(truncated.getMessage().contains("truncated"), truncated.getMessage());

        Path bogus = tmp.resolve("bogus.safetensors");
        Files.write(bogus, ByteBuffer.allocate(16).order(ByteOrder.LITTLE_ENDIAN).putLong(1L << 40).array());
        var corrupt = assertThrows(SafetensorsFormatException.class, () -> SafetensorsFile.open(bogus));
        assertTrue(corrupt.getMessage().contains("corrupt safetensors header length"), corrupt.getMessage());

        Path tiny = tmp.resolve("tiny.safetensors");
        Files.write(tiny, new byte[] {1, 2, 3});
        assertTrue(assertThrows(SafetensorsFormatException.class, () -> SafetensorsFile.open(tiny)).getMessage().contains("truncated"));
    }
}
