package dev.deepserve.model.ep;

import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.List;

/**
 * The expert-parallel wire format between a leader and its workers, over one TCP connection each, big-endian ints and
 * little-endian float blocks:
 * <pre>
 * HELLO: op=3, n, n bytes of the service token, epoch (long: when the leader started; a later one may take over a
 *        worker from an earlier one) — the first message, once           → status 0 | the connection is closed
 * RUN  : op=1, layer, groups, then per group: expert, rows, width, rows×width floats
 *        → status 0, then per group rows×width floats          | status 1, message (UTF)
 * HOLD : op=2, n, then n × (layer, expert)                     → status 0 | status 1, message (another leader holds it)
 * </pre>
 */
final class Wire {

    static final int RUN = 1;
    static final int HOLD = 2;
    static final int HELLO = 3;
    static final int OK = 0;
    static final int ERROR = 1;
    /** Largest float block accepted (256 MiB): a corrupt length must not allocate the heap away. */
    static final int MAX_FLOATS = 64 << 20;
    /** Most (layer, expert) pairs one HOLD may name. */
    static final int MAX_HELD = 1 << 20;

    private Wire() {
    }

    static void writeFloats(DataOutputStream out, float[] v, int off, int n) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(n * 4).order(ByteOrder.LITTLE_ENDIAN);
        b.asFloatBuffer().put(v, off, n);
        out.write(b.array(), 0, n * 4);
    }

    /** Reads {@code n} floats into {@code v} through a small buffer: no second copy of a large block on the heap. */
    static void readFloats(DataInputStream in, float[] v, int off, int n) throws IOException {
        byte[] chunk = new byte[Math.min(n, 1 << 14) * 4];
        ByteBuffer bytes = ByteBuffer.wrap(chunk).order(ByteOrder.LITTLE_ENDIAN);
        while (n > 0) {
            int k = Math.min(n, chunk.length / 4);
            in.readFully(chunk, 0, k * 4);
            bytes.clear();
            bytes.asFloatBuffer().get(v, off, k);
            off += k;
            n -= k;
        }
    }

    static int count(int rows, int width) throws IOException {
        long n = (long) rows * width;
        if (rows < 0 || width <= 0 || n > MAX_FLOATS) {
            throw new IOException("implausible block of " + rows + "×" + width + " floats");
        }
        return (int) n;
    }

    /** The handshake a leader opens every connection with: the service token ({@code InternalToken}). */
    static void writeHello(DataOutputStream out, String token, long epoch) throws IOException {
        byte[] bytes = token.getBytes(java.nio.charset.StandardCharsets.US_ASCII);
        out.writeInt(HELLO);
        out.writeInt(bytes.length);
        out.write(bytes);
        out.writeLong(epoch);
        out.flush();
    }

    static void writeHold(DataOutputStream out, List<int[]> held) throws IOException {
        out.writeInt(HOLD);
        out.writeInt(held.size());
        for (int[] le : held) {
            out.writeInt(le[0]);
            out.writeInt(le[1]);
        }
        out.flush();
    }
}
