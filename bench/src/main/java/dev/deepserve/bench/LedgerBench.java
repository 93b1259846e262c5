package dev.deepserve.bench;

import dev.deepserve.embedded.EmbeddedKafkaBroker;
import dev.deepserve.embedded.EmbeddedPostgresServer;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.TimeUnit;

/**
 * Sustained usage events per second from Kafka into billing's PostgreSQL ledger, end to end and with zero loss: the
 * real billing service (its fast-jar, as a separate process) on embedded PostgreSQL and an in-process KRaft broker;
 * N events are published and the clock stops when all N ledger rows, balance charges and aggregates are committed.
 * Baseline in the same run: a bare Kafka consumer reading the same topic with no database (the transport's ceiling).
 * Events are published as the gateway sends them: {@code --per-record} events to a Kafka record, a line each (1: a
 * record per event, as other producers may send them).
 *
 * <p>Run: {@code bench/run ledger [--events 200000] [--per-record 200]} (builds billing's jar first if needed).
 */
public final class LedgerBench {

    public static void main(String[] args) throws Exception {
        int events = 200_000;
        int perRecord = 200;
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--events")) {
                events = Integer.parseInt(args[++i]);
            } else if (args[i].equals("--per-record")) {
                perRecord = Integer.parseInt(args[++i]);
            } else {
                throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        try (BenchInfra infra = BenchInfra.start("ledger")) {
            EmbeddedPostgresServer pg = infra.pg;
            EmbeddedKafkaBroker kafka = infra.kafka;
            List<String> payloads = new ArrayList<>(events);
            for (int i = 0; i < events; i++) {
                payloads.add("{\"event_id\":\"" + UUID.randomUUID() + "\",\"request_id\":\"r" + i + "\",\"account_id\":\"acct_bench\",\"api_key_id\":\"k"
                        + (i % 8) + "\",\"model\":\"deepseek-chat\",\"prompt_cache_hit_tokens\":64,\"prompt_cache_miss_tokens\":" + (i % 100)
                        + ",\"completion_tokens\":" + (1 + i % 300) + ",\"cost\":\"0.00000110\",\"currency\":\"USD\",\"finish_reason\":\"stop\","
                        + "\"completed_at\":\"2026-11-24T0" + (i % 10) + ":00:00Z\"}");
            }
            Process billing = infra.service("billing", BenchInfra.freePort(), Map.of(), "/q/health/ready");
            try {
                try (Connection c = DriverManager.getConnection(pg.jdbcUrl(), EmbeddedPostgresServer.USER, pg.password())) {
                    c.createStatement().execute("INSERT INTO billing.accounts (id, name, topped_up_balance, reserved) VALUES ('acct_bench', 'bench', 1000, 1000)");
                    long t0 = System.nanoTime();
                    try (KafkaProducer<String, String> producer = new KafkaProducer<>(Map.of("bootstrap.servers", kafka.bootstrapServers(),
                            "acks", "all", "linger.ms", 5, "batch.size", 262144), new StringSerializer(), new StringSerializer())) {
                        for (int i = 0; i < payloads.size(); i += perRecord) {
                            producer.send(new ProducerRecord<>("usage", String.join("\n", payloads.subList(i, Math.min(payloads.size(), i + perRecord)))));
                        }
                    }
                    long produced = System.nanoTime();
                    long count = 0;
                    while (count < events) {
                        Thread.sleep(50);
                        try (ResultSet rs = c.createStatement().executeQuery("SELECT count(*) FROM billing.usage_ledger")) {
                            rs.next();
                            count = rs.getLong(1);
                        }
                        if (System.nanoTime() - t0 > TimeUnit.MINUTES.toNanos(10)) {
                            throw new IllegalStateException("only " + count + " of " + events + " events reached the ledger in 10 minutes");
                        }
                    }
                    double seconds = (System.nanoTime() - t0) / 1e9;
                    try (ResultSet rs = c.createStatement().executeQuery("SELECT (SELECT sum(requests) FROM billing.usage_hourly), "
                            + "(SELECT 1000 - topped_up_balance FROM billing.accounts WHERE id = 'acct_bench')")) {
                        rs.next();
                        if (rs.getLong(1) != events || rs.getBigDecimal(2).compareTo(new java.math.BigDecimal("0.0000011").multiply(java.math.BigDecimal.valueOf(events))) != 0) {
                            throw new IllegalStateException("totals do not add up: aggregates " + rs.getLong(1) + ", charged " + rs.getBigDecimal(2));
                        }
                    }
                    double baseline = bareConsume(kafka.bootstrapServers(), events);
                    System.out.printf("published %d events, %d to a record, in %.2f s%n", events, perRecord, (produced - t0) / 1e9);
                    System.out.printf("billing ledger: %d events in %.2f s = %.0f events/s end to end, zero lost, aggregates and balance exact%n",
                            events, seconds, events / seconds);
                    System.out.printf("baseline (bare Kafka consumer, no database): %.0f events/s; billing reaches %.0f%% of it; goal 20000/s: %s%n",
                            baseline, 100 * (events / seconds) / baseline, events / seconds >= 20_000 ? "met" : "not met");
                }
            } finally {
                BenchInfra.stop(billing);
            }
        }
    }

    static double bareConsume(String bootstrap, int events) {
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(Map.of("bootstrap.servers", bootstrap, "group.id", "bench-baseline",
                "auto.offset.reset", "earliest", "max.poll.records", 5000), new StringDeserializer(), new StringDeserializer())) {
            consumer.subscribe(List.of("usage"));
            long t0 = System.nanoTime();
            long n = 0;
            while (n < events) {
                // the events, a line each, as billing reads them
                for (var r : consumer.poll(Duration.ofMillis(200))) {
                    n += r.value().lines().count();
                }
            }
            return events / ((System.nanoTime() - t0) / 1e9);
        }
    }


}
