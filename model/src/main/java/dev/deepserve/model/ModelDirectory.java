package dev.deepserve.model;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;
import java.util.stream.Stream;

/**
 * A checkpoint directory in the Hugging Face layout: {@code config.json}, {@code model.safetensors} or shards with
 * {@code model.safetensors.index.json}, and the tokenizer files.
 */
public record ModelDirectory(Path path) {

    public Path config() {
        return path.resolve("config.json");
    }

    public Path index() {
        return path.resolve("model.safetensors.index.json");
    }

    public Path singleFile() {
        return path.resolve("model.safetensors");
    }

    public Path tokenizer() {
        return path.resolve("tokenizer.json");
    }

    public Path tokenizerConfig() {
        return path.resolve("tokenizer_config.json");
    }

    /** Why this directory cannot serve the model, in one line; empty when the files a forward pass needs are there. */
    public Optional<String> weightsProblem() {
        if (!Files.isDirectory(path)) {
            return Optional.of("model directory " + path + " does not exist (create one with: ./deepserve model generate-tiny --out " + path + ")");
        }
        if (!Files.isRegularFile(config())) {
            return Optional.of("model directory " + path + " has no config.json");
        }
        if (Files.isRegularFile(index()) || Files.isRegularFile(singleFile())) {
            return Optional.empty();
        }
        try (Stream<Path> files = Files.list(path)) {
            if (files.anyMatch(p -> p.getFileName().toString().endsWith(".safetensors"))) {
                return Optional.of("model directory " + path + " has safetensors shards but no model.safetensors.index.json");
            }
        } catch (IOException e) {
            return Optional.of("model directory " + path + " cannot be listed: " + e.getMessage());
        }
        return Optional.of("model directory " + path + " has no model.safetensors (nor shards with model.safetensors.index.json)");
    }

    /** Why the tokenizer cannot be loaded from this directory, in one line; empty when its files are there. */
    public Optional<String> tokenizerProblem() {
        if (!Files.isDirectory(path)) {
            return Optional.of("model directory " + path + " does not exist");
        }
        if (!Files.isRegularFile(tokenizer())) {
            return Optional.of("model directory " + path + " has no tokenizer.json");
        }
        if (!Files.isRegularFile(tokenizerConfig())) {
            return Optional.of("model directory " + path + " has no tokenizer_config.json");
        }
        return Optional.empty();
    }
}
