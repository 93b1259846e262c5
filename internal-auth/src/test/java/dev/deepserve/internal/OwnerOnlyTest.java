package dev.deepserve.internal;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** Secret files and their directories: owner-only modes from creation, replacement keeps them. */
class OwnerOnlyTest {

    @TempDir
    Path tmp;

    @Test
    void directoriesAndFilesAreOwnerOnly() throws Exception {
        Path file = tmp.resolve("a/b/secret");
        OwnerOnly.write(file, "s3cret", false);
        assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(file)));
        assertEquals("rwx------", PosixFilePermissions.toString(Files.getPosixFilePermissions(file.getParent())));
        assertThrows(FileAlreadyExistsException.class, () -> OwnerOnly.write(file, "other", false));
        OwnerOnly.write(file, "rotated", true);
        assertEquals("rotated", Files.readString(file));
        assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(file)));
        Path open = Files.createDirectories(tmp.resolve("open"));
        Files.setPosixFilePermissions(open, PosixFilePermissions.fromString("rwxr-xr-x"));
        OwnerOnly.directory(open);
        assertEquals("rwx------", PosixFilePermissions.toString(Files.getPosixFilePermissions(open)));
    }
}
