package dev.deepserve.serving;

import dev.deepserve.model.engine.Transformer;
import dev.deepserve.model.sampling.SampledToken;

import java.util.ArrayList;
import java.util.List;
import java.util.function.BiFunction;

/**
 * Multi-token-prediction speculation (DeepSeek-V3 §2.2, §5.4.3). After each main step the MTP module sees the
 * positions the step added — its row j pairs the main model's final hidden state at j with token j+1 — and drafts the
 * token after each sequence's last one. The next step feeds that draft beside the last token, and the main model's
 * logits verify it: greedy decoding accepts it exactly when the main model would have produced it (so the output is
 * identical with and without MTP); sampling uses the speculative-sampling rule (accept with probability
 * min(1, p/q), else draw from the normalized residual max(0, p − q)), which leaves the output distribution unchanged.
 */
final class Speculator {

    private final StepRunner runner;
    private final LoopMetrics metrics;
    private final int vocab;
    /** This step's MTP input: one step per sequence, the main rows its positions pair with, and who drafts from it. */
    private final List<Transformer.Step> steps = new ArrayList<>();
    private final List<Integer> mainRows = new ArrayList<>();
    /** Per MTP step: the sequence that drafts from its last row, or null (a prompt chunk that does not end the prompt). */
    private final List<Sequence> owners = new ArrayList<>();
    /** Tests and benchmarks: replaces the MTP draft (given the sequence and the MTP's own draft). */
    BiFunction<Sequence, Integer, Integer> draftOverride;
    /** Benchmarks: false keeps every sequence speculating whatever its acceptance (to measure the losing side too). */
    boolean adaptive = true;
    /** Every this many decode-only steps, one control step runs plain (drafts dropped) to time plain decoding. */
    static final int CONTROL_EVERY = 32;
    private int sinceControl;
    private boolean control;
    /**
     * Speculative decode steps timed since the last control step: their time (main pass with the draft rows + MTP
     * pass) and sequences per drafting sequence (B / k), averages that follow the load; reset at each control step.
     */
    private double speculativeNanos;
    private double perDrafter;
    /** The acceptance that pays, averaged over control steps (0: none measured yet). */
    private double measuredBreakEven;
    /** Before any control step: the MTP pass's share of a speculative step's main pass (a lower bound of the cost). */
    private double draftShare = 0.25;
    /** When speculation cannot pay here, one newcomer in this many still tries it, so the measurement stays current. */
    static final int PROBE_EVERY = 16;
    private int newcomers;

    Speculator(StepRunner runner, LoopMetrics metrics) {
        this.runner = runner;
        this.metrics = metrics;
        this.vocab = runner.config().vocabSize();
    }

    /** The MTP module sees a prompt chunk {@code [from, to)} at main rows from {@code firstRow}; it drafts once the prompt is done. */
    void seeChunk(Sequence s, int[] chunk, int firstRow) {
        int[] ctx = s.context();
        int[] next = new int[chunk[1] - chunk[0]];
        for (int j = chunk[0]; j < chunk[1]; j++) {
            next[j - chunk[0]] = j + 1 < ctx.length ? ctx[j + 1] : s.lastToken; // after the prompt: the token just sampled
            mainRows.add(firstRow + j - chunk[0]);
        }
        add(s, next, s.prefilling() ? null : s);
    }

    /** The MTP module sees a decode step's new positions: {@code firstRow} (and the next row) paired with {@code next}. */
    void seeDecode(Sequence s, int firstRow, int... next) {
        for (int k = 0; k < next.length; k++) {
            mainRows.add(firstRow + k);
        }
        add(s, next, s);
    }

    private void add(Sequence s, int[] next, Sequence owner) {
        steps.add(new Transformer.Step(next, s.speculation.kv));
        owners.add(owner);
    }

    /**
     * Runs the MTP module over what it was shown this step (filling its KV) and gives each sequence that drafts its
     * draft. Returns those sequences.
     */
    List<Sequence> proposeDrafts() {
        if (steps.isEmpty()) {
            return List.of();
        }
        try {
            return runDraft();
        } finally {
            reset();
        }
    }

    /** Forgets what this step showed the module (after drafting, or when the step failed before it). */
    void reset() {
        steps.clear();
        mainRows.clear();
        owners.clear();
    }

    private List<Sequence> runDraft() {
        List<Sequence> drafting = new ArrayList<>();
        List<Integer> draftRows = new ArrayList<>();
        int row = 0;
        for (int i = 0; i < steps.size(); i++) {
            row += steps.get(i).tokens().length;
            if (owners.get(i) != null) {
                drafting.add(owners.get(i));
                draftRows.add(row - 1);
            }
        }
        boolean greedy = drafting.stream().allMatch(s -> s.sampler.params().greedy());
        StepScores scores = runner.forwardDraft(List.copyOf(steps), toArray(mainRows), toArray(draftRows), greedy);
        for (int i = 0; i < drafting.size(); i++) {
            Speculation spec = drafting.get(i).speculation;
            if (drafting.get(i).sampler.params().greedy()) {
                spec.draft = scores.argmax(i);
                spec.draftProbs = null;
                if (draftOverride != null) {
                    spec.draft = draftOverride.apply(drafting.get(i), spec.draft);
                }
            } else {
                spec.draftProbs = scores.probabilities(drafting.get(i).sampler, i);
                spec.draft = drafting.get(i).sampler.draw(spec.draftProbs);
            }
        }
        return drafting;
    }

