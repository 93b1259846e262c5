package dev.deepserve.model.engine;

import dev.deepserve.model.weights.Bf16;

import java.nio.ByteBuffer;
import java.util.Locale;

/**
 * How the paged latent KV keeps its values. The DeepSeek-V3 paper keeps MLA's cache in BF16; deepserve's engines do
 * too by default, halving the memory and transfer bytes of every cached token. Attention widens BF16 latents to
 * float32 as it reads them and accumulates in float32; new latents are computed in float32 and rounded (to nearest,
 * ties to even) once, as they are stored. FLOAT32 keeps the values as computed: the reference the BF16 cache is
 * measured against.
 */
public enum KvPrecision {
    FLOAT32(4),
    BF16(2);

    private final int bytes;

    KvPrecision(int bytes) {
        this.bytes = bytes;
    }

    /** Bytes one cached value takes. */
    public int bytes() {
        return bytes;
    }

    /** The precision whose values take {@code bytes} bytes, or null when none does (a width read from bytes sent or stored). */
    public static KvPrecision ofBytes(int bytes) {
        return switch (bytes) {
            case 4 -> FLOAT32;
            case 2 -> BF16;
            default -> null;
        };
    }

    /** Puts {@code values} into {@code buf} at this precision, in the buffer's byte order (BF16: rounded as stored). */
    public void put(ByteBuffer buf, float[] values) {
        if (this == FLOAT32) {
            buf.asFloatBuffer().put(values); // a bulk copy; the view does not move the buffer's position
            buf.position(buf.position() + Float.BYTES * values.length);
            return;
        }
        for (float v : values) {
            buf.putShort(Bf16.encode(v));
        }
    }

    /** Fills {@code out} with values read from {@code buf} at this precision (BF16 widened exactly). */
    public void get(ByteBuffer buf, float[] out) {
        if (this == FLOAT32) {
            buf.asFloatBuffer().get(out);
            buf.position(buf.position() + Float.BYTES * out.length);
            return;
        }
        for (int i = 0; i < out.length; i++) {
            out[i] = Bf16.decode(buf.getShort());
        }
    }

    /** The lower-case name a setting uses ({@code bf16}, {@code float32}). */
    public String label() {
        return name().toLowerCase(Locale.ROOT);
    }

    /** {@code bf16} or {@code float32} (also {@code fp32}, {@code f32}), any case; anything else is refused by name. */
    public static KvPrecision parse(String text) {
        String t = text == null ? "" : text.strip().toLowerCase(Locale.ROOT);
        return switch (t) {
            case "bf16", "bfloat16" -> BF16;
            case "float32", "fp32", "f32" -> FLOAT32;
            default -> throw new IllegalArgumentException("the KV cache precision must be bf16 or float32, not '" + text + "'");
        };
    }
}
