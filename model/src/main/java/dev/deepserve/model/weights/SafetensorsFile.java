package dev.deepserve.model.weights;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * One safetensors file, memory-mapped with the FFM API (files larger than 2 GiB and larger than the heap work).
 * The header is validated completely before any tensor is handed out: every dtype known, every byte range inside
 * the data section and consistent with its shape.
 */
public final class SafetensorsFile implements AutoCloseable {

    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long MAX_HEADER = 100L << 20;

    private final Path path;
    private final Arena arena;
    private final Map<String, Tensor> tensors;

    private SafetensorsFile(Path path, Arena arena, Map<String, Tensor> tensors) {
        this.path = path;
        this.arena = arena;
        this.tensors = tensors;
    }

    public static SafetensorsFile open(Path path) {
        Arena arena = Arena.ofShared();
        try (FileChannel ch = FileChannel.open(path, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < 8) {
                throw new SafetensorsFormatException(path + ": truncated safetensors file (" + size + " bytes, no header)");
            }
            MemorySegment file = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            long headerLength = file.get(ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0);
            if (headerLength <= 0 || headerLength > MAX_HEADER || 8 + headerLength > size) {
                throw new SafetensorsFormatException(path + ": corrupt safetensors header length " + headerLength + " for a file of " + size + " bytes");
            }
            byte[] headerBytes = file.asSlice(8, headerLength).toArray(ValueLayout.JAVA_BYTE);
            JsonNode header;
            try {
                header = JSON.readTree(new String(headerBytes, StandardCharsets.UTF_8));
            } catch (IOException e) {
                throw new SafetensorsFormatException(path + ": safetensors header is not valid JSON");
            }
            if (header == null || !header.isObject()) {
                throw new SafetensorsFormatException(path + ": safetensors header is not a JSON object");
            }
            long dataStart = 8 + headerLength;
            long dataSize = size - dataStart;
            Map<String, Tensor> tensors = new LinkedHashMap<>();
            for (Map.Entry<String, JsonNode> e : header.properties()) {
                if (e.getKey().equals("__metadata__")) {
                    continue;
                }
                tensors.put(e.getKey(), tensor(path, e.getKey(), e.getValue(), file, dataStart, dataSize));
            }
            return new SafetensorsFile(path, arena, Collections.unmodifiableMap(tensors));
        } catch (IOException e) {
            arena.close();
            throw new SafetensorsFormatException(path + ": cannot read (" + e.getMessage() + ")");
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private static Tensor tensor(Path path, String name, JsonNode t, MemorySegment file, long dataStart, long dataSize) {
        String where = path + ": tensor " + name;
        DType dtype;
        try {
            dtype = DType.of(t.path("dtype").asText());
        } catch (IllegalArgumentException e) {
            throw new SafetensorsFormatException(where + ": " + e.getMessage());
        }
        JsonNode shapeNode = t.path("shape");
        JsonNode offsets = t.path("data_offsets");
        if (!shapeNode.isArray() || !offsets.isArray() || offsets.size() != 2) {
            throw new SafetensorsFormatException(where + ": header entry needs shape and data_offsets [begin, end]");
        }
        long[] shape = new long[shapeNode.size()];
        long numel = 1;
        for (int i = 0; i < shape.length; i++) {
            if (!shapeNode.get(i).canConvertToLong() || shapeNode.get(i).asLong() < 0) {
                throw new SafetensorsFormatException(where + ": bad shape " + shapeNode);
            }
            shape[i] = shapeNode.get(i).asLong();
            numel = Math.multiplyExact(numel, shape[i]);
        }
        long begin = offsets.get(0).asLong(-1);
        long end = offsets.get(1).asLong(-1);
        if (begin < 0 || end < begin || end > dataSize) {
            throw new SafetensorsFormatException(where + ": data_offsets [" + begin + ", " + end + "] lie outside the "
                    + dataSize + " data bytes (truncated file?)");
        }
        if (end - begin != numel * dtype.bytes()) {
            throw new SafetensorsFormatException(where + ": " + (end - begin) + " bytes do not hold shape " + shapeNode + " of " + dtype);
        }
        return new Tensor(name, dtype, shape, file.asSlice(dataStart + begin, end - begin));
    }

    public Path path() {
        return path;
    }

    public Map<String, Tensor> tensors() {
        return tensors;
    }

    @Override
    public void close() {
        arena.close();
    }
}
