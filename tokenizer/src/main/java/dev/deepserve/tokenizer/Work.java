package dev.deepserve.tokenizer;

import java.util.concurrent.atomic.LongAdder;

/**
 * Counts the elementary steps of pre-tokenization and BPE (characters scanned, heap operations), added once per call
 * so the hot loops stay free of shared writes. Tests bound it to prove linear-time behaviour without timing anything.
 */
final class Work {

    static final LongAdder STEPS = new LongAdder();

    private Work() {
    }
}
