package dev.deepserve.model.engine;

/**
 * One sequence's share of a forward batch: {@code count} new tokens at positions {@code start ..} of {@code cache},
 * occupying activation rows {@code row ..} of the batch. Prefill is one long segment, a decode step many segments of
 * one token, speculative verification segments of two.
 */
record Segment(KvCache cache, int start, int count, int row) {
}
