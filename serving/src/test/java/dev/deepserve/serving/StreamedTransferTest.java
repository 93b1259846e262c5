package dev.deepserve.serving;

import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.KvPrecision;
import dev.deepserve.model.engine.KvStream;
import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.engine.ops.CpuOps;
import dev.deepserve.model.sampling.SamplingParams;
import dev.deepserve.tokenizer.Tokenizer;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The layer-streamed KV transfer between a prefill loop and a decode loop (through the real wire format, without
 * HTTP): a 32K-token prompt decodes exactly as colocated while the transfer overlaps the prefill and buffers a bounded
 * amount; a stream cut in the middle gives back every block on both sides; a cancel while the KV arrives answers
 * "cancelled" with the whole prompt when its END comes; an intake aborted while queued leaves at once; a handover that
 * does not fit is refused; a pool of the other precision takes the stream converted.
 */
class StreamedTransferTest {

    static Transformer model;
    static Tokenizer tokenizer;

    @BeforeAll
    static void load() {
        model = Transformer.load(TestModel.dir(), CpuOps.best());
        tokenizer = Tokenizer.load(TestModel.dir());
    }

    @AfterAll
    static void close() {
        model.close();
    }

    static DecodeLoop loop(int maxContext, int prefillChunk, boolean mtp) {
        return new DecodeLoop(new CpuStepRunner(model), tokenizer, null,
                new LoopSettings(4, maxContext, maxContext + 256L, 64, prefillChunk, 100, mtp, Duration.ofSeconds(30)).withKvPrecision(KvPrecision.BF16),
                LoopMetrics.NONE);
    }

    static GenerationRequest request(String id, int length, int maxTokens) {
        int[] prompt = java.util.stream.IntStream.range(0, length).map(i -> 100 + (int) ((3L * 7919 + i * 104729L) % 120000)).toArray();
        return new GenerationRequest(id, prompt, maxTokens, SamplingParams.GREEDY, List.of());
    }

