package dev.deepserve.serving;

/** A request the engine will not take, with the HTTP status the service answers (400 bad input, 409, 503 full or loading). */
public final class Refused extends RuntimeException {

    public final int status;

    public Refused(int status, String message) {
        super(message);
        this.status = status;
    }
}
