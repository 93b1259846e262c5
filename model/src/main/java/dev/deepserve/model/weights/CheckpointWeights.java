package dev.deepserve.model.weights;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.deepserve.model.ModelDirectory;

import java.io.IOException;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * All tensors of a checkpoint directory: {@code model.safetensors}, or the shards named by
 * {@code model.safetensors.index.json}. Lookups name the tensor and the expected shape when they fail.
 */
public final class CheckpointWeights implements AutoCloseable {

    private static final ObjectMapper JSON = new ObjectMapper();

    private final List<SafetensorsFile> files;
    private final Map<String, Tensor> tensors;

    private CheckpointWeights(List<SafetensorsFile> files, Map<String, Tensor> tensors) {
        this.files = files;
        this.tensors = tensors;
    }

    public static CheckpointWeights open(ModelDirectory dir) {
        List<SafetensorsFile> files = new ArrayList<>();
        Map<String, Tensor> tensors = new HashMap<>();
        try {
            if (Files.isRegularFile(dir.index())) {
                JsonNode index;
                try {
                    index = JSON.readTree(dir.index().toFile());
                } catch (IOException e) {
                    throw new SafetensorsFormatException(dir.index() + ": not valid JSON");
                }
                JsonNode map = index.path("weight_map");
                if (!map.isObject()) {
                    throw new SafetensorsFormatException(dir.index() + ": has no weight_map object");
                }
                Map<String, SafetensorsFile> shards = new HashMap<>();
                for (Map.Entry<String, JsonNode> e : map.properties()) {
                    String shard = e.getValue().asText();
                    if (shard.contains("/") || shard.contains("..")) {
                        throw new SafetensorsFormatException(dir.index() + ": shard name '" + shard + "' must be a file in the model directory");
                    }
                    SafetensorsFile file = shards.computeIfAbsent(shard, s -> {
                        SafetensorsFile f = SafetensorsFile.open(dir.path().resolve(s));
                        files.add(f);
                        return f;
                    });
                    Tensor t = file.tensors().get(e.getKey());
                    if (t == null) {
                        throw new SafetensorsFormatException(dir.index() + " puts tensor " + e.getKey() + " in " + shard + ", which does not contain it");
                    }
                    tensors.put(e.getKey(), t);
                }
            } else {
                SafetensorsFile file = SafetensorsFile.open(dir.singleFile());
                files.add(file);
                tensors.putAll(file.tensors());
            }
        } catch (RuntimeException e) {
            files.forEach(SafetensorsFile::close);
            throw e;
        }
        return new CheckpointWeights(files, tensors);
    }

    public boolean has(String name) {
        return tensors.containsKey(name);
    }

    /** The tensor, which must exist with exactly this shape. */
    public Tensor tensor(String name, long... expectedShape) {
        Tensor t = tensors.get(name);
        if (t == null) {
            throw new SafetensorsFormatException("checkpoint is missing tensor " + name + " (expected shape " + Arrays.toString(expectedShape) + ")");
        }
        if (!t.hasShape(expectedShape)) {
            throw new SafetensorsFormatException("tensor " + name + " has shape " + Arrays.toString(t.shape())
                    + ", expected " + Arrays.toString(expectedShape));
        }
        return t;
    }

    public Map<String, Tensor> all() {
        return Map.copyOf(tensors);
    }

    @Override
    public void close() {
        files.forEach(SafetensorsFile::close);
    }
}
