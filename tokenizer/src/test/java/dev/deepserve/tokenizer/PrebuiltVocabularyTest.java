package dev.deepserve.tokenizer;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.zip.CRC32C;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The prebuilt binary vocabulary next to tokenizer.json: a tokenizer loaded from it is the one the JSON gives (same
 * ids, text, special tokens and chat template on the test corpus); it is used only when it was built from the files
 * beside it, so an edited tokenizer_config.json, a flipped byte, a truncated file or a forged count falls back to the
 * JSON and is rebuilt; and a directory where it cannot be written still loads.
 */
class PrebuiltVocabularyTest {

    @TempDir
    Path tmp;

    Path copy() throws Exception {
        Path dir = Files.createDirectories(tmp.resolve("model"));
        for (String f : new String[] {"tokenizer.json", "tokenizer_config.json"}) {
            Files.copy(TokenizerFiles.dir().resolve(f), dir.resolve(f), StandardCopyOption.REPLACE_EXISTING);
        }
        return dir;
    }

    static void assertSameTokenizer(Tokenizer expected, Tokenizer actual) {
        for (String text : Corpus.build(40, 5)) {
            int[] ids = expected.encode(text);
            assertArrayEquals(ids, actual.encode(text), text);
            assertEquals(expected.decode(ids, false), actual.decode(ids, false));
        }
        assertEquals(expected.vocabSize(), actual.vocabSize());
        assertEquals(expected.bosId(), actual.bosId());
        assertEquals(expected.eosId(), actual.eosId());
        assertEquals(expected.tokenId("<｜User｜>"), actual.tokenId("<｜User｜>"));
        assertEquals(expected.tokenId("hello"), actual.tokenId("hello"));
        var messages = java.util.List.of(java.util.Map.<String, Object>of("role", "user", "content", "hi"));
        assertEquals(expected.chatTemplate().render(messages, true, java.util.Map.of()), actual.chatTemplate().render(messages, true, java.util.Map.of()));
    }

    @Test
    void theFirstLoadWritesItAndTheNextLoadGivesTheSameTokenizer() throws Exception {
        Path dir = copy();
        Tokenizer fromJson = Tokenizer.of(Tokenizer.parseJson(dir), true);
        Tokenizer first = Tokenizer.load(dir);
        Path bin = dir.resolve(PrebuiltVocabulary.FILE);
        assertTrue(Files.isRegularFile(bin), "written on the first load");
        assertTrue(PrebuiltVocabulary.read(bin, PrebuiltVocabulary.digest(dir)) != null, "and current");
        Tokenizer second = Tokenizer.load(dir);
        assertSameTokenizer(fromJson, first);
        assertSameTokenizer(fromJson, second);
    }

    @Test
    void anEditedConfigMakesItStaleAndItIsRebuilt() throws Exception {
        Path dir = copy();
        Tokenizer.load(dir);
        Path bin = dir.resolve(PrebuiltVocabulary.FILE);
        byte[] before = Files.readAllBytes(bin);
        String config = Files.readString(dir.resolve("tokenizer_config.json"));
        Files.writeString(dir.resolve("tokenizer_config.json"), config.replace("\"add_bos_token\"", "\"model_max_length_note\": 1, \"add_bos_token\""));
        assertNull(PrebuiltVocabulary.read(bin, PrebuiltVocabulary.digest(dir)), "stale once the config changed");
        Tokenizer.load(dir);
        assertNotEquals(java.util.Arrays.toString(before), java.util.Arrays.toString(Files.readAllBytes(bin)), "rebuilt for the new files");
        assertTrue(PrebuiltVocabulary.read(bin, PrebuiltVocabulary.digest(dir)) != null);
    }

