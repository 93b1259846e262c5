package dev.deepserve.stack;

import dev.deepserve.model.cli.ModelCli;
import org.junit.jupiter.api.Test;

import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

/** The {@code ./deepserve tokenize} JSONL contract of DESIGN.md. */
class TokenizeCliTest {

    static Path tokenizerDir() {
        return ModelCli.tokenizerDir(System.getenv());
    }

    @Test
    void oneOutputLinePerInputLineWithErrorsInPlace() {
        String input = "{\"text\":\"Hello world!\"}\n{\"text\":\"\"}\nnot json\n{\"text\":\"<｜User｜>\"}\n";
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int code = TokenizeCli.run(new String[] {"--model", tokenizerDir().toString()}, new ByteArrayInputStream(input.getBytes(StandardCharsets.UTF_8)),
                new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8));
        assertEquals(1, code);
        assertEquals("""
                {"ids":[19923,2058,3]}
                {"ids":[]}
                {"error":"line 3: not valid JSON"}
                {"ids":[128803]}
                """, out.toString(StandardCharsets.UTF_8));
        assertEquals("tokenize: line 3: not valid JSON\n", err.toString(StandardCharsets.UTF_8));
    }

    @Test
    void aDirectoryWithoutTokenizerFilesIsAOneLineError() {
        CliException e = assertThrows(CliException.class, () -> TokenizeCli.run(new String[] {"--model", "/nonexistent"},
                new ByteArrayInputStream(new byte[0]), System.out, System.err));
        assertEquals("tokenize: /nonexistent has no tokenizer.json", e.getMessage());
    }
}
