package dev.deepserve.gateway.upstream;

import io.vertx.core.buffer.Buffer;
import org.junit.jupiter.api.Test;

import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The upstream proxy's parts on their own: SSE framing across split bytes, what counts as usage and output, the circuit
 * breaker's states, retry waits, error mapping with secrets redacted, config checks.
 */
class UpstreamPartsTest {

    static final String STREAM = "data: {\"a\":1,\"usage\":null}\n\n: keep-alive\n\ndata: {\"b\":\"x\\n\"}\r\n\r\n"
            + "data: {\"choices\":[],\"usage\" : {\"prompt_tokens\":3}}\n\ndata: [DONE]\n\n";

    @Test
    void sseEventsComeOutWholeHoweverTheBytesAreSplit() {
        Random random = new Random(7);
        byte[] bytes = STREAM.getBytes(StandardCharsets.UTF_8);
        for (int trial = 0; trial < 500; trial++) {
            SseScanner scanner = new SseScanner();
            List<String> events = new ArrayList<>();
            int i = 0;
            while (i < bytes.length) {
                int n = 1 + random.nextInt(Math.min(20, bytes.length - i));
                scanner.feed(Buffer.buffer(Arrays.copyOfRange(bytes, i, i + n)), e -> events.add(e.toString()));
                i += n;
            }
            assertEquals(List.of("data: {\"a\":1,\"usage\":null}\n\n", ": keep-alive\n\n", "data: {\"b\":\"x\\n\"}\r\n\r\n",
                    "data: {\"choices\":[],\"usage\" : {\"prompt_tokens\":3}}\n\n", "data: [DONE]\n\n"), events);
            assertEquals(0, scanner.rest().length());
        }
    }

    @Test
    void onlyAUsageObjectCounts() {
        assertEquals(-1, SseScanner.usageObject(Buffer.buffer("data: {\"a\":1,\"usage\":null}\n\n")));
        assertEquals(-1, SseScanner.usageObject(Buffer.buffer("data: {\"content\":\"the usage was\"}\n\n")));
        Buffer spaced = Buffer.buffer("data: {\"usage\" :\t{\"prompt_tokens\":3}}\n\n");
        assertEquals('{', spaced.getByte(SseScanner.usageObject(spaced)));
        assertEquals("{\"usage\" :\t{\"prompt_tokens\":3}}", SseScanner.data(spaced));
        assertNull(SseScanner.data(Buffer.buffer(": keep-alive\n\n")));
    }

    /** What a gateway killed mid-stream bills for an upstream stream: one token per relayed event that carried text. */
    @Test
    void onlyEventsWithGeneratedTextCountAsOutput() {
        assertFalse(SseScanner.carriesText(Buffer.buffer("data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n")));
        assertTrue(SseScanner.carriesText(Buffer.buffer("data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n")));
        assertTrue(SseScanner.carriesText(Buffer.buffer("data: {\"choices\":[{\"text\":\" there\",\"index\":0}]}\n\n")));
        assertFalse(SseScanner.carriesText(Buffer.buffer("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n")));
        assertFalse(SseScanner.carriesText(Buffer.buffer(": keep-alive\n\n")));
        assertFalse(SseScanner.carriesText(Buffer.buffer("data: {\"content\":\"")), "an event cut at the key");
    }

    @Test
    void theBreakerOpensAfterConsecutiveFailuresAndLetsOneTrialThrough() {
        long pass = CircuitBreaker.PASS;
        CircuitBreaker b = new CircuitBreaker(3, 1000);
        b.failure(0, pass);
        b.failure(1, pass);
        b.success(pass);
        b.failure(2, pass);
        b.failure(3, pass);
        assertEquals(pass, b.tryAcquire(4), "a success in between resets the count");
        b.failure(5, pass);
        assertEquals(CircuitBreaker.DENIED, b.tryAcquire(6));
        assertEquals(CircuitBreaker.State.OPEN, b.state(6));
        long trial = b.tryAcquire(1005);
        assertTrue(trial > 0, "after the open time one trial goes through");
        assertEquals(CircuitBreaker.DENIED, b.tryAcquire(1006), "only one");
        b.failure(1007, trial);
        assertEquals(CircuitBreaker.DENIED, b.tryAcquire(1500), "a failed trial opens it again");
        long second = b.tryAcquire(2008);
        assertTrue(second > trial);
        b.success(second);
        assertEquals(pass, b.tryAcquire(2009));
        assertEquals(pass, b.tryAcquire(2010));
    }

    @Test
    void lateOutcomesOfOtherRequestsNeitherReopenNorCloseIt() {
        long pass = CircuitBreaker.PASS;
        CircuitBreaker b = new CircuitBreaker(1, 1000);
        b.failure(0, pass);
        assertEquals(CircuitBreaker.State.OPEN, b.state(1));
        b.failure(500, pass);
        assertEquals(CircuitBreaker.State.HALF_OPEN, b.state(1000), "a late failure of a request admitted while closed does not restart the open time");
        long trial = b.tryAcquire(1000);
        b.success(pass);
        b.failure(1001, pass);
        assertEquals(CircuitBreaker.State.HALF_OPEN, b.state(1002), "only the trial decides");
        b.success(trial);
        assertEquals(CircuitBreaker.State.CLOSED, b.state(1003));
    }

