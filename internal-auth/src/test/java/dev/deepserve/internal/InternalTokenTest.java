package dev.deepserve.internal;

import org.junit.jupiter.api.Test;

import java.util.Optional;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The service credential: what a token may be, and the verdict on each kind of presented value. */
class InternalTokenTest {

    private static final String SECRET = "internal-token-for-tests-0123456789";

    @Test
    void verdicts() {
        Optional<InternalToken> token = Optional.of(InternalToken.of(SECRET));
        assertNull(InternalToken.check(token, SECRET));
        assertEquals(401, InternalToken.check(token, null).status());
        assertEquals(401, InternalToken.check(token, "").status());
        assertEquals(403, InternalToken.check(token, SECRET + "x").status());
        assertEquals(403, InternalToken.check(token, SECRET.substring(1)).status());
        assertEquals(403, InternalToken.check(token, "x".repeat(1 << 20)).status());
        assertEquals(503, InternalToken.check(Optional.empty(), SECRET).status());
    }

    @Test
    void weakOrUnprintableTokensAreRefusedAtStart() {
        assertThrows(IllegalArgumentException.class, () -> InternalToken.of("short"));
        assertThrows(IllegalArgumentException.class, () -> InternalToken.of(SECRET + "\n"));
        assertThrows(IllegalArgumentException.class, () -> InternalToken.of(SECRET + "é"));
        assertThrows(IllegalArgumentException.class, () -> InternalToken.of("x".repeat(InternalToken.MAX_LENGTH + 1)));
        assertTrue(InternalToken.configured("  ").isEmpty());
        assertTrue(InternalToken.configured(null).isEmpty());
    }

    @Test
    void generatedTokensAreFreshAndNeverPrinted() {
        InternalToken a = InternalToken.generate();
        InternalToken b = InternalToken.generate();
        assertNotEquals(a.value(), b.value());
        assertTrue(a.accepts(a.value()));
        assertFalse(a.accepts(b.value()));
        assertFalse(a.toString().contains(a.value()));
    }
}
