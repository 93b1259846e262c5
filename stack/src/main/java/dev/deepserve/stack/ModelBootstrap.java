package dev.deepserve.stack;

import dev.deepserve.model.ModelDirectory;

import java.io.PrintStream;

/** Makes sure the stack has a model to serve: the configured directory, or a generated tiny checkpoint. */
final class ModelBootstrap {

    private ModelBootstrap() {
    }

    static void ensure(StackSettings settings, PrintStream out) {
        ModelDirectory dir = new ModelDirectory(settings.modelDir());
        dir.weightsProblem().ifPresentOrElse(
                problem -> out.println("model: " + problem + " - prefill and decode stay not-ready until it exists"),
                () -> out.println("model: " + settings.modelDir()));
    }
}
