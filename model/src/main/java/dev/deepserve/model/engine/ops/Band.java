package dev.deepserve.model.engine.ops;

import dev.deepserve.model.engine.Linear;
import dev.deepserve.model.weights.DType;
import dev.deepserve.model.weights.Tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * A band of a weight's rows as a weight of its own, so that {@link Panels} can hold it (registered by {@link CpuOps#prepareBand}): MLA's absorbed attention reads
 * each head's band of {@code kv_b_proj} every decode step, {@code W_UK} transposed (queries into the latent space) and
 * {@code W_UV} as rows (latent outputs back to the head's values). {@link #linear} builds the band's weight; the
 * panels keep only their own copy, so a transposed band's copy is garbage once packed.
 *
 * @param w          the whole weight
 * @param rowFrom    the band's first row
 * @param rows       its rows
 * @param transposed whether products read it transposed: {@code [w.in, rows]}
 */
record Band(Linear w, int rowFrom, int rows, boolean transposed) {

    /**
     * Whether the band can go into panels with its block scales intact: BF16 without scales, or FP8 whose panels of
     * {@link Panels#panelRows} rows each lie in one row of blocks (the band starting at a panel's edge). Transposed, the band's rows become columns, whose
     * blocks must be whole: the band lies within one row of blocks, or starts at one's edge.
     */
    static boolean fits(Linear w, int rowFrom, int rows, boolean transposed) {
        int lanes = Panels.panelRows();
        if (rows <= 0 || rowFrom < 0 || rowFrom + rows > w.out() || w.nanCodes()) {
            return false;
        }
        if (w.scaleInv() == null) {
            return w.weight().dtype() == DType.BF16 && (transposed ? rows % 2 == 0 : w.in() % 2 == 0);
        }
        if (w.weight().dtype() != DType.F8_E4M3 || w.scaleInv().dtype() != DType.F32) {
            return false;
        }
        if (!transposed) { // every panel's rows in one row of blocks
            return rowFrom % lanes == 0 && w.blockRows() % lanes == 0 && w.in() % 4 == 0 && w.blockCols() % 4 == 0;
        }
        int columnBlock = transposedColumnBlock(w, rowFrom, rows);
        return columnBlock > 0 && rows % 4 == 0 && columnBlock % 4 == 0 && w.blockCols() % lanes == 0;
    }

    /**
     * The width of the transpose's column blocks (w's rows of blocks seen from the band): the band's rows when it lies
     * inside one row of blocks, w's block height when it starts at one's edge, else 0 (no whole blocks).
     */
    private static int transposedColumnBlock(Linear w, int rowFrom, int rows) {
        if (rowFrom / w.blockRows() == (rowFrom + rows - 1) / w.blockRows()) {
            return rows;
        }
        return rowFrom % w.blockRows() == 0 ? w.blockRows() : 0;
    }

    /** Keys compare w by identity: a product looks its band up every step, and a weight's record hash walks its tensors. */
    @Override
    public boolean equals(Object o) {
        return o instanceof Band b && b.w == w && b.rowFrom == rowFrom && b.rows == rows && b.transposed == transposed;
    }

    @Override
    public int hashCode() {
        return ((System.identityHashCode(w) * 31 + rowFrom) * 31 + rows) * 2 + (transposed ? 1 : 0);
    }

    /** The band as a weight: a view of w's rows with a scale row per panel, or the transpose, copied. */
    Linear linear() {
        return transposed ? transpose() : rowsView();
    }

    private Linear rowsView() {
        int in = w.in();
        long elem = w.weight().dtype().bytes();
        MemorySegment data = w.weight().data().asSlice((long) rowFrom * in * elem, (long) rows * in * elem);
        Tensor weight = new Tensor(w.weight().name() + "[" + rowFrom + "+" + rows + "]", w.weight().dtype(), new long[] {rows, in}, data);
        if (w.scaleInv() == null) {
            return new Linear(w.name(), weight, null, rows, in, 1, 1);
        }
        // one scale row per panel: its rows' row of blocks in w
        int lanes = Panels.panelRows();
        int panels = Panels.panelsFor(rows);
        int cols = w.scaleColumns();
        float[] scales = new float[panels * cols];
        for (int p = 0; p < panels; p++) {
            long scaleRow = (long) ((rowFrom + p * lanes) / w.blockRows()) * cols;
            for (int cb = 0; cb < cols; cb++) {
                scales[p * cols + cb] = w.scaleInv().f32(scaleRow + cb);
            }
        }
        return new Linear(w.name(), weight, scaleTensor(panels, cols, scales), rows, in, lanes, w.blockCols());
    }

    private Linear transpose() {
        int in = w.in();
        int elem = w.weight().dtype().bytes();
        MemorySegment src = w.weight().data();
        byte[] t = new byte[in * rows * elem];
        byte[] row = new byte[in * elem];
        for (int i = 0; i < rows; i++) { // each source row read in one copy, its elements spread down column i
            MemorySegment.copy(src, ValueLayout.JAVA_BYTE, (long) (rowFrom + i) * in * elem, row, 0, row.length);
            for (int c = 0; c < in; c++) {
                System.arraycopy(row, c * elem, t, (c * rows + i) * elem, elem);
            }
        }
        Tensor weight = new Tensor(w.weight().name() + "[" + rowFrom + "+" + rows + "]ᵀ", w.weight().dtype(), new long[] {in, rows},
                MemorySegment.ofArray(t));
        if (w.scaleInv() == null) {
            return new Linear(w.name(), weight, null, in, rows, 1, 1);
        }
        // w's block (row block rb, column block cb) becomes the transpose's (cb, rb - first)
        int first = rowFrom / w.blockRows();
        int columnBlock = transposedColumnBlock(w, rowFrom, rows);
        int blockRowsT = w.scaleColumns();
        int blockColsT = Math.ceilDiv(rows, columnBlock);
        float[] scales = new float[blockRowsT * blockColsT];
        for (int cb = 0; cb < blockRowsT; cb++) {
            for (int k = 0; k < blockColsT; k++) {
                scales[cb * blockColsT + k] = w.scaleInv().f32((long) (first + k) * w.scaleColumns() + cb);
            }
        }
        return new Linear(w.name(), weight, scaleTensor(blockRowsT, blockColsT, scales), in, rows, w.blockCols(), columnBlock);
    }

    private Tensor scaleTensor(int rowsOfBlocks, int colsOfBlocks, float[] values) {
        MemorySegment seg = MemorySegment.ofArray(new byte[values.length * 4]);
        MemorySegment.copy(values, 0, seg, ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(java.nio.ByteOrder.LITTLE_ENDIAN), 0, values.length);
        return new Tensor(w.scaleInv().name(), DType.F32, new long[] {rowsOfBlocks, colsOfBlocks}, seg);
    }
}