    /**
     * The token for the draft's position. Greedy: the main model's own choice (the draft is accepted when they agree).
     * Sampling: accept the draft d with probability min(1, p(d)/q(d)); otherwise draw from max(0, p − q), normalized.
     */
    SampledToken verify(Sequence s, StepScores scores, int row, int draft) {
        float[] q = s.speculation.draftProbs;
        if (s.sampler.params().greedy() || q == null) {
            return scores.sample(s.sampler, row);
        }
        float[] p = scores.probabilities(s.sampler, row);
        int chosen = q[draft] > 0 && s.sampler.uniform() < Math.min(1.0, p[draft] / (double) q[draft]) ? draft : s.sampler.draw(residual(p, q));
        SampledToken t = scores.report(s.sampler, row, chosen);
        s.sampler.accept(chosen);
        return t;
    }

    /** max(0, p − q), normalized; p itself when q covers p everywhere. */
    private float[] residual(float[] p, float[] q) {
        float[] residual = new float[vocab];
        double sum = 0;
        for (int i = 0; i < vocab; i++) {
            residual[i] = Math.max(0f, p[i] - q[i]);
            sum += residual[i];
        }
        if (sum <= 0) {
            return p;
        }
        for (int i = 0; i < vocab; i++) {
            residual[i] /= (float) sum;
        }
        return residual;
    }

    /** Counts a verified draft; true when the sequence should stop speculating (see {@link Speculation#verified}). */
    boolean verified(Sequence s, boolean accepted) {
        metrics.draft(accepted);
        return s.speculation.verified(accepted, breakEven()) && adaptive;
    }

    /**
     * Called before a decode-only step is planned: true when this step is a control step, whose pending drafts are
     * dropped so it runs plain (the sequences draft again after it, as after a rejected draft; output unchanged).
     */
    boolean beginStep(List<Sequence> active) {
        control = adaptive && ++sinceControl > CONTROL_EVERY;
        if (control) {
            sinceControl = 0;
            for (Sequence s : active) {
                s.speculation.dropDraft();
            }
        }
        return control;
    }

    /**
     * A decode-only step of {@code sequences} sequences, {@code drafting} of them with a draft, took these times (main
     * pass, MTP pass). Speculative steps feed running averages of their whole time and of sequences per drafting one;
     * a control step's main pass is what plain decoding costs now. With B sequences of which k draft, a speculative
     * step gives B + k·a tokens in time T_s where plain gives B in T_p, so speculating pays when
     * a > (B / k)·(T_s / T_p − 1): that is what each control step measures, against the speculative steps since the last.
     */
    void timed(long mainNanos, long draftNanos, int sequences, int drafting) {
        if (mainNanos <= 0) {
            return;
        }
        if (control) {
            if (speculativeNanos > 0) {
                double needed = perDrafter * (speculativeNanos / mainNanos - 1);
                measuredBreakEven = measuredBreakEven == 0 ? needed : 0.7 * measuredBreakEven + 0.3 * needed;
                speculativeNanos = 0; // the next control step compares with fresh speculative steps only
                perDrafter = 0;
            }
            return;
        }
        if (draftNanos > 0 && drafting > 0) {
            double step = mainNanos + draftNanos;
            double ratio = (double) sequences / drafting;
            speculativeNanos = speculativeNanos == 0 ? step : 0.7 * speculativeNanos + 0.3 * step;
            perDrafter = perDrafter == 0 ? ratio : 0.7 * perDrafter + 0.3 * ratio;
            draftShare = 0.9 * draftShare + 0.1 * ((double) draftNanos / mainNanos);
        }
    }

    /**
     * Whether a newly admitted sequence should speculate: yes, unless the measured cost says no acceptance can pay
     * (break-even at 100 % or more) — then only one newcomer in {@link #PROBE_EVERY}, whose steps keep the measurement
     * current (the load, the batch size or the backend may change what speculation costs).
     */
    boolean worthTrying() {
        if (!adaptive || measuredBreakEven == 0 || breakEven() < 1) {
            return true;
        }
        return ++newcomers % PROBE_EVERY == 0;
    }

    /**
     * The acceptance speculation must reach to pay (see {@link #timed}; 1 or more: it cannot pay). Before a control step
     * has been timed, the MTP pass's share of the main pass stands in (it ignores the draft row's own cost). At least
     * 5 %, so one odd measurement cannot switch every sequence off.
     */
    double breakEven() {
        double needed = measuredBreakEven != 0 ? measuredBreakEven : draftShare;
        return Math.max(0.05, needed);
    }

    private static int[] toArray(List<Integer> list) {
        return list.stream().mapToInt(Integer::intValue).toArray();
    }
}
