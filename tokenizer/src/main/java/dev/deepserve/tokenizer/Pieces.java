package dev.deepserve.tokenizer;

/** A growable list of [start, end) ranges of a string: the pieces a pre-tokenizer cuts text into. */
final class Pieces {

    int[] bounds = new int[64];
    int size;

    void add(int start, int end) {
        if (start >= end) {
            return;
        }
        if (2 * size + 2 > bounds.length) {
            bounds = java.util.Arrays.copyOf(bounds, bounds.length * 2);
        }
        bounds[2 * size] = start;
        bounds[2 * size + 1] = end;
        size++;
    }

    int start(int i) {
        return bounds[2 * i];
    }

    int end(int i) {
        return bounds[2 * i + 1];
    }

    void clear() {
        size = 0;
    }
}