    @Test
    void aDamagedFileIsNeverUsed() throws Exception {
        Path dir = copy();
        Tokenizer expected = Tokenizer.of(Tokenizer.parseJson(dir), true);
        Tokenizer.load(dir);
        Path bin = dir.resolve(PrebuiltVocabulary.FILE);
        byte[] good = Files.readAllBytes(bin);
        byte[] digest = PrebuiltVocabulary.digest(dir);

        byte[] flipped = good.clone();
        flipped[flipped.length / 2] ^= 0x10;
        Files.write(bin, flipped);
        assertNull(PrebuiltVocabulary.read(bin, digest), "a flipped byte fails the body checksum");
        assertSameTokenizer(expected, Tokenizer.load(dir));

        Files.write(bin, java.util.Arrays.copyOf(good, good.length - 100));
        assertNull(PrebuiltVocabulary.read(bin, digest), "truncated");
        Files.write(bin, new byte[0]);
        assertNull(PrebuiltVocabulary.read(bin, digest), "empty");

        // a body with a valid checksum whose first count claims two billion strings: refused before allocating
        ByteBuffer body = ByteBuffer.allocate(8).putInt(0).putInt(Integer.MAX_VALUE).flip();
        CRC32C crc = new CRC32C();
        crc.update(body.duplicate());
        ByteBuffer forged = ByteBuffer.allocate(8 + 4 + digest.length + 4 + 8 + 8);
        forged.put(good, 0, 12).put(digest).putInt((int) crc.getValue()).putLong(8).put(body);
        Files.write(bin, forged.array());
        assertNull(PrebuiltVocabulary.read(bin, digest), "a forged count");
        assertSameTokenizer(expected, Tokenizer.load(dir));
        assertTrue(PrebuiltVocabulary.read(bin, digest) != null, "rebuilt after each damage");
    }

    /** A file far larger than any vocabulary is refused from its size, before anything is allocated for it. */
    @Test
    void aHugeStrayFileIsRefusedBeforeItIsRead() throws Exception {
        Path dir = copy();
        Path bin = dir.resolve(PrebuiltVocabulary.FILE);
        try (var f = new java.io.RandomAccessFile(bin.toFile(), "rw")) {
            f.setLength(3L << 30); // sparse: 3 GiB on paper
        }
        assertNull(PrebuiltVocabulary.read(bin, PrebuiltVocabulary.digest(dir)));
        assertSameTokenizer(Tokenizer.of(Tokenizer.parseJson(dir), true), Tokenizer.load(dir));
    }

    /** A file that passes its checks but that this code cannot build a tokenizer from: the JSON decides. */
    @Test
    void aPrebuiltFileThatCannotBeBuiltFromFallsBackToTheJson() throws Exception {
        Path dir = copy();
        Vocabulary v = Tokenizer.parseJson(dir);
        Vocabulary bad = new Vocabulary("NOT_A_FORM", v.preTokenizerJson(), v.vocab(), v.added(), v.merges(), v.ignoreMerges(), v.configJson());
        Path bin = dir.resolve(PrebuiltVocabulary.FILE);
        PrebuiltVocabulary.write(bin, PrebuiltVocabulary.digest(dir), bad);
        assertTrue(PrebuiltVocabulary.read(bin, PrebuiltVocabulary.digest(dir)) != null, "the file itself is whole and current");
        assertSameTokenizer(Tokenizer.of(v, true), Tokenizer.load(dir));
    }

    /** A temporary file a killed start left (hours old) goes at the next write; a fresh one, maybe a live writer's, stays. */
    @Test
    void temporaryFilesOfAKilledStartAreRemoved() throws Exception {
        Path dir = copy();
        Path old = Files.writeString(dir.resolve(PrebuiltVocabulary.FILE + "123.partial"), "half");
        Files.setLastModifiedTime(old, java.nio.file.attribute.FileTime.from(java.time.Instant.now().minus(java.time.Duration.ofHours(2))));
        Path fresh = Files.writeString(dir.resolve(PrebuiltVocabulary.FILE + "456.partial"), "being written");
        Tokenizer.load(dir);
        assertTrue(Files.notExists(old), "the abandoned one is gone");
        assertTrue(Files.exists(fresh), "a recent one may belong to a start still writing");
    }

    @Test
    void theFileIsReadableByOtherUsersLikeTokenizerJson() throws Exception {
        Path dir = copy();
        Tokenizer.load(dir);
        var perms = Files.getPosixFilePermissions(dir.resolve(PrebuiltVocabulary.FILE));
        assertTrue(perms.contains(java.nio.file.attribute.PosixFilePermission.OTHERS_READ), perms.toString());
    }

    @Test
    void aDirectoryItCannotBeWrittenToStillLoads() throws Exception {
        Path dir = copy();
        Files.createDirectories(dir.resolve(PrebuiltVocabulary.FILE).resolve("occupied")); // the name is a non-empty directory
        Tokenizer t = Tokenizer.load(dir);
        assertSameTokenizer(Tokenizer.of(Tokenizer.parseJson(dir), true), t);
        assertTrue(Files.isDirectory(dir.resolve(PrebuiltVocabulary.FILE)));
        try (var files = Files.list(dir)) {
            assertEquals(0, files.filter(p -> p.getFileName().toString().endsWith(".partial")).count(), "no temporary file left behind");
        }
    }
}
