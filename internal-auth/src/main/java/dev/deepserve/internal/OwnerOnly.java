package dev.deepserve.internal;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
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

    /**
     * Creates {@code dir} (and missing parents) as 0700, or narrows one this user already owns to 0700. A directory
     * someone else provided (a mounted volume owned by another user) is left as it is; one that appeared owned by
     * another user between the check and the creation, a symbolic link, or a file system without POSIX permissions is
     * refused with an {@link IOException}.
     */
    public static Path directory(Path dir) throws IOException {
        try {
            boolean existed = Files.exists(dir, LinkOption.NOFOLLOW_LINKS);
            if (!existed) {
                Files.createDirectories(dir, DIRECTORY);
            }
            if (Files.isSymbolicLink(dir) || !Files.isDirectory(dir, LinkOption.NOFOLLOW_LINKS)) {
                throw new IOException(dir + " is not a directory of its own (a symbolic link or a file)");
            }
            if (!ownedByThisUser(dir)) {
                if (!existed) {
                    throw new IOException(dir + " was made by another user meanwhile");
                }
                return dir;
            }
            Files.setPosixFilePermissions(dir, EnumSet.of(PosixFilePermission.OWNER_READ, PosixFilePermission.OWNER_WRITE,
                    PosixFilePermission.OWNER_EXECUTE));
            return dir;
        } catch (UnsupportedOperationException e) {
            throw new IOException("the file system of " + dir + " has no POSIX permissions: secrets cannot be kept owner-only there");
        }
    }

    /** Whether this process's user owns {@code path} (true when the user cannot be told). */
    private static boolean ownedByThisUser(Path path) throws IOException {
        String me = ProcessHandle.current().info().user().orElse(null);
        return me == null || Files.getOwner(path, LinkOption.NOFOLLOW_LINKS).getName().equals(me);
    }

    /**
     * Writes {@code text} to a new 0600 file (its directory made owner-only first). {@code replace}: an existing file is
     * replaced atomically by a new 0600 one; otherwise an existing file is an error.
     */
    public static void write(Path file, String text, boolean replace) throws IOException {
        directory(file.toAbsolutePath().getParent());
        if (!replace && Files.exists(file, LinkOption.NOFOLLOW_LINKS)) {
            throw new FileAlreadyExistsException(file.toString());
        }
        // written whole to a new file beside it, then renamed: a crash leaves the old secret or the new, never half
        Path next = file.resolveSibling("." + file.getFileName() + ".new");
        Files.deleteIfExists(next);
        try (java.nio.channels.FileChannel out = java.nio.channels.FileChannel.open(next,
                EnumSet.of(StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE), FILE)) {
            ByteBuffer bytes = ByteBuffer.wrap(text.getBytes(StandardCharsets.UTF_8));
            while (bytes.hasRemaining()) {
                out.write(bytes);
            }
            out.force(true);
        } catch (UnsupportedOperationException e) {
            throw new IOException("the file system of " + file + " has no POSIX permissions: secrets cannot be kept owner-only there");
        }
        Files.move(next, file, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }
}
