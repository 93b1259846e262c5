package dev.deepserve.accounting;

import org.junit.jupiter.api.Test;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;

/** What the usage pipeline can store: flaws named, hostile text cleaned and bounded, paired surrogates kept. */
class StoredTextTest {

    @Test
    void flawsAreNamedAndGoodTextPasses() {
        assertNull(StoredText.flaw("deepseek-chat \u00e9 \ud83d\ude00"));
        assertEquals("a control character", StoredText.flaw("a\u0000b"));
        assertEquals("a control character", StoredText.flaw("tab\there"));
        assertEquals("an unpaired surrogate", StoredText.flaw("x\ud800"));
        assertEquals("an unpaired surrogate", StoredText.flaw("\udc00x"));
    }

    @Test
    void cleaningReplacesAndBounds() {
        assertEquals("a\uFFFDb\uFFFDc \ud83d\ude00", StoredText.clean("a\u0000b\ud800c \ud83d\ude00", 100));
        assertEquals(500, StoredText.clean("x".repeat(1_000_000), 500).length());
        assertEquals("", StoredText.clean("", 5));
    }
}
