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
 * SHA-256 of its {@code config.json}, and of each weight file its name, size, modification time, file key (inode) and
 * first and last 64 KiB, and whatever the caller adds (block size, KV precision). A fine-tune of the same shape has the
 * same sizes and safetensors headers, so the time and inode are what tell it apart when its edges match: the rule errs
 * towards a new name (a copied checkpoint starts with an empty disk tier), never towards serving another model's KV.
 * Cheap on a 700 GB checkpoint: it reads a few MiB.
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
                var attributes = Files.readAttributes(w, java.nio.file.attribute.BasicFileAttributes.class);
                long size = attributes.size();
                d.update((w.getFileName() + "\n" + size + "\n" + attributes.lastModifiedTime().toMillis() + "\n" + attributes.fileKey() + "\n")
                        .getBytes(StandardCharsets.UTF_8));
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