    @Test
    void aTrialWhoseClientLeftDoesNotHoldTheBreakerHalfOpen() {
        CircuitBreaker b = new CircuitBreaker(1, 1000);
        b.failure(0, CircuitBreaker.PASS);
        long trial = b.tryAcquire(1000);
        assertTrue(trial > 0);
        assertEquals(CircuitBreaker.DENIED, b.tryAcquire(1001));
        b.abandon(trial);
        long next = b.tryAcquire(1002);
        assertTrue(next > trial, "the abandoned trial's place goes to the next request");
        b.abandon(trial);
        assertEquals(CircuitBreaker.DENIED, b.tryAcquire(1003), "a stale permit cannot end the newer trial");
        b.success(trial);
        assertEquals(CircuitBreaker.DENIED, b.tryAcquire(1003), "nor can its late success close the circuit");
        b.abandon(CircuitBreaker.PASS);
        assertEquals(CircuitBreaker.DENIED, b.tryAcquire(1004), "an ordinary request's permit is not a trial");
        long third = b.tryAcquire(1002 + 1000);
        assertTrue(third > next, "a trial never heard from is presumed lost after the open time");
        assertEquals(CircuitBreaker.State.HALF_OPEN, b.state(2100));
        b.success(third);
        assertEquals(CircuitBreaker.State.CLOSED, b.state(2101));
    }

    @Test
    void retriesWaitWhatTheUpstreamAsksOrAJitteredBackoff() {
        java.time.Duration max = java.time.Duration.ofSeconds(10);
        long now = 1_700_000_000_000L;
        assertEquals(3000, RetryDelay.millis(0, "3", max, now));
        assertEquals(RetryDelay.DO_NOT_RETRY, RetryDelay.millis(0, "11", max, now), "longer than a request waits: no retry here");
        assertEquals(RetryDelay.DO_NOT_RETRY, RetryDelay.millis(0, "99999999999999999999", max, now));
        String date = java.time.format.DateTimeFormatter.RFC_1123_DATE_TIME.format(java.time.Instant.ofEpochMilli(now + 2000).atZone(java.time.ZoneOffset.UTC));
        assertEquals(2000, RetryDelay.millis(0, date, max, now));
        assertEquals(0, RetryDelay.millis(0, "0", max, now));
        java.util.Set<Long> seen = new java.util.HashSet<>();
        for (int i = 0; i < 200; i++) {
            long d = RetryDelay.millis(2, i % 2 == 0 ? null : "soon\u0000", max, now);
            assertTrue(d >= 200 && d <= 400, "attempt 2: between half and all of 400 ms, was " + d);
            seen.add(d);
        }
        assertTrue(seen.size() > 20, "jittered, not one fixed delay");
        for (int i = 0; i < 50; i++) {
            long d = RetryDelay.millis(40, null, max, now);
            assertTrue(d >= 5000 && d <= 10_000, "capped at the maximum, was " + d);
        }
    }

    @Test
    void upstreamErrorsAreMappedAndSecretsRedacted() {
        Upstream u = new Upstream("ds", URI.create("https://api.example.com/v1"), "sk-secret-abcdef", "config", new CircuitBreaker(1, 1));
        var e = UpstreamResponses.upstreamError(u, 400, Buffer.buffer(
                "{\"error\":{\"message\":\"bad key sk-abcdef0123456789 here\",\"type\":\"invalid_request_error\",\"param\":\"x\",\"code\":\"bad\"}}"), null);
        assertEquals(400, e.status);
        assertEquals("bad key sk-[redacted] here", e.getMessage());
        assertEquals("x", e.param);
        assertEquals("bad", e.code);
        assertEquals(502, UpstreamResponses.upstreamError(u, 401, Buffer.buffer("{}"), null).status);
        assertEquals("upstream ds answered HTTP 500", UpstreamResponses.upstreamError(u, 500, Buffer.buffer(""), null).getMessage());
        assertEquals("<html>oops</html>", UpstreamResponses.upstreamError(u, 502, Buffer.buffer("<html>oops</html>"), null).getMessage());
        assertEquals(7, UpstreamResponses.upstreamError(u, 429, Buffer.buffer("{}"), "7").retryAfterSeconds, "the upstream's Retry-After reaches the client");
        assertEquals("echoed [redacted] back", UpstreamResponses.upstreamError(u, 400, Buffer.buffer("{\"error\":{\"message\":\"echoed sk-secret-abcdef back\"}}"), null)
                .getMessage(), "the configured key is redacted whatever its shape");
        Upstream odd = new Upstream("v", URI.create("https://v.example/v1"), "token/with.odd~chars", "config", new CircuitBreaker(1, 1));
        assertEquals("bad [redacted]", UpstreamResponses.upstreamError(odd, 400, Buffer.buffer("{\"error\":\"bad token/with.odd~chars\"}"), null).getMessage());
        assertEquals(443, u.port());
        assertEquals("/v1", u.pathPrefix());
        assertFalse(u.toString().contains("secret"));
    }

    @Test
    void configIsCheckedWithOneLineMessages() {
        assertEquals(Map.of("a", URI.create("http://h:1/v1"), "b", URI.create("https://x")), UpstreamRegistry.parse(" a=http://h:1/v1 , b=https://x "));
        assertThrows(IllegalArgumentException.class, () -> UpstreamRegistry.parse("nourl"));
        assertThrows(IllegalArgumentException.class, () -> UpstreamRegistry.parse("a/b=http://x"));
        assertThrows(IllegalArgumentException.class, () -> UpstreamRegistry.parse("a=ftp://x"));
        assertThrows(IllegalArgumentException.class, () -> UpstreamRegistry.parse("a=http://user:pw@x"));
        assertThrows(IllegalArgumentException.class, () -> UpstreamRegistry.parseFallbacks("a=b/c"));
        assertEquals(Map.of("a", "b", "a/x", "b/y"), UpstreamRegistry.parseFallbacks("a=b, a/x=b/y"));
        assertEquals("DEEPSERVE_UPSTREAM_MY_DS_API_KEY", UpstreamRegistry.keyEnv("my-ds"));
    }
}
