package dev.deepserve.internal;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.SeekableByteChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.FileAttribute;
import java.nio.file.attribute.PosixFilePermission;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.EnumSet;
import java.util.Set;

/**
 * Directories and files only their owner can read (0700 / 0600), created with those modes — never written first and
 * restricted after, so there is no moment another local user could open them.
 */
public final class OwnerOnly {

    private static final FileAttribute<Set<PosixFilePermission>> DIRECTORY =
            PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rwx------"));
    private static final FileAttribute<Set<PosixFilePermission>> FILE =
            PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------"));

    private OwnerOnly() {
    }

    /** Creates {@code dir} (and missing parents) as 0700; an existing one is narrowed to 0700. */
    public static Path directory(Path dir) throws IOException {
        if (Files.isDirectory(dir)) {
            Files.setPosixFilePermissions(dir, EnumSet.of(PosixFilePermission.OWNER_READ, PosixFilePermission.OWNER_WRITE,
                    PosixFilePermission.OWNER_EXECUTE));
            return dir;
        }
        return Files.createDirectories(dir, DIRECTORY);
    }

    /**
     * Writes {@code text} to a new 0600 file (its directory made owner-only first). {@code replace}: an existing file is
     * replaced atomically by a new 0600 one; otherwise an existing file is an error.
     */
    public static void write(Path file, String text, boolean replace) throws IOException {
        directory(file.toAbsolutePath().getParent());
        Path target = replace ? file.resolveSibling("." + file.getFileName() + ".new") : file;
        if (replace) {
            Files.deleteIfExists(target);
        } else if (Files.exists(file)) {
            throw new FileAlreadyExistsException(file.toString());
        }
        try (SeekableByteChannel out = Files.newByteChannel(target, EnumSet.of(StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE), FILE)) {
            ByteBuffer bytes = ByteBuffer.wrap(text.getBytes(StandardCharsets.UTF_8));
            while (bytes.hasRemaining()) {
                out.write(bytes);
            }
        }
        if (replace) {
            Files.move(target, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
        }
    }
}
