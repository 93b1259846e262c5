package dev.deepserve.bench;

import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The chaos suite's CI subset across real processes: the stack under streaming load while each service and the
 * Kafka broker is killed once and PostgreSQL is frozen for a while; in every phase no served request's usage is lost
 * or doubled, no stream cut after output reached its client goes unbilled, the balance moves exactly with the ledger,
 * and nothing stays held once everything settled. {@code bench/run chaos} runs the longer suite (and the Kafka broker
 * frozen).
 */
class ChaosIT {

    @Test
    void noUsageIsLostOrDoubledAndNoMoneyDriftsWhateverFails() throws Exception {
        List<ChaosBench.Row> rows = ChaosBench.run(Path.of("..").toAbsolutePath().normalize(), ChaosBench.Options.parse(new String[] {"--quick"}),
                System.out);
        assertEquals(8, rows.size(), "a baseline, five service kills, a Kafka broker kill and a PostgreSQL freeze");
        for (ChaosBench.Row row : rows) {
            assertTrue(row.clean(), "money went wrong under " + row);
            assertTrue(row.served() > 0, "requests were served around " + row.fault());
        }
    }
}
