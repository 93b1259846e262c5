package dev.deepserve.tokenize;

import dev.deepserve.internal.InternalToken;
import io.restassured.RestAssured;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import dev.deepserve.model.cli.ModelCli;
import io.quarkus.test.junit.QuarkusTest;
import io.quarkus.test.junit.QuarkusTestProfile;
import io.quarkus.test.junit.TestProfile;
import io.restassured.http.ContentType;
import org.junit.jupiter.api.Test;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;

import static io.restassured.RestAssured.given;
import static org.hamcrest.Matchers.contains;
import static org.hamcrest.Matchers.containsString;
import static org.hamcrest.Matchers.equalTo;
import static org.hamcrest.Matchers.startsWith;

/** The REST endpoints on the real DeepSeek-V3 tokenizer files. */
@QuarkusTest
@TestProfile(TokenizerResourceTest.RealTokenizer.class)
class TokenizerResourceTest {

    /** The service credential the test profile gives this service (application.properties, %test). */
    static final String TOKEN = "internal-token-for-tests-0123456789";

    /** Every request of this class carries the credential, unless it sets the header itself. */
    @BeforeAll
    static void presentTheServiceCredential() {
        RestAssured.filters((request, response, next) -> {
            if (!request.getHeaders().hasHeaderWithName(InternalToken.HEADER)) {
                request.header(InternalToken.HEADER, TOKEN);
            }
            return next.next(request, response);
        });
    }

    @AfterAll
    static void forgetIt() {
        RestAssured.replaceFiltersWith(java.util.List.of());
    }

    @Test
    void everyRouteButTheProbesNeedsTheServiceCredential() {
        given().header(InternalToken.HEADER, "").contentType(ContentType.JSON).body("{\"text\":\"hi\"}").post("/tokenize").then().statusCode(401)
                .body("error.type", equalTo("authentication_error"));
        given().header(InternalToken.HEADER, TOKEN.toUpperCase()).contentType(ContentType.JSON).body("{\"ids\":[1]}").post("/detokenize")
                .then().statusCode(403);
        RestAssured.replaceFiltersWith(java.util.List.of());
        try {
            given().get("/q/health/ready").then().statusCode(200);
        } finally {
            presentTheServiceCredential();
        }
    }

    public static class RealTokenizer implements QuarkusTestProfile {
        @Override
        public Map<String, String> getConfigOverrides() {
            Path dir = ModelCli.tokenizerDir(System.getenv());
            return Map.of("deepserve.model-dir", dir.toString(), "deepserve.max-text-chars", "1000");
        }
    }

    @Test
    void tokenizesTextWithoutAddingSpecialTokens() {
        given().contentType(ContentType.JSON).body(Map.of("text", "Hello world! 12345 中文"))
                .post("/tokenize").then().statusCode(200)
                .body("ids", contains(19923, 2058, 3, 223, 6895, 1883, 223, 21134))
                .body("count", equalTo(8));
    }

    @Test
    void tokenizesAConversationThroughTheChatTemplate() {
        given().contentType(ContentType.JSON)
                .body(Map.of("messages", List.of(Map.of("role", "system", "content", "Be brief."),
                        Map.of("role", "user", "content", List.of(Map.of("type", "text", "text", "Hi"))))))
                .post("/tokenize").then().statusCode(200)
                .body("prompt", equalTo("<｜begin▁of▁sentence｜>Be brief.<｜User｜>Hi<｜Assistant｜>"))
                .body("ids[0]", equalTo(0));
        given().contentType(ContentType.JSON)
                .body(Map.of("messages", List.of(Map.of("role", "user", "content", "Hi")), "add_generation_prompt", false))
                .post("/chat-template").then().statusCode(200)
                .body("prompt", equalTo("<｜begin▁of▁sentence｜><｜User｜>Hi"));
    }

    @Test
    void detokenizes() {
        given().contentType(ContentType.JSON).body(Map.of("ids", List.of(0, 19923, 2058, 1), "skip_special_tokens", true))
                .post("/detokenize").then().statusCode(200).body("text", equalTo("Hello world"));
    }

    @Test
    void badInputsGetClearJsonErrors() {
        given().contentType(ContentType.JSON).body("{\"text\": 5}").post("/tokenize").then().statusCode(400)
                .body("error.message", equalTo("text must be a string (or send messages)")).body("error.param", equalTo("text"));
        given().contentType(ContentType.JSON).body("{not json").post("/tokenize").then().statusCode(400)
                .body("error.message", startsWith("request body is not valid JSON"));
        given().contentType(ContentType.JSON).body(Map.of("ids", List.of(1, 999999))).post("/detokenize").then().statusCode(400)
                .body("error.message", containsString("ids[1] = 999999 is not a token id"));
        given().contentType(ContentType.JSON).body(Map.of("messages", List.of(Map.of("role", "robot", "content", "x")))).post("/tokenize")
                .then().statusCode(400).body("error.message", equalTo("messages[0].role must be one of system, user, assistant, tool"));
        given().contentType(ContentType.JSON).body(Map.of("text", "x".repeat(1001))).post("/tokenize").then().statusCode(413)
                .body("error.message", equalTo("text too long: 1001 characters, at most 1000"));
        given().contentType(ContentType.TEXT).body("hi").post("/tokenize").then().statusCode(415)
                .body("error.message", containsString("application/json"));
    }

    @Test
    void readyWithTheVocabularyLoaded() {
        given().get("/q/health/ready").then().statusCode(200).body(containsString("vocab-size"));
    }
}
