package dev.deepserve.prefill.api;

import io.vertx.core.Vertx;
import io.vertx.core.http.HttpClientOptions;
import io.vertx.core.http.HttpServer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

import java.net.URI;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;

/**
 * Prefill's choice of decode instance: the one with the most free KV gets the sequence, what was sent since its last
 * report counts against it so back-to-back picks spread, a failed instance sits out until it reports again, and a lone
 * instance is always the choice.
 */
class DecodePickerTest {

    final Vertx vertx = Vertx.vertx();

    @AfterEach
    void close() {
        vertx.close().toCompletionStage().toCompletableFuture().join();
    }

    URI decode(AtomicLong free) {
        HttpServer s = vertx.createHttpServer().requestHandler(req -> req.response().putHeader("Content-Type", "application/json")
                        .end("{\"kv_budget_tokens\":100000,\"kv_free_tokens\":" + free.get() + ",\"queued\":0,\"batch\":1}"))
                .listen(0).toCompletionStage().toCompletableFuture().join();
        return URI.create("http://127.0.0.1:" + s.actualPort());
    }

    @Test
    void theInstanceWithTheMostFreeKvGetsTheSequenceAndBackToBackPicksSpread() {
        AtomicLong freeA = new AtomicLong(50_000);
        AtomicLong freeB = new AtomicLong(20_000);
        URI a = decode(freeA);
        URI b = decode(freeB);
        // polled by hand here, so nothing resets the counts between picks
        DecodePicker picker = new DecodePicker(List.of(a, b), vertx, vertx.createHttpClient(new HttpClientOptions()), java.util.Optional.empty(), 3_600_000);
        picker.refresh().toCompletionStage().toCompletableFuture().join();
        assertEquals(a, picker.pick(10_000).base);
        assertEquals(a, picker.pick(10_000).base);
        assertEquals(a, picker.pick(10_000).base);
        // a: 50,000 free less 30,000 sent since its report = 20,000, as b has: a tie keeps the first; then b
        assertEquals(a, picker.pick(10_000).base);
        assertEquals(b, picker.pick(10_000).base, "what was just sent counts before the next report");
        freeA.set(1_000);
        picker.refresh().toCompletionStage().toCompletableFuture().join();
        assertEquals(b, picker.pick(100).base);
        DecodePicker.Target t = picker.pick(100);
        picker.failed(t);
        assertEquals(a, picker.pick(100).base, "a failed instance sits out until it reports again");
    }

    @Test
    void oneInstanceIsAlwaysTheChoice() {
        URI only = URI.create("http://127.0.0.1:1");
        DecodePicker picker = new DecodePicker(List.of(only), vertx, vertx.createHttpClient(new HttpClientOptions()), java.util.Optional.empty());
        DecodePicker.Target t = picker.pick(5);
        picker.failed(t);
        assertSame(t, picker.pick(5));
    }
}
