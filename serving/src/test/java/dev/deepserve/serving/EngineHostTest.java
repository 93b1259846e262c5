package dev.deepserve.serving;

import org.junit.jupiter.api.Test;

import java.util.List;
import java.util.Map;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Expert-worker addresses: {@code lws:PORT} expands to the other pods of the leader's LeaderWorkerSet group (none in a
 * group of one) next to the workers listed outright, and without LWS_LEADER_ADDRESS it is refused naming that variable.
 * The engine's context: the model's own limit unless the KV budget holds less, a configured one taken as it is, and one
 * beyond the model's refused.
 */
class EngineHostTest {

    @Test
    void lwsExpandsToTheOtherPodsOfTheLeadersGroup() {
        Map<String, String> env = Map.of("LWS_LEADER_ADDRESS", "decode-service-2.decode-service.deepserve", "LWS_GROUP_SIZE", "4");
        assertEquals(List.of("decode-service-2-1.decode-service.deepserve:9100", "decode-service-2-2.decode-service.deepserve:9100",
                "decode-service-2-3.decode-service.deepserve:9100", "extra:7000"), EngineHost.workerAddresses(List.of("lws:9100", "extra:7000"), env));
        assertEquals(List.of(), EngineHost.workerAddresses(List.of("lws:9100"), Map.of("LWS_LEADER_ADDRESS", "d-0.d", "LWS_GROUP_SIZE", "1")),
                "a group of one has no workers");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> EngineHost.workerAddresses(List.of("lws:9100"), Map.of()));
        assertTrue(e.getMessage().contains("LWS_LEADER_ADDRESS"));
    }

    @Test
    void theContextComesFromTheModelBoundedByTheKvBudget() {
        assertEquals(163_840, EngineHost.context(0, 163_840, 1 << 20, 64), "DeepSeek-V3's 163,840 when the pool holds more");
        assertEquals(131_071, EngineHost.context(0, 163_840, 131_072, 64), "whole blocks of the budget, less a draft's slot");
        assertEquals(131_007, EngineHost.context(0, 163_840, 131_050, 64), "a part block of the budget does not count");
        assertEquals(8192, EngineHost.context(8192, 163_840, 131_072, 64), "a configured context is taken as it is");
        assertEquals(131_071, EngineHost.context(131_072, 163_840, 131_072, 64), "a configured one is bounded by the budget too");
        assertThrows(IllegalArgumentException.class, () -> EngineHost.context(-1, 163_840, 131_072, 64));
        assertThrows(IllegalArgumentException.class, () -> EngineHost.context(0, 163_840, 131_072, 0));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> EngineHost.context(200_000, 163_840, 1 << 20, 64));
        assertTrue(e.getMessage().contains("max_position_embeddings"), e.getMessage());
    }

    /** Starting on a new checkpoint removes the disk tiers kept for others, block files only; anything else stays. */
    @Test
    void theDiskTiersOfOtherCheckpointsAreRemovedAndNothingElse(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
        java.nio.file.Path current = java.nio.file.Files.createDirectories(dir.resolve("aaaaaaaaaaaaaaaaaaaaaaaa"));
        java.nio.file.Path old = java.nio.file.Files.createDirectories(dir.resolve("bbbbbbbbbbbbbbbbbbbbbbbb"));
        java.nio.file.Path mixed = java.nio.file.Files.createDirectories(dir.resolve("cccccccccccccccccccccccc"));
        java.nio.file.Path notOurs = java.nio.file.Files.createDirectories(dir.resolve("notes"));
        java.nio.file.Files.write(current.resolve("0123456789abcdef0123456789abcdef.kvb"), new byte[10]);
        java.nio.file.Files.write(old.resolve("0123456789abcdef0123456789abcdef.kvb"), new byte[10]);
        java.nio.file.Files.write(mixed.resolve("0123456789abcdef0123456789abcdef.tmp"), new byte[10]);
        java.nio.file.Files.write(mixed.resolve("README"), new byte[10]);
        java.nio.file.Files.write(notOurs.resolve("x.kvb"), new byte[10]);
        EngineHost.removeOtherModels("decode-engine", current);
        assertTrue(java.nio.file.Files.exists(current.resolve("0123456789abcdef0123456789abcdef.kvb")), "this checkpoint's blocks stay");
        assertTrue(java.nio.file.Files.notExists(old), "another checkpoint's tier is gone");
        assertTrue(java.nio.file.Files.notExists(mixed.resolve("0123456789abcdef0123456789abcdef.tmp")));
        assertTrue(java.nio.file.Files.exists(mixed.resolve("README")), "files that are not blocks are left");
        assertTrue(java.nio.file.Files.exists(notOurs.resolve("x.kvb")), "directories that are not fingerprints are left");
    }
}
