package dev.deepserve.serving;

import dev.deepserve.model.engine.KvCache;
import dev.deepserve.model.engine.KvStream;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Function;

/**
 * Prefill/decode disaggregation inside one process, through the real wire format: a {@link Handoff} for a prefill
 * loop that streams each sequence's KV ({@link KvStream}) into a decode loop's {@link KvIntake}, chunk by chunk as the
 * prompt is computed, holding the sequence while the intake has more than {@code pendingLimit} bytes waiting — as the
 * services do over HTTP. For tests and benchmarks, and for measuring what the transfer itself costs: it has no
 * cancellation path (a prefill sequence cancelled midway leaves its intake waiting), which the services' HTTP layers do.
 */
public final class KvLink implements Handoff {

    private final DecodeLoop decode;
    private final Function<String, TokenSink> sinkFor;
    private final long pendingLimit;
    private final Map<String, Stream> streams = new ConcurrentHashMap<>();
    private volatile long bytes;
    private volatile long bufferedMost;

    private final class Stream extends IntakeListener {
        final Sequence sequence;
        final KvStream.Sender sender;
        final KvStream.Reader reader;
        Exception refused;

        Stream(Sequence sequence, KvCache main, KvCache mtp) {
            this.sequence = sequence;
            this.sender = new KvStream.Sender("{\"request_id\":\"" + sequence.requestId() + "\"}", main, mtp, sequence.request().prompt().length);
            this.reader = new KvStream.Reader(decode.kvShape(), this);
        }

        @Override
        public void header(String metadata, KvStream.Layout layout) {
            intake = decode.receive(sequence.request(), sinkFor.apply(sequence.requestId()), layout);
        }

        void send(byte[] data) {
            if (refused != null) {
                return;
            }
            try {
                reader.feed(data);
            } catch (RuntimeException e) {
                refused = e;
                sequence.cancel();
                if (intake != null) {
                    intake.abort(e.getMessage());
                }
                return;
            }
            bytes += data.length;
            if (intake != null) {
                bufferedMost = Math.max(bufferedMost, reader.bufferedMost() + intake.pendingBytes());
                if (intake.pendingBytes() > pendingLimit) {
                    sequence.hold(true);
                    intake.whenDrained(() -> sequence.hold(false));
                }
            }
        }
    }

    /** A link into {@code decode}; {@code sinkFor} gives each request's token sink on the decode side. */
    public KvLink(DecodeLoop decode, Function<String, TokenSink> sinkFor, long pendingLimit) {
        this.decode = decode;
        this.sinkFor = sinkFor;
        this.pendingLimit = pendingLimit;
    }

    @Override
    public void progress(Sequence s, KvCache main, KvCache mtp) {
        Stream st = streams.computeIfAbsent(s.requestId(), id -> {
            Stream fresh = new Stream(s, main, mtp);
            fresh.send(fresh.sender.header());
            return fresh;
        });
        st.send(st.sender.next(main, mtp));
    }

    @Override
    public void prefilled(Sequence s, int firstToken, int draft, KvCache main, KvCache mtp) {
        progress(s, main, mtp);
        Stream st = streams.remove(s.requestId());
        st.send(st.sender.end(main, mtp, new Handover(firstToken, draft, s.cachedTokens()).json()));
    }

    /** Bytes sent over the link so far. */
    public long bytes() {
        return bytes;
    }

    /** The most transfer bytes any one stream held outside the pools at once (the reader's frame and the intake's queue). */
    public long bufferedMost() {
        return bufferedMost;
    }
}
