package dev.deepserve.serving;

import dev.deepserve.model.engine.Transformer;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * One step's work, decided before the model runs (vLLM's {@code SchedulerOutput}): each stepping sequence's rows —
 * a prompt chunk for a sequence still prefilling, its last token (and its MTP draft) for a decoding one — and the rows
 * whose logits are needed: the last row of a chunk that completes a prompt, every row of a decode step.
 */
record StepPlan(List<Entry> entries, List<Transformer.Step> steps, int[] logitRows) {

    /**
     * One sequence's part of a step.
     *
     * @param tokens   what it feeds: a prompt chunk, or its last token and its draft when it has one
     * @param chunk    for a prompt chunk, the context range {@code [from, to)}; null for a decode step
     * @param firstRow its first row in the step
     * @param logitRow its first row among the step's scored rows, or -1 when none of its rows is scored
     */
    record Entry(Sequence sequence, int[] tokens, int[] chunk, int firstRow, int logitRow) {

        boolean decoding() {
            return chunk == null;
        }

        /** The draft this decode step verifies (its second row), or -1. */
        int draftToVerify() {
            return decoding() && tokens.length == 2 ? tokens[1] : -1;
        }
    }

    /** What a sequence asks of the step before KV admission may still preempt it. */
    record Want(Sequence sequence, int[] tokens, int[] chunk) {
    }

    /**
     * What every sequence not paused for its reader wants this step. Decode rows come first; prompt chunks share the
     * rows left under {@code maxRows} (a device holds a fixed number per step), each at most {@code prefillChunk}.
     */
    static List<Want> wants(List<Sequence> active, int maxRows, int prefillChunk) {
        int budget = maxRows;
        for (Sequence s : active) {
            if (s.unwritableSince == 0 && !s.prefilling()) {
                budget -= s.speculation.draft >= 0 ? 2 : 1;
            }
        }
        List<Want> wants = new ArrayList<>();
        for (Sequence s : active) {
            if (s.unwritableSince != 0) {
                continue; // paused until its reader catches up
            }
            if (s.prefilling()) {
                if (s.held()) {
                    continue; // its KV link is behind: the chunks already computed go out first
                }
                int n = Math.min(Math.min(prefillChunk, budget), s.context().length - s.prefilled);
                if (n <= 0) {
                    continue; // no rows left in this step; its next chunk goes in a later one
                }
                budget -= n;
                wants.add(new Want(s, Arrays.copyOfRange(s.context(), s.prefilled, s.prefilled + n), new int[] {s.prefilled, s.prefilled + n}));
            } else {
                int draft = s.speculation.takeDraft();
                wants.add(new Want(s, draft >= 0 ? new int[] {s.lastToken, draft} : new int[] {s.lastToken}, null));
            }
        }
        return wants;
    }

    /** The plan for the wants admission kept, their chunks already counted as prefilled. */
    static StepPlan of(List<Want> wants) {
        List<Entry> entries = new ArrayList<>();
        List<Transformer.Step> steps = new ArrayList<>();
        List<Integer> logitRows = new ArrayList<>();
        int row = 0;
        for (Want w : wants) {
            Sequence s = w.sequence();
            int n = w.tokens().length;
            int logitRow = -1;
            if (w.chunk() == null) {
                logitRow = logitRows.size();
                for (int k = 0; k < n; k++) {
                    logitRows.add(row + k);
                }
            } else if (!s.prefilling() && !s.resumed) {
                logitRow = logitRows.size(); // a chunk that completes a prompt: its last row gives the first token
                logitRows.add(row + n - 1);
            }
            entries.add(new Entry(s, w.tokens(), w.chunk(), row, logitRow));
            steps.add(new Transformer.Step(w.tokens(), s.cache));
            row += n;
        }
        return new StepPlan(entries, steps, logitRows.stream().mapToInt(Integer::intValue).toArray());
    }

    boolean isEmpty() {
        return entries.isEmpty();
    }
}
