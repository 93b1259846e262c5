package dev.deepserve.stack;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.deepserve.tokenizer.Tokenizer;
import dev.deepserve.tokenizer.TokenizerFormatException;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;

/**
 * {@code ./deepserve tokenize --model DIR}: JSONL {@code {"text": ...}} on stdin, JSONL {@code {"ids": [...]}} on
 * stdout, one output line per input line (no special tokens added). A line that is not a JSON object with a string
 * {@code text} gets {@code {"error": ...}} in its place, so output lines stay aligned with input lines; the message also
 * goes to stderr and the exit status is 1.
 */
final class TokenizeCli {

    private static final ObjectMapper JSON = new ObjectMapper();

    private TokenizeCli() {
    }

    static int run(String[] args, InputStream in, PrintStream out, PrintStream err) {
        if (args.length != 2 || !args[0].equals("--model")) {
            throw new CliException("tokenize: usage: ./deepserve tokenize --model DIR < input.jsonl", 2);
        }
        Tokenizer tokenizer;
        try {
            tokenizer = Tokenizer.load(Path.of(args[1]));
        } catch (TokenizerFormatException e) {
            throw new CliException("tokenize: " + e.getMessage(), 2);
        }
        int failures = 0;
        int lineNo = 0;
        try (BufferedReader reader = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
            for (String line = reader.readLine(); line != null; line = reader.readLine()) {
                lineNo++;
                ObjectNode result = JSON.createObjectNode();
                String error = null;
                try {
                    JsonNode node = JSON.readTree(line);
                    if (node == null || !node.isObject() || !node.path("text").isTextual()) {
                        error = "line " + lineNo + ": expected a JSON object with a string \"text\"";
                    } else {
                        ArrayNode ids = result.putArray("ids");
                        for (int id : tokenizer.encode(node.get("text").asText())) {
                            ids.add(id);
                        }
                    }
                } catch (IOException e) {
                    error = "line " + lineNo + ": not valid JSON";
                }
                if (error != null) {
                    failures++;
                    result.removeAll();
                    result.put("error", error);
                    err.println("tokenize: " + error);
                }
                out.println(JSON.writeValueAsString(result));
            }
        } catch (IOException e) {
            throw new CliException("tokenize: cannot read stdin: " + e.getMessage(), 1);
        }
        out.flush();
        return failures == 0 ? 0 : 1;
    }
}
