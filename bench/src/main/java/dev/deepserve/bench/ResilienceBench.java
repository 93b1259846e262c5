package dev.deepserve.bench;

import dev.deepserve.gateway.upstream.CircuitBreaker;
import io.smallrye.faulttolerance.api.TypedGuard;

import java.time.Duration;
import java.time.temporal.ChronoUnit;
import java.util.Locale;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.function.Supplier;

/**
 * What guarding an upstream call costs: the gateway's hand-written breaker (a permit before the call, an outcome
 * after it) against SmallRye Fault Tolerance's programmatic guard with the same policy (circuit breaker + retries),
 * both around a call that completes at once — the success path every proxied request takes. Prints ns per call,
 * cold (the first calls of a fresh JVM, as on a replica just started) and warm, and the ratio. One thread, as an
 * event loop calls it.
 */
public final class ResilienceBench {

    private static final CompletionStage<String> ANSWER = CompletableFuture.completedFuture("ok");

    public static void main(String[] args) throws Exception {
        int calls = 2_000_000;
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--calls") && i + 1 < args.length) {
                calls = Integer.parseInt(args[++i]);
            }
        }
        CircuitBreaker ours = new CircuitBreaker(5, Duration.ofSeconds(30).toNanos());
        @SuppressWarnings("unchecked")
        Class<CompletionStage<String>> type = (Class<CompletionStage<String>>) (Class<?>) CompletionStage.class;
        TypedGuard<CompletionStage<String>> library = TypedGuard.create(type)
                .withCircuitBreaker().requestVolumeThreshold(5).failureRatio(1.0).delay(30, ChronoUnit.SECONDS).done()
                .withRetry().maxRetries(2).delay(100, ChronoUnit.MILLIS).jitter(50, ChronoUnit.MILLIS).done()
                .build();
        Supplier<CompletionStage<String>> call = () -> ANSWER;

        System.out.println("guarding one upstream call that succeeds at once (ns per call, one thread)");
        System.out.printf(Locale.ROOT, "%-8s %14s %22s %8s%n", "phase", "hand-written", "SmallRye FT guard", "ratio");
        int cold = 10_000;
        double oursCold = runOurs(ours, cold);
        double libCold = runLibrary(library, call, cold);
        print("cold", cold, oursCold, libCold);
        for (int round = 0; round < 3; round++) {
            runOurs(ours, calls);
            runLibrary(library, call, calls);
        }
        double oursWarm = runOurs(ours, calls);
        double libWarm = runLibrary(library, call, calls);
        print("warm", calls, oursWarm, libWarm);
        System.exit(0); // the library's timer thread is not a daemon
    }

    private static void print(String phase, int calls, double ours, double library) {
        System.out.printf(Locale.ROOT, "%-8s %11.1f ns %19.1f ns %7.1fx   (%,d calls; ratio = library / ours)%n", phase, ours, library, library / ours, calls);
    }

    private static volatile Object sink;

    /** The proxy's path: a permit, the call, and its outcome reported. */
    private static double runOurs(CircuitBreaker breaker, int calls) {
        long t0 = System.nanoTime();
        for (int i = 0; i < calls; i++) {
            long permit = breaker.tryAcquire(System.nanoTime());
            if (permit == CircuitBreaker.DENIED) {
                throw new IllegalStateException("the breaker opened on successes");
            }
            CompletionStage<String> answer = ANSWER;
            answer.thenAccept(r -> breaker.success(permit));
            sink = answer;
        }
        return (System.nanoTime() - t0) / (double) calls;
    }

    private static double runLibrary(TypedGuard<CompletionStage<String>> guard, Supplier<CompletionStage<String>> call, int calls) {
        long t0 = System.nanoTime();
        for (int i = 0; i < calls; i++) {
            sink = guard.get(call);
        }
        return (System.nanoTime() - t0) / (double) calls;
    }
}
