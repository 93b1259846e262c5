package dev.deepserve.gateway.upstream;

import com.code_intelligence.jazzer.api.FuzzedDataProvider;
import com.code_intelligence.jazzer.junit.FuzzTest;
import io.vertx.core.buffer.Buffer;

/**
 * Fuzz target: the upstream SSE scanner over an upstream's bytes cut into arbitrary network reads. The events it
 * yields, followed by what is left, are exactly the bytes fed, in order, wherever the reads were cut; each event ends
 * with a blank line; looking for a usage object or the data of an event never fails.
 * Regression inputs: SseScannerFuzzTestInputs.
 */
class SseScannerFuzzTest {

    @FuzzTest(maxDuration = "10s")
    void eventsAreTheBytesFed(FuzzedDataProvider data) {
        SseScanner scanner = new SseScanner();
        Buffer fed = Buffer.buffer();
        Buffer seen = Buffer.buffer();
        while (data.remainingBytes() > 0) {
            byte[] read = data.consumeBytes(data.consumeInt(1, 64));
            fed.appendBytes(read);
            scanner.feed(Buffer.buffer(read), event -> {
                String text = event.toString(java.nio.charset.StandardCharsets.ISO_8859_1);
                if (!text.endsWith("\n\n") && !text.endsWith("\n\r\n")) {
                    throw new AssertionError("an event that does not end with a blank line: " + text);
                }
                int usage = SseScanner.usageObject(event);
                if (usage >= event.length() || usage >= 0 && event.getByte(usage) != '{') {
                    throw new AssertionError("usage object at " + usage);
                }
                SseScanner.data(event);
                seen.appendBuffer(event);
            });
        }
        seen.appendBuffer(scanner.rest());
        if (!seen.equals(fed)) {
            throw new AssertionError("the scanner lost or reordered bytes");
        }
    }
}
