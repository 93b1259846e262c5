package dev.deepserve.gateway.usage;

import io.vertx.core.json.JsonObject;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The usage journal on disk: what was not committed reads back exactly and in order, torn or zero-filled tails after a
 * crash are skipped, segments roll and go, one process per journal.
 */
class UsageJournalTest {

    static UsageJournal.Entry entry(String account, String cost) {
        UUID id = UUID.randomUUID();
        // an account id with characters that need escaping: the line format must not care
        return new UsageJournal.Entry(id, UUID.randomUUID(), account, new BigDecimal(cost),
                new JsonObject().put("event_id", id.toString()).put("account_id", account).put("cost", cost).put("note", "tab\there\nnewline").encode());
    }

    static List<Path> segments(Path dir) throws IOException {
        try (var files = Files.list(dir)) {
            return files.filter(f -> f.toString().endsWith(".journal")).sorted().toList();
        }
    }

    @Test
    void whatWasNotCommittedIsReadBackInOrderExactly(@TempDir Path dir) throws Exception {
        List<UsageJournal.Entry> written = new ArrayList<>();
        UsageJournal.Segment first;
        try (UsageJournal journal = UsageJournal.open(dir, false)) {
            assertEquals(List.of(), journal.takeRecovered());
            UsageJournal.Appended a = journal.append(entry("acct_\"ü\"", "0.00000768"));
            first = a.segment();
            assertTrue(a.synced().isDone(), "without fsync an append is done when written");
            for (int i = 0; i < 4; i++) {
                UsageJournal.Entry e = entry("acct_" + i, "1.5" + i);
                written.add(e);
                journal.append(e);
            }
            journal.committed(first);   // the first is in PostgreSQL: the others are still owed
        }
        try (UsageJournal journal = UsageJournal.open(dir, false)) {
            List<UsageJournal.Recovered> back = journal.takeRecovered();
            // a segment is dropped only when all of it is committed, so the committed first entry is read back too
            assertEquals(5, back.size());
            for (int i = 0; i < 4; i++) {
                UsageJournal.Entry e = back.get(i + 1).entry();
                assertEquals(written.get(i), e);
            }
            assertEquals("acct_\"ü\"", back.getFirst().entry().accountId());
            for (UsageJournal.Recovered r : back) {
                journal.committed(r.segment());
            }
            assertEquals(List.of(), segments(dir), "a fully committed segment is deleted");
        }
    }

    @Test
    void aLineTornByACrashIsSkippedAndTheRestKept(@TempDir Path dir) throws Exception {
        UsageJournal.Entry good;
        try (UsageJournal journal = UsageJournal.open(dir, false)) {
            good = entry("acct_a", "0.25");
            journal.append(good);
            journal.append(entry("acct_b", "0.5"));
        }
        Path segment = segments(dir).getFirst();
        String text = Files.readString(segment);
        // the second line loses its end, as a write cut short would leave it; a flipped digit in the cost of a third
        String second = text.substring(text.indexOf('\n') + 1);
        String torn = text.substring(0, text.indexOf('\n') + 1) + second.substring(0, second.length() / 2);
        String corrupted = text.substring(0, text.indexOf('\n') + 1).replace("\"cost\":\"0.25\"", "\"cost\":\"0.35\"");
        Files.writeString(segment, torn + "\n" + corrupted, StandardCharsets.UTF_8);
        try (UsageJournal journal = UsageJournal.open(dir, false)) {
            List<UsageJournal.Recovered> back = journal.takeRecovered();
            assertEquals(1, back.size(), "the torn and the altered line are refused by their checksums");
            assertEquals(good, back.getFirst().entry());
        }
    }

