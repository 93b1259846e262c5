package dev.deepserve.billing.store;

/** Whether a failed write broke a unique constraint (SQLSTATE 23505), however Hibernate and the driver wrapped it. */
public final class UniqueViolation {

    private UniqueViolation() {
    }

    public static boolean is(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (c instanceof io.vertx.pgclient.PgException pg && "23505".equals(pg.getSqlState())) {
                return true;
            }
            if (c instanceof org.hibernate.exception.ConstraintViolationException cv && "23505".equals(cv.getSQLState())) {
                return true;
            }
            if (c.getCause() == c) {
                break;
            }
        }
        return false;
    }
}
