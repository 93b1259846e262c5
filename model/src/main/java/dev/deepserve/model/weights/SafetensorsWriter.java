package dev.deepserve.model.weights;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import java.util.function.LongConsumer;

/**
 * Writes tensors in the safetensors format: an 8-byte little-endian header length, a JSON header naming each tensor's
 * dtype, shape and byte range, then the raw little-endian data. Tensors are produced one at a time, so a checkpoint
 * larger than the heap can be written. With more than one shard it also writes {@code model.safetensors.index.json}.
 */
public final class SafetensorsWriter {

    /** One tensor to write: its bytes are produced into the buffer on demand. */
    public record Entry(String name, DType dtype, long[] shape, Consumer<ByteBuffer> fill) {
        public long byteSize() {
            long n = dtype.bytes();
            for (long d : shape) {
                n *= d;
            }
            return n;
        }
    }

    private static final ObjectMapper JSON = new ObjectMapper();
    private final List<Entry> entries = new ArrayList<>();

    public void add(String name, DType dtype, long[] shape, Consumer<ByteBuffer> fill) {
        entries.add(new Entry(name, dtype, shape, fill));
    }

    public long totalBytes() {
        return entries.stream().mapToLong(Entry::byteSize).sum();
    }

    /**
     * Writes {@code model.safetensors} (one shard) or {@code model-0000i-of-0000n.safetensors} plus the index into
     * {@code dir}. {@code progress} receives the bytes written so far.
     */
    public void write(Path dir, int shards, LongConsumer progress) throws IOException {
        if (shards < 1) {
            throw new IllegalArgumentException("shards must be at least 1");
        }
        Files.createDirectories(dir);
        List<List<Entry>> split = split(shards);
        Map<String, String> weightMap = new LinkedHashMap<>();
        long[] written = {0};
        for (int s = 0; s < split.size(); s++) {
            String file = split.size() == 1 ? "model.safetensors"
                    : String.format("model-%05d-of-%05d.safetensors", s + 1, split.size());
            writeFile(dir.resolve(file), split.get(s), bytes -> {
                written[0] += bytes;
                progress.accept(written[0]);
            });
            for (Entry e : split.get(s)) {
                weightMap.put(e.name(), file);
            }
        }
        if (split.size() > 1) {
            ObjectNode index = JSON.createObjectNode();
            index.putObject("metadata").put("total_size", totalBytes());
            ObjectNode map = index.putObject("weight_map");
            weightMap.forEach(map::put);
            Files.writeString(dir.resolve("model.safetensors.index.json"), JSON.writerWithDefaultPrettyPrinter().writeValueAsString(index));
        }
    }

    private List<List<Entry>> split(int shards) {
        long target = (totalBytes() + shards - 1) / shards;
        List<List<Entry>> out = new ArrayList<>();
        List<Entry> current = new ArrayList<>();
        long size = 0;
        for (Entry e : entries) {
            if (!current.isEmpty() && size + e.byteSize() > target && out.size() < shards - 1) {
                out.add(current);
                current = new ArrayList<>();
                size = 0;
            }
            current.add(e);
            size += e.byteSize();
        }
        out.add(current);
        return out;
    }

    private static void writeFile(Path file, List<Entry> tensors, LongConsumer written) throws IOException {
        ObjectNode header = JSON.createObjectNode();
        header.putObject("__metadata__").put("format", "pt");
        long offset = 0;
        for (Entry e : tensors) {
            ObjectNode t = header.putObject(e.name());
            t.put("dtype", e.dtype().name());
            var shape = t.putArray("shape");
            for (long d : e.shape()) {
                shape.add(d);
            }
            t.putArray("data_offsets").add(offset).add(offset + e.byteSize());
            offset += e.byteSize();
        }
        byte[] json = JSON.writeValueAsString(header).getBytes(StandardCharsets.UTF_8);
        int padded = (json.length + 7) / 8 * 8;
        ByteBuffer head = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
        head.putLong(padded).put(json);
        while (head.hasRemaining()) {
            head.put((byte) ' ');
        }
        head.flip();
        Path tmp = file.resolveSibling(file.getFileName() + ".partial");
        try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING, StandardOpenOption.WRITE)) {
            writeFully(ch, head);
            for (Entry e : tensors) {
                if (e.byteSize() > Integer.MAX_VALUE - 16) {
                    throw new IOException("tensor " + e.name() + " is too large for the generator (" + e.byteSize() + " bytes)");
                }
                ByteBuffer data = ByteBuffer.allocate((int) e.byteSize()).order(ByteOrder.LITTLE_ENDIAN);
                e.fill().accept(data);
                if (data.position() != data.capacity()) {
                    throw new IllegalStateException("tensor " + e.name() + " produced " + data.position() + " of " + data.capacity() + " bytes");
                }
                data.flip();
                writeFully(ch, data);
                written.accept(e.byteSize());
            }
        }
        Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }

    private static void writeFully(FileChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }
}