    @Test
    void aSegmentLeftFullLengthByACrashReadsBackWithoutItsZeroTail(@TempDir Path dir, @TempDir Path crashed) throws Exception {
        UsageJournal.Entry a = entry("acct_a", "0.25");
        UsageJournal.Entry b = entry("acct_b", "0.5");
        try (UsageJournal journal = UsageJournal.open(dir, false)) {
            journal.append(a);
            journal.append(b);
            // what a killed process leaves: the mapped segment at its full length, zeros after the last line
            Path live = segments(dir).getFirst();
            assertTrue(Files.size(live) > 1 << 20, "the current segment is mapped at its full size");
            Files.copy(live, crashed.resolve(live.getFileName()));
        }
        assertTrue(Files.size(segments(dir).getFirst()) < 4096, "an ended segment is cut to what was written");
        try (UsageJournal journal = UsageJournal.open(crashed, false)) {
            assertEquals(List.of(a, b), journal.takeRecovered().stream().map(UsageJournal.Recovered::entry).toList());
        }
        // after a machine crash without fsync, a page in the middle may never have reached the disk: it reads as zeros
        Path segment = segments(crashed).getFirst();
        String text = Files.readString(segment).replace("\0", "");
        int cut = text.indexOf('\n') + 1;
        Files.writeString(segment, text.substring(0, cut) + "\0".repeat(5000) + text.substring(cut) + "\0".repeat(100));
        try (UsageJournal journal = UsageJournal.open(crashed, false)) {
            assertEquals(List.of(a, b), journal.takeRecovered().stream().map(UsageJournal.Recovered::entry).toList(),
                    "lines around zeros are kept, and zeros are not reported as damage");
        }
    }

    @Test
    void segmentsRollAndGoOnceCommittedAndAnIdleOneIsTidiedAway(@TempDir Path dir) throws Exception {
        try (UsageJournal journal = UsageJournal.open(dir, false)) {
            UsageJournal.Appended a = journal.append(entry("acct_a", "1"));
            assertEquals(1, segments(dir).size());
            journal.committed(a.segment());
            assertEquals(1, segments(dir).size(), "the current segment stays while it may get more");
            journal.tidy();
            assertEquals(List.of(), segments(dir), "an idle, fully committed segment is ended and deleted");
            UsageJournal.Appended b = journal.append(entry("acct_b", "1"));
            journal.tidy();
            assertEquals(1, segments(dir).size(), "a segment with an uncommitted event stays");
            journal.committed(b.segment());
            journal.tidy();
            assertEquals(List.of(), segments(dir));
        }
    }

    @Test
    void twoProcessesCannotShareAJournal(@TempDir Path dir) throws Exception {
        try (UsageJournal journal = UsageJournal.open(dir, false)) {
            journal.append(entry("acct_a", "1"));
            // another process would get the lock refused; in one JVM the overlapping lock is refused the same way
            Exception e = assertThrows(Exception.class, () -> UsageJournal.open(dir, false));
            assertTrue(e.getMessage() == null || !e.getMessage().isEmpty());
        }
    }

    @Test
    void withFsyncAnAppendIsDoneOnceSynced(@TempDir Path dir) throws Exception {
        try (UsageJournal journal = UsageJournal.open(dir, true)) {
            List<UsageJournal.Appended> all = new ArrayList<>();
            for (int i = 0; i < 50; i++) {
                all.add(journal.append(entry("acct_" + i, "0.1")));
            }
            for (UsageJournal.Appended a : all) {
                assertNull(a.synced().get(10, TimeUnit.SECONDS));
            }
        }
        try (UsageJournal journal = UsageJournal.open(dir, true)) {
            assertEquals(50, journal.takeRecovered().size());
        }
    }

    @Test
    void anEmptyOrForeignFileIsLeftAlone(@TempDir Path dir) throws Exception {
        Files.writeString(dir.resolve("notes.txt"), "not a segment");
        Files.write(dir.resolve("usage-0000000000000007.journal"), new byte[0], StandardOpenOption.CREATE);
        try (UsageJournal journal = UsageJournal.open(dir, false)) {
            assertEquals(List.of(), journal.takeRecovered());
            assertEquals(List.of(), segments(dir), "an empty segment is removed");
            UsageJournal.Appended a = journal.append(entry("acct_a", "1"));
            assertTrue(a.segment().path.getFileName().toString().compareTo("usage-0000000000000007.journal") > 0, "numbering goes on after what was there");
        }
        assertTrue(Files.exists(dir.resolve("notes.txt")));
    }
}
