package dev.deepserve.gateway.upstream;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import io.vertx.core.buffer.Buffer;
import io.vertx.core.json.JsonObject;
import io.vertx.core.json.jackson.DatabindCodec;

import java.io.IOException;
import java.util.Map;

/**
 * What settlement needs from a non-streamed upstream answer — its {@code usage} object and the first choice's
 * {@code finish_reason} — read with a streaming parser: the whole body is still checked to be one JSON object, but
 * only {@code usage} is built as a tree (the answer itself is forwarded as the bytes it came in).
 */
record AnswerScan(JsonObject usage, String finishReason) {

    /** The usage and finish reason of {@code body}; throws when it is not a JSON object. */
    static AnswerScan of(Buffer body) throws IOException {
        byte[] bytes = body.getBytes();
        JsonObject usage = null;
        String reason = null;
        try (JsonParser p = DatabindCodec.mapper().getFactory().createParser(bytes)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                throw new IOException("not a JSON object");
            }
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                JsonToken value = p.nextToken();
                if ("usage".equals(name) && value == JsonToken.START_OBJECT) {
                    usage = new JsonObject(p.readValueAs(Map.class));
                } else if ("choices".equals(name) && value == JsonToken.START_ARRAY) {
                    reason = firstFinishReason(p);
                } else {
                    p.skipChildren();
                }
            }
            if (p.currentToken() != JsonToken.END_OBJECT || p.nextToken() != null) {
                throw new IOException("not a single JSON object");
            }
        }
        return new AnswerScan(usage, reason);
    }

    /** Reads the choices array to its end; the first element's finish_reason when it is a string. */
    private static String firstFinishReason(JsonParser p) throws IOException {
        String reason = null;
        boolean first = true;
        JsonToken t;
        while ((t = p.nextToken()) != JsonToken.END_ARRAY) {
            if (t == null) {
                throw new IOException("unterminated choices");
            }
            if (first && t == JsonToken.START_OBJECT) {
                while (p.nextToken() == JsonToken.FIELD_NAME) {
                    String name = p.currentName();
                    JsonToken v = p.nextToken();
                    if ("finish_reason".equals(name) && v == JsonToken.VALUE_STRING) {
                        reason = p.getText();
                    } else {
                        p.skipChildren();
                    }
                }
            } else {
                p.skipChildren();
            }
            first = false;
        }
        return reason;
    }
}
