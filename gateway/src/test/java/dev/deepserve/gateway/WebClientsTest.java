package dev.deepserve.gateway;

import com.sun.net.httpserver.HttpServer;
import dev.deepserve.accounting.ApiKeys;
import io.quarkus.test.common.QuarkusTestResource;
import io.quarkus.test.common.http.TestHTTPResource;
import io.quarkus.test.junit.QuarkusTest;
import io.quarkus.test.junit.QuarkusTestProfile;
import io.quarkus.test.junit.TestProfile;
import io.restassured.http.ContentType;
import io.restassured.response.Response;
import io.vertx.core.json.JsonArray;
import io.vertx.core.json.JsonObject;
import io.vertx.mutiny.sqlclient.Pool;
import io.vertx.mutiny.sqlclient.Tuple;
import jakarta.inject.Inject;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.openqa.selenium.By;
import org.openqa.selenium.OutputType;
import org.openqa.selenium.chrome.ChromeDriver;
import org.openqa.selenium.chrome.ChromeDriverService;
import org.openqa.selenium.chrome.ChromeOptions;
import org.openqa.selenium.support.ui.WebDriverWait;

import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.URL;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.List;
import java.util.Map;

import static io.restassured.RestAssured.given;
import static org.awaitility.Awaitility.await;
import static org.hamcrest.Matchers.containsString;
import static org.hamcrest.Matchers.equalTo;
import static org.hamcrest.Matchers.not;
import static org.hamcrest.Matchers.nullValue;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Web clients: CORS on the public API (configured origins only, preflight without a key, nothing served to another
 * origin), short-lived browser tokens (minted by a key, bound to origins, models, output and spend, billed to the
 * key's account, revoked with it), and the example page {@code examples/web-chat/} in a real headless Chromium on
 * another origin — streaming with a key and with a token, refused from an origin not allowed, stopped mid-stream
 * and charged exactly what reached the page. Screenshots go to target/web-client-*.png.
 */
@QuarkusTest
@QuarkusTestResource(BillingSchema.class)
@QuarkusTestResource(EngineTwin.class)
@TestProfile(WebClientsTest.WithPages.class)
class WebClientsTest {

    /** Two page servers on this machine: one on an allowed origin, one not. */
    public static class WithPages implements QuarkusTestProfile {
        static final int PAGE = freePort();
        static final int OTHER = freePort();
        static final String PAGE_ORIGIN = "http://127.0.0.1:" + PAGE;

        @Override
        public Map<String, String> getConfigOverrides() {
            return Map.of("deepserve.cors-origins", "http://page.test," + PAGE_ORIGIN);
        }

        static int freePort() {
            try (ServerSocket s = new ServerSocket(0)) {
                return s.getLocalPort();
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        }
    }

    static final String HI = "{\"model\":\"deepseek-chat\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}";

    @Inject
    Pool pool;

    @TestHTTPResource("/")
    URL gateway;

    @AfterEach
    void reset() {
        EngineTwin.answerTokens = 5;
        EngineTwin.delayMillis = 0;
    }

    String accountIdOf(String secret) {
        return pool.preparedQuery("SELECT account_id FROM billing.api_keys WHERE secret_sha256 = $1").execute(Tuple.of(ApiKeys.sha256(secret)))
                .await().indefinitely().iterator().next().getString(0);
    }

    /** The usage events written for an account, oldest first. */
    List<JsonObject> events(String accountId) {
        Accounts.written();
        return pool.preparedQuery("SELECT payload::text FROM gateway.usage_outbox WHERE payload->>'account_id' = $1 ORDER BY payload->>'completed_at'")
                .execute(Tuple.of(accountId)).await().indefinitely().stream().map(r -> new JsonObject(r.getString(0))).toList();
    }

    static Response chat(String key, String origin, String body) {
        var request = given().header("Authorization", "Bearer " + key).contentType(ContentType.JSON).body(body);
        if (origin != null) {
            request.header("Origin", origin);
        }
        return request.post("/v1/chat/completions");
    }

    static Response mint(String key, JsonObject ask) {
        return given().header("Authorization", "Bearer " + key).contentType(ContentType.JSON).body(ask.encode()).post("/v1/client_tokens");
    }

    static JsonObject ask(String... origins) {
        return new JsonObject().put("origins", new JsonArray(List.of((Object[]) origins))).put("spend_limit", "0.05").put("expires_in", 300);
    }

    // ---- CORS

    @Test
    void aPreflightFromAnAllowedOriginIsAnsweredWithoutAKey() {
        for (String path : List.of("/v1/chat/completions", "/chat/completions", "/v1/models")) {
            given().header("Origin", "http://page.test").header("Access-Control-Request-Method", "POST")
                    .header("Access-Control-Request-Headers", "authorization, content-type, x-stainless-os, x-stainless-retry-count, x-evil")
                    .options(path).then().statusCode(204)
                    .header("Access-Control-Allow-Origin", equalTo("http://page.test"))
                    .header("Access-Control-Allow-Methods", containsString("POST"))
                    .header("Access-Control-Allow-Headers", equalTo("authorization, content-type, x-stainless-os, x-stainless-retry-count"))
                    .header("Vary", containsString("Origin"));
        }
    }

    @Test
    void anOriginNotAllowedGetsNoCorsAndIsNotServed() {
        String key = Accounts.create(pool, "1", null);
        given().header("Origin", "http://evil.test").header("Access-Control-Request-Method", "POST").options("/v1/chat/completions")
                .then().statusCode(403).header("Access-Control-Allow-Origin", nullValue());
        chat(key, "http://evil.test", HI).then().statusCode(403).header("Access-Control-Allow-Origin", nullValue())
                .body("error.code", equalTo("origin_not_allowed"));
        assertEquals(List.of(), events(accountIdOf(key)), "nothing was generated or charged");
        // a near miss is another origin: scheme, host and port must all match
        chat(key, "https://page.test", HI).then().statusCode(403);
        chat(key, "http://page.test:80", HI).then().statusCode(403);
    }

    @Test
    void anAllowedOriginIsServedAndMayReadTheRequestId() {
        String key = Accounts.create(pool, "1", null);
        chat(key, "http://page.test", HI).then().statusCode(200).header("Access-Control-Allow-Origin", equalTo("http://page.test"))
                .header("Access-Control-Expose-Headers", containsString("X-Request-Id"));
        // without an Origin (a server, an SDK) nothing changes
        chat(key, null, HI).then().statusCode(200).header("Access-Control-Allow-Origin", nullValue());
    }

    @Test
    void minting_adminAndInternalPathsHaveNoCors() {
        String key = Accounts.create(pool, "1", null);
        given().header("Origin", "http://page.test").header("Access-Control-Request-Method", "POST").options("/v1/client_tokens")
                .then().header("Access-Control-Allow-Origin", nullValue());
        given().header("Authorization", "Bearer " + key).header("Origin", "http://page.test").contentType(ContentType.JSON)
                .body(ask("http://page.test").encode()).post("/v1/client_tokens").then().statusCode(200).header("Access-Control-Allow-Origin", nullValue());
        given().header("Origin", "http://page.test").get("/admin/upstreams").then().header("Access-Control-Allow-Origin", nullValue());
    }

    // ---- browser tokens

    @Test
    void aBrowserTokenWorksOnlyFromItsOriginsAndIsBilledToTheMintingKeysAccount() {
        String key = Accounts.create(pool, "1", null);
        JsonObject minted = new JsonObject(mint(key, ask("http://page.test").put("models", new JsonArray().add("deepseek-chat")).put("max_tokens", 3))
                .then().statusCode(200).header("Cache-Control", "no-store").body("object", equalTo("client_token")).extract().asString());
        String token = minted.getString("client_token");
        assertTrue(minted.getLong("expires_at") > System.currentTimeMillis() / 1000 + 200, minted.encode());

        JsonObject answer = new JsonObject(chat(token, "http://page.test", "{\"model\":\"deepseek-chat\",\"max_tokens\":50,\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}")
                .then().statusCode(200).extract().asString());
        assertEquals(3, answer.getJsonObject("usage").getInteger("completion_tokens"), "the token's max_tokens bounds a request");
        List<JsonObject> billed = events(accountIdOf(key));
        assertEquals(1, billed.size());
        assertEquals(minted.getString("id"), billed.getFirst().getString("api_key_id"), "its use is in the ledger under the token's own id");

        chat(token, WithPages.PAGE_ORIGIN, HI).then().statusCode(401).body("error.message", containsString("not valid from this origin"));
        chat(token, null, HI).then().statusCode(401);
        String otherModel = mint(key, ask("http://page.test").put("models", new JsonArray().add("deepseek-reasoner"))).then().statusCode(200).extract().path("client_token");
        chat(otherModel, "http://page.test", HI).then().statusCode(403);
        given().header("Authorization", "Bearer " + token).header("Origin", "http://page.test").get("/user/balance").then().statusCode(403);
        mint(token, ask("http://page.test")).then().statusCode(401);
        given().header("Authorization", "Bearer " + token).header("Origin", "http://page.test").contentType(ContentType.JSON)
                .body(ask("http://page.test").encode()).post("/v1/client_tokens").then().statusCode(403).body("error.code", equalTo("browser_token_cannot_mint"));
        String tampered = token.substring(0, 10) + (token.charAt(10) == 'a' ? 'b' : 'a') + token.substring(11);
        chat(tampered, "http://page.test", HI).then().statusCode(401);
    }

    @Test
    void aBrowserTokenDiesWithItsKeyAtItsExpiryAndAtItsSpendLimit() {
        String key = Accounts.create(pool, "1", null);
        String token = mint(key, ask("http://page.test")).then().statusCode(200).extract().path("client_token");
        chat(token, "http://page.test", HI).then().statusCode(200);
        pool.preparedQuery("UPDATE billing.api_keys SET revoked_at = now() WHERE secret_sha256 = $1").execute(Tuple.of(ApiKeys.sha256(key))).await().indefinitely();
        await().atMost(Duration.ofSeconds(2)).pollInterval(Duration.ofMillis(20)).until(() -> chat(token, "http://page.test", HI).statusCode() == 401);
        assertTrue(pool.preparedQuery("SELECT revoked_at IS NOT NULL FROM billing.api_keys WHERE secret_sha256 = $1").execute(Tuple.of(ApiKeys.sha256(token)))
                .await().indefinitely().iterator().next().getBoolean(0), "revoking a key revokes the tokens it minted");

        String other = Accounts.create(pool, "1", null);
        String expiring = mint(other, ask("http://page.test")).then().statusCode(200).extract().path("client_token");
        pool.preparedQuery("UPDATE billing.api_keys SET expires_at = now() - interval '1 second' WHERE secret_sha256 = $1")
                .execute(Tuple.of(ApiKeys.sha256(expiring))).await().indefinitely();
        chat(expiring, "http://page.test", HI).then().statusCode(401);

        String tiny = mint(other, ask("http://page.test").put("spend_limit", "0.00000001")).then().statusCode(200).extract().path("client_token");
        chat(tiny, "http://page.test", HI).then().statusCode(402).body("error.code", equalTo("spend_cap_reached"));
    }

    /** Tokens share the minting key's rate limit (and stream slots): minting many cannot multiply them. */
    @Test
    void tokensCountAgainstTheMintingKeysRateLimit() {
        String key = Accounts.create(pool, "1", 2);
        String a = mint(key, ask("http://page.test")).then().statusCode(200).extract().path("client_token");
        String b = mint(key, ask("http://page.test")).then().statusCode(200).extract().path("client_token");
        chat(a, "http://page.test", HI).then().statusCode(429);
        chat(b, "http://page.test", HI).then().statusCode(429);
        mint(key, ask("http://page.test")).then().statusCode(429);
    }

    /** A multipart body is never written to disk (Vert.x would keep uploads in ./file-uploads, before any key check). */
    @Test
    void uploadsAreNotWrittenToDiskAndATrailingSlashIsStillThePublicApi() {
        given().multiPart("file", "x.bin", new byte[4096]).post("/v1/chat/completions").then().statusCode(401);
        given().multiPart("file", "x.bin", new byte[4096]).post("/v1/client_tokens").then().statusCode(401);
        assertTrue(!Files.exists(Path.of("file-uploads")) || Files.isDirectory(Path.of("file-uploads")) && Path.of("file-uploads").toFile().list().length == 0,
                "nothing uploaded was kept");
        given().header("Origin", "http://evil.test").header("Access-Control-Request-Method", "POST").options("/v1/chat/completions/")
                .then().statusCode(403);
        given().get("/v1/models").then().header("Vary", containsString("Origin"));
    }

    @Test
    void badMintRequestsGet400NamingTheField() {
        String key = Accounts.create(pool, "1", null);
        mint(key, new JsonObject().put("spend_limit", "1")).then().statusCode(400).body("error.param", equalTo("origins"));
        for (String origin : List.of("*", "http://page.test/path", "HTTP://PAGE.TEST", "http://page.test\u0000", "javascript:alert(1)", "x".repeat(300))) {
            mint(key, ask(origin)).then().statusCode(400).body("error.param", equalTo("origins"));
        }
        mint(key, ask("http://not-allowed.test")).then().statusCode(400).body("error.message", containsString("DEEPSERVE_CORS_ORIGINS"));
        for (Object spend : new Object[] {null, "-1", "0", "abc", "1e400", "0.000000001", 1e300}) {
            mint(key, ask("http://page.test").put("spend_limit", spend)).then().statusCode(400).body("error.param", equalTo("spend_limit"));
        }
        for (Object seconds : new Object[] {0, 59, 3601, -5, "600", 1.5}) {
            mint(key, ask("http://page.test").put("expires_in", seconds)).then().statusCode(400).body("error.param", equalTo("expires_in"));
        }
        mint(key, ask("http://page.test").put("max_tokens", 0)).then().statusCode(400).body("error.param", equalTo("max_tokens"));
        mint(key, ask("http://page.test").put("models", new JsonArray().add("a\u0000b"))).then().statusCode(400).body("error.param", equalTo("models"));
        given().header("Authorization", "Bearer " + key).contentType(ContentType.JSON).body("{\"origins\":[\"" + "a".repeat(70_000) + "\"]}")
                .post("/v1/client_tokens").then().statusCode(413);
        given().contentType(ContentType.JSON).body(ask("http://page.test").encode()).post("/v1/client_tokens").then().statusCode(401)
                .body(not(containsString("sk-")));
        // minting writes a row: a key holds at most so many live tokens at a time
        pool.preparedQuery("""
                        INSERT INTO billing.api_keys (id, account_id, name, prefix, secret_sha256, spend_cap, parent_key_id, expires_at, origins)
                        SELECT 'btok_fill_' || k.id || '_' || g, k.account_id, 'browser token', 'sk-x', sha256((k.id || g)::bytea), 1, k.id,
                               now() + interval '10 minutes', ARRAY['http://page.test']
                        FROM billing.api_keys k, generate_series(1, $2) g WHERE k.secret_sha256 = $1""")
                .execute(Tuple.of(ApiKeys.sha256(key), dev.deepserve.gateway.auth.BrowserTokens.MAX_LIVE_PER_KEY)).await().indefinitely();
        mint(key, ask("http://page.test")).then().statusCode(429).header("Retry-After", equalTo("60"));
    }

    // ---- the example page in a real browser

    static final Path CHROMIUM = Path.of("/usr/bin/chromium");
    static final Path CHROMEDRIVER = Path.of("/usr/bin/chromedriver");
    static final Path PAGE = Path.of("../examples/web-chat/index.html");
    static List<HttpServer> pages;

    static synchronized void servePages() throws IOException {
        if (pages != null) {
            return;
        }
        byte[] html = Files.readAllBytes(PAGE);
        pages = new java.util.ArrayList<>();
        for (int port : new int[] {WithPages.PAGE, WithPages.OTHER}) {
            HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 0);
            server.createContext("/", exchange -> {
                exchange.getResponseHeaders().add("Content-Type", "text/html; charset=utf-8");
                exchange.sendResponseHeaders(200, html.length);
                exchange.getResponseBody().write(html);
                exchange.close();
            });
            server.start();
            pages.add(server);
        }
    }

    @AfterAll
    static void stopPages() {
        if (pages != null) {
            pages.forEach(s -> s.stop(0));
        }
    }

    ChromeDriver browser() {
        boolean installed = Files.isExecutable(CHROMIUM) && Files.isExecutable(CHROMEDRIVER);
        if (!installed && "true".equals(System.getenv("CI"))) {
            Assertions.fail("CI must test web clients in a real browser: apt install chromium chromium-driver (README's prerequisites)");
        }
        Assumptions.assumeTrue(installed, "needs Debian's chromium and chromium-driver (README's prerequisites)");
        ChromeOptions options = new ChromeOptions().setBinary(CHROMIUM.toFile())
                .addArguments("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,800");
        return new ChromeDriver(new ChromeDriverService.Builder().usingDriverExecutable(CHROMEDRIVER.toFile()).build(), options);
    }

    /** Opens the example page on {@code port} with the gateway and a key or token filled in, and presses Send. */
    void send(ChromeDriver browser, int port, String keyOrToken) {
        String base = gateway.toString().replaceAll("/$", "");
        browser.get("http://127.0.0.1:" + port + "/#base=" + URLEncoder.encode(base, StandardCharsets.UTF_8) + "&key=" + keyOrToken);
        browser.findElement(By.id("send")).click();
    }

    static String status(ChromeDriver browser) {
        return browser.findElement(By.id("status")).getText();
    }

    static void screenshot(ChromeDriver browser, String name) throws IOException {
        Path shot = browser.getScreenshotAs(OutputType.FILE).toPath();
        Files.copy(shot, Path.of("target", "web-client-" + name + ".png"), StandardCopyOption.REPLACE_EXISTING);
    }

    @Test
    void theExamplePageStreamsFromAnotherOriginWithAKeyAndWithABrowserToken() throws Exception {
        servePages();
        ChromeDriver browser = browser();
        try {
            WebDriverWait wait = new WebDriverWait(browser, Duration.ofSeconds(20));
            EngineTwin.answerTokens = 12;
            EngineTwin.delayMillis = 40;
            String key = Accounts.create(pool, "1", null);
            send(browser, WithPages.PAGE, key);
            wait.until(b -> status(browser).equals("done") || status(browser).startsWith("error"));
            assertEquals("done", status(browser), "the stream ends on [DONE]");
            assertEquals("12", browser.findElement(By.id("answer")).getDomAttribute("data-chunks"), "the text arrived chunk by chunk");
            List<JsonObject> billed = events(accountIdOf(key));
            String cost = billed.getFirst().getString("cost");
            assertTrue(browser.findElement(By.id("cost")).getText().startsWith("cost " + cost + " "), "the usage chunk's cost is the ledger's: "
                    + browser.findElement(By.id("cost")).getText() + " vs " + cost);
            screenshot(browser, "key");

            String token = mint(key, ask(WithPages.PAGE_ORIGIN)).then().statusCode(200).extract().path("client_token");
            send(browser, WithPages.PAGE, token);
            wait.until(b -> status(browser).equals("done") || status(browser).startsWith("error"));
            assertEquals("done", status(browser));
            assertEquals(2, events(accountIdOf(key)).size());
            screenshot(browser, "token");

            // the same page on an origin not allowed: the browser refuses (no CORS headers), and nothing is served
            send(browser, WithPages.OTHER, key);
            wait.until(b -> status(browser).startsWith("error"));
            assertTrue(status(browser).contains("Failed to fetch"), status(browser));
            assertEquals("0", browser.findElement(By.id("answer")).getDomAttribute("data-chunks"));
            assertEquals(2, events(accountIdOf(key)).size(), "nothing generated for the refused origin");
            screenshot(browser, "refused");
        } finally {
            browser.quit();
        }
    }

    @Test
    void stoppingMidStreamCancelsGenerationAndChargesExactlyWhatReachedThePage() throws Exception {
        servePages();
        ChromeDriver browser = browser();
        try {
            EngineTwin.answerTokens = 200;
            EngineTwin.delayMillis = 400;
            String key = Accounts.create(pool, "1", null);
            send(browser, WithPages.PAGE, key);
            new WebDriverWait(browser, Duration.ofSeconds(20), Duration.ofMillis(20))
                    .until(b -> Integer.parseInt(b.findElement(By.id("answer")).getDomAttribute("data-chunks")) >= 3);
            browser.findElement(By.id("stop")).click();
            new WebDriverWait(browser, Duration.ofSeconds(10)).until(b -> status(browser).startsWith("stopped"));
            int reached = Integer.parseInt(browser.findElement(By.id("answer")).getDomAttribute("data-chunks"));
            screenshot(browser, "stopped");
            await().atMost(Duration.ofSeconds(10)).until(() -> !events(accountIdOf(key)).isEmpty());
            JsonObject event = events(accountIdOf(key)).getFirst();
            assertEquals(reached, event.getInteger("completion_tokens"), "charged exactly the tokens that reached the page: " + event.encode());
            assertTrue(event.getBoolean("client_disconnected"), event.encode());
            int made = EngineTwin.generated.get(event.getString("request_id")).get();
            assertTrue(made < 20, "generation stopped soon after the page did (" + made + " tokens made)");
        } finally {
            browser.quit();
        }
    }
}
