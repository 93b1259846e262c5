package dev.deepserve.stack;

import dev.deepserve.model.ModelDirectory;
import dev.deepserve.model.cli.ModelCli;
import dev.deepserve.model.tiny.TinyCheckpoint;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;

/** Makes sure the stack has a model to serve: the configured directory, or a generated tiny-v3 checkpoint. */
final class ModelBootstrap {

    private ModelBootstrap() {
    }

    static void ensure(StackSettings settings, PrintStream out) {
        ModelDirectory dir = new ModelDirectory(settings.modelDir());
        if (dir.weightsProblem().isEmpty()) {
            out.println("model: " + settings.modelDir());
            return;
        }
        if (Files.exists(dir.config())) {
            // A directory the user pointed us at but which is incomplete: never overwrite it.
            throw new CliException("model: " + dir.weightsProblem().get());
        }
        out.println("model: none at " + settings.modelDir() + "; generating the tiny-v3 checkpoint (once)");
        try {
            new TinyCheckpoint(TinyCheckpoint.preset("tiny-v3"), 0).write(settings.modelDir(), 1, ModelCli.tokenizerDir(System.getenv()), out);
        } catch (ModelCli.UsageError e) {
            throw new CliException("model: " + e.getMessage());
        } catch (IOException e) {
            throw new CliException("model: could not generate the tiny checkpoint in " + settings.modelDir() + ": " + Stack.oneLine(e));
        }
    }
}
