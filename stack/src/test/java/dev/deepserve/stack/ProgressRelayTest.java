package dev.deepserve.stack;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;

import static org.junit.jupiter.api.Assertions.assertEquals;

/**
 * What {@code ./deepserve up -d} relays from the supervisor's log while it waits: the progress lines a foreground start
 * shows, each once and only when whole, and nothing else (connection lines, other output); a log not there yet is no error.
 */
class ProgressRelayTest {

    @Test
    void relaysWholeProgressLinesOnceAndNothingElse(@TempDir Path dir) throws Exception {
        Path log = dir.resolve("stack.log");
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        PrintStream out = new PrintStream(bytes, true, StandardCharsets.UTF_8);
        Cli.ProgressRelay relay = new Cli.ProgressRelay(log, out);
        relay.relay(); // no log yet
        append(log, "data: /home/x\naot: this start records each service's start-up cache (slower this once, faster later)\nstarting services");
        relay.relay();
        assertEquals("aot: this start records each service's start-up cache (slower this once, faster later)|", text(bytes),
                "a line not yet ended waits for its end");
        append(log, "\n  ready: gateway              4.7s\n  waiting    3s  billing: postgres (connecting); décode");
        relay.relay();
        relay.relay();
        append(log, "\n  ready: billing-service      9.3s\n\ngateway: http://127.0.0.1:8080\napi-key: sk-…\nstack is up; Ctrl-C stops it\n");
        relay.relay();
        assertEquals("aot: this start records each service's start-up cache (slower this once, faster later)|starting services|"
                + "  ready: gateway              4.7s|  waiting    3s  billing: postgres (connecting); décode|"
                + "  ready: billing-service      9.3s|", text(bytes));
    }

    private static void append(Path log, String s) throws Exception {
        Files.writeString(log, s, StandardCharsets.UTF_8, StandardOpenOption.CREATE, StandardOpenOption.APPEND);
    }

    private static String text(ByteArrayOutputStream bytes) {
        return bytes.toString(StandardCharsets.UTF_8).replace(System.lineSeparator(), "|");
    }
}