    /** Runs {@code loop} on its own thread until {@code stop}. */
    static Thread spin(DecodeLoop loop, AtomicBoolean stop) {
        return Thread.ofPlatform().start(() -> {
            try {
                while (!stop.get()) {
                    loop.runOnce(5);
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        });
    }

    @Test
    void aThirtyTwoThousandTokenPromptDecodesAsColocatedWhileItsKvStreamsInBoundedPieces() throws Exception {
        int length = 32_768;
        int context = length + 64;
        long t0 = System.nanoTime();
        DecodeLoopTest.Collect colocated = new DecodeLoopTest.Collect();
        DecodeLoop alone = loop(context, 1024, true);
        alone.submit(request("colocated", length, 8), colocated);
        while (colocated.finish == null) {
            alone.runOnce(1);
        }
        long t1 = System.nanoTime();

        DecodeLoop prefill = loop(context, 1024, true);
        DecodeLoop decode = loop(context, 1024, true);
        DecodeLoopTest.Collect out = new DecodeLoopTest.Collect();
        KvLink link = new KvLink(decode, id -> out, 8 << 20);
        AtomicLong beforeLastStep = new AtomicLong(-1);
        AtomicLong decodeBlocksDuringPrefill = new AtomicLong();
        prefill.handoff(new Handoff() {
            @Override
            public void progress(Sequence s, KvCache main, KvCache mtp) {
                link.progress(s, main, mtp);
                decodeBlocksDuringPrefill.accumulateAndGet(decode.kvPool().used(), Math::max);
            }

            @Override
            public void prefilled(Sequence s, int firstToken, int draft, KvCache main, KvCache mtp) {
                beforeLastStep.set(link.bytes());
                link.prefilled(s, firstToken, draft, main, mtp);
            }
        });
        AtomicBoolean stop = new AtomicBoolean();
        Thread decoding = spin(decode, stop);
        DecodeLoopTest.Collect prefillSide = new DecodeLoopTest.Collect();
        prefill.submit(request("disaggregated", length, 8), prefillSide);
        try {
            while (out.finish == null) {
                prefill.runOnce(1);
            }
        } finally {
            stop.set(true);
            decoding.join();
        }
        long t2 = System.nanoTime();

        long total = link.bytes();
        long perToken = (model.config().numHiddenLayers() + 1L) * (model.config().kvLoraRank() + model.config().qkRopeHeadDim()) * 2;
        System.out.printf("32K-token prompt: colocated %.1f s, disaggregated %.1f s; %,d bytes streamed (%,d KV bytes per token), %,d of them before the"
                        + " last prefill step; most buffered outside the pools at once %,d bytes (%.2f %% of the transfer)%n",
                (t1 - t0) / 1e9, (t2 - t1) / 1e9, total, perToken, beforeLastStep.get(), link.bufferedMost(), 100.0 * link.bufferedMost() / total);
        assertEquals(colocated.ids, out.ids, "disaggregated output equals colocated");
        assertEquals("length", out.finish);
        assertEquals(length, out.prompt, "prompt tokens exact");
        assertEquals(8, out.completion);
        assertTrue(total >= perToken * length, "every layer's latents and the MTP module's travelled");
        assertTrue(beforeLastStep.get() > total * 9 / 10, "the transfer overlapped the prefill: most of it left before the prompt was done");
        assertTrue(decodeBlocksDuringPrefill.get() > 0, "decode wrote sections into its pool while prefill was still computing");
        assertTrue(link.bufferedMost() <= (8 << 20) + 2L * KvStream.MAX_SECTION_BYTES, "buffered at most the link's bound and a frame");
        assertEquals(0, prefill.kvPool().used(), "prefill gave back its blocks");
        assertEquals(0, decode.kvPool().used(), "decode gave back its blocks");
    }

    @Test
    void aStreamCutMidTransferGivesBackEveryBlockOnBothSides() throws Exception {
        DecodeLoop prefill = loop(4096, 16, true);
        DecodeLoop decode = loop(4096, 16, true);
        DecodeLoopTest.Collect decodeSide = new DecodeLoopTest.Collect();
        DecodeLoopTest.Collect prefillSide = new DecodeLoopTest.Collect();
        KvIntake[] intake = new KvIntake[1];
        int[] chunks = {0};
        prefill.handoff(new Handoff() {
            KvStream.Sender sender;
            KvStream.Reader reader;

            @Override
            public void progress(Sequence s, KvCache main, KvCache mtp) {
                if (sender == null) {
                    sender = new KvStream.Sender("{}", main, mtp, s.request().prompt().length);
                    reader = into(decode, s.request(), decodeSide, intake);
                    reader.feed(sender.header());
                }
                reader.feed(sender.next(main, mtp));
                if (++chunks[0] == 3) {
                    // the connection drops: the decode side hears it, the prefill side's link cancels its sequence
                    intake[0].abort("the prefill instance went away");
                    s.cancel();
                }
            }

            @Override
            public void prefilled(Sequence s, int firstToken, int draft, KvCache main, KvCache mtp) {
                throw new AssertionError("a cut stream never completes");
            }
        });
        prefill.submit(request("cut", 200, 4), prefillSide);
        for (int i = 0; i < 3; i++) {
            prefill.runOnce(1);
            decode.runOnce(1);
        }
        for (int steps = 0; prefillSide.finish == null || decode.kvPool().used() > 0 || decode.kvReserved() > 0; steps++) {
            assertTrue(steps < 1000, "the cut stream was let go of");
            prefill.runOnce(1);
            decode.runOnce(1);
        }
        assertEquals("cancelled", prefillSide.finish);
        assertTrue(intake[0].taken().isCompletedExceptionally(), "the decode side refused the rest");
        assertEquals(null, decodeSide.finish, "nothing reached the decode side's client");
        assertEquals(0, prefill.kvPool().used());
        assertEquals(0, prefill.kvReserved());
        assertEquals(0, decode.kvPool().used());
        assertEquals(0, decode.kvReserved());
        // and the decode loop serves the same request id afresh
        DecodeLoopTest.Collect again = new DecodeLoopTest.Collect();
        decode.submit(request("cut", 200, 4), again);
        while (again.finish == null) {
            decode.runOnce(1);
        }
        assertEquals(4, again.completion);
    }

    /** A well-formed stream of {@code prompt}'s length for this model (zero latents), cut as a prefill instance would send it. */
    static byte[][] frames(int length, Handover handover) {
        var c = model.config();
        KvCache main = new KvCache(c.numHiddenLayers(), c.kvLoraRank(), c.qkRopeHeadDim(), length, KvPrecision.BF16);
        main.reserve(length);
        main.advance(length);
        KvStream.Sender sender = new KvStream.Sender("{}", main, null, length);
        return new byte[][] {sender.header(), sender.next(main, null), sender.end(main, null, handover.json())};
    }

    /** A reader handing {@code request}'s stream to {@code decode}; the intake lands in {@code landed[0]}. */
    static KvStream.Reader into(DecodeLoop decode, GenerationRequest request, TokenSink sink, KvIntake[] landed) {
        return new KvStream.Reader(decode.kvShape(), new IntakeListener() {
            @Override
            public void header(String metadata, KvStream.Layout layout) {
                landed[0] = intake = decode.receive(request, sink, layout);
            }
        });
    }

    @Test
    void aCancelWhileTheKvArrivesGivesBlocksBackAtOnceAndAnswersCancelledWithTheWholePromptAtTheEnd() throws Exception {
        DecodeLoop decode = loop(4096, 16, false);
        GenerationRequest request = request("cancel-midway", 100, 4);
        DecodeLoopTest.Collect sink = new DecodeLoopTest.Collect();
        KvIntake[] intake = new KvIntake[1];
        byte[][] f = frames(100, new Handover(77, -1, 32));
        KvStream.Reader reader = into(decode, request, sink, intake);
        reader.feed(f[0]);
        reader.feed(f[1]);
        decode.runOnce(1);
        assertTrue(decode.kvReserved() > 0, "admitted: its blocks are taken");
        assertTrue(decode.cancel("cancel-midway"));
        decode.runOnce(1);
        assertEquals(0, decode.kvReserved(), "the blocks went back at the cancel");
        assertEquals(0, decode.kvPool().used());
        assertEquals(null, sink.finish, "the answer waits for the END (its cache hits are in it)");
        reader.feed(f[2]);
        decode.runOnce(1);
        assertEquals("cancelled", sink.finish);
        assertEquals(100, sink.prompt, "the prefill instance computed the whole prompt");
        assertEquals(32, sink.cached);
        assertEquals(0, sink.completion);
    }

    @Test
    void anIntakeAbortedWhileQueuedLeavesAtOnceAndItsIdIsFree() throws Exception {
        DecodeLoop decode = new DecodeLoop(new CpuStepRunner(model), tokenizer, null,
                new LoopSettings(1, 4096, 8192, 64, 16, 100, false, Duration.ofSeconds(30)).withKvPrecision(KvPrecision.BF16), LoopMetrics.NONE);
        DecodeLoopTest.Collect running = new DecodeLoopTest.Collect();
        decode.submit(request("busy", 20, 1000), running);
        decode.runOnce(1);
        KvIntake[] intake = new KvIntake[1];
        DecodeLoopTest.Collect sink = new DecodeLoopTest.Collect();
        KvStream.Reader reader = into(decode, request("queued", 50, 4), sink, intake);
        for (byte[] part : frames(50, new Handover(77, -1, 0))) {
            reader.feed(part);
        }
        decode.runOnce(1);
        assertTrue(intake[0].shouldPause(), "waiting for a place in the batch: its connection pauses");
        intake[0].abort("the KV stream was cut");
        decode.runOnce(1);
        assertTrue(intake[0].taken().isCompletedExceptionally());
        assertEquals(0, intake[0].pendingBytes());
        assertTrue(decode.cancel("busy"));
        while (running.finish == null) {
            decode.runOnce(1);
        }
        DecodeLoopTest.Collect again = new DecodeLoopTest.Collect();
        decode.submit(request("queued", 20, 2), again);
        while (again.finish == null) {
            decode.runOnce(1);
        }
        assertEquals(2, again.completion, "the aborted intake's id was free again");
        assertEquals(null, sink.finish);
        assertEquals(0, decode.kvReserved());
    }

    @Test
    void aHandoverThatDoesNotFitIsRefusedAndGivesBackItsBlocks() throws Exception {
        int padding = model.config().vocabSize() - 1;
        while (tokenizer.token(padding) != null) {
            padding--;
        }
        DecodeLoop decode = loop(4096, 16, false);
        for (Handover bad : List.of(new Handover(padding, -1, 0), new Handover(-3, -1, 0), new Handover(5, 1 << 30, 0), new Handover(5, -1, 41))) {
            KvIntake[] intake = new KvIntake[1];
            DecodeLoopTest.Collect sink = new DecodeLoopTest.Collect();
            KvStream.Reader reader = into(decode, request("bad-" + bad.firstToken() + "-" + bad.draft() + "-" + bad.cachedTokens(), 40, 4), sink, intake);
            for (byte[] part : frames(40, bad)) {
                reader.feed(part);
            }
            for (int i = 0; i < 3 && !intake[0].taken().isDone(); i++) {
                decode.runOnce(1);
            }
            var e = org.junit.jupiter.api.Assertions.assertThrows(java.util.concurrent.ExecutionException.class, () -> intake[0].taken().get());
            assertEquals(400, ((Refused) e.getCause()).status, e.getCause().getMessage());
            assertEquals(null, sink.finish, bad + ": nothing streamed");
            assertEquals(0, decode.kvReserved());
            assertEquals(0, decode.kvPool().used());
        }
    }

    @Test
    void aPrefillAndADecodeInstanceOfDifferentKvPrecisionsWorkTogether() throws Exception {
        for (KvPrecision prefillPrecision : KvPrecision.values()) {
            KvPrecision decodePrecision = prefillPrecision == KvPrecision.BF16 ? KvPrecision.FLOAT32 : KvPrecision.BF16;
            DecodeLoop prefill = new DecodeLoop(new CpuStepRunner(model), tokenizer, null,
                    new LoopSettings(4, 4096, 8192, 16, 16, 100, true, Duration.ofSeconds(30)).withKvPrecision(prefillPrecision), LoopMetrics.NONE);
            DecodeLoop decode = new DecodeLoop(new CpuStepRunner(model), tokenizer, null,
                    new LoopSettings(4, 4096, 8192, 16, 16, 100, true, Duration.ofSeconds(30)).withKvPrecision(decodePrecision), LoopMetrics.NONE);
            DecodeLoopTest.Collect out = new DecodeLoopTest.Collect();
            prefill.handoff(new KvLink(decode, id -> out, 1 << 20));
            prefill.submit(request("mixed-" + prefillPrecision, 70, 6), new DecodeLoopTest.Collect());
            for (int steps = 0; out.finish == null; steps++) {
                assertTrue(steps < 500);
                prefill.runOnce(1);
                decode.runOnce(1);
            }
            assertEquals("length", out.finish, prefillPrecision + " → " + decodePrecision);
            assertEquals(6, out.completion);
            assertEquals(70, out.prompt);
            assertEquals(0, decode.kvPool().used() + prefill.kvPool().used());
        }
    }
}
