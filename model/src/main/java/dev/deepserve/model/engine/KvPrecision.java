package dev.deepserve.model.engine;

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
