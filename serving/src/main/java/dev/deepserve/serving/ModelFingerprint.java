package dev.deepserve.serving;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.List;
import java.util.stream.Stream;

/**
 * A short name for one checkpoint as the engine serves it, for keeping what it computed apart from other models': the
 * SHA-256 of its {@code config.json}, each weight file's name and size and its first and last 64 KiB (a changed
 * tensor anywhere moves a file's size or its header, which lists every tensor's offsets, or its data at the ends),
 * and whatever the caller adds (block size, KV precision). Cheap on a 700 GB checkpoint: it reads a few MiB.
 */
final class ModelFingerprint {

    private static final int EDGE = 64 << 10;

    private ModelFingerprint() {
    }

    static String of(Path modelDir, String extra) throws IOException {
        try {
            MessageDigest d = MessageDigest.getInstance("SHA-256");
            d.update(Files.readAllBytes(modelDir.resolve("config.json")));
            List<Path> weights;
            try (Stream<Path> s = Files.list(modelDir)) {
                weights = s.filter(p -> p.getFileName().toString().endsWith(".safetensors")).sorted().toList();
            }
            for (Path w : weights) {
                long size = Files.size(w);
                d.update((w.getFileName() + "\n" + size + "\n").getBytes(StandardCharsets.UTF_8));
                try (InputStream in = Files.newInputStream(w)) {
                    d.update(in.readNBytes(EDGE));
                    long skip = size - 2L * EDGE;
                    if (skip > 0) {
                        in.skipNBytes(skip);
                    }
                    d.update(in.readAllBytes());
                }
            }
            d.update(extra.getBytes(StandardCharsets.UTF_8));
            return HexFormat.of().formatHex(d.digest(), 0, 12);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
