package dev.deepserve.gateway;

import dev.deepserve.accounting.SchemaAtStart;
import io.quarkus.runtime.StartupEvent;
import io.quarkus.scheduler.Scheduler;
import jakarta.annotation.Priority;
import jakarta.enterprise.context.ApplicationScoped;
import jakarta.enterprise.event.Observes;

/**
 * The gateway's scheduler starts halted ({@code quarkus.scheduler.start-mode=halted}) and is resumed once
 * {@link SchemaAtStart} has the schema current, so no scheduled job (lease sweeps, reservation sweeps, the outbox
 * relay) runs against a schema still being migrated.
 */
@ApplicationScoped
class SchedulerAfterSchema {

    void resume(@Observes @Priority(SchemaAtStart.PRIORITY + 1) StartupEvent ev, Scheduler scheduler) {
        scheduler.resume();
    }
}
