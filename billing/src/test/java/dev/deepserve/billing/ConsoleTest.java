package dev.deepserve.billing;

import dev.deepserve.embedded.EmbeddedKafkaResource;
import dev.deepserve.embedded.EmbeddedPostgresResource;
import io.quarkus.test.common.QuarkusTestResource;
import io.quarkus.test.common.http.TestHTTPResource;
import io.quarkus.test.junit.QuarkusTest;
import io.quarkus.test.junit.TestProfile;
import jakarta.inject.Inject;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.openqa.selenium.By;
import org.openqa.selenium.OutputType;
import org.openqa.selenium.TakesScreenshot;
import org.openqa.selenium.WebElement;
import org.openqa.selenium.chrome.ChromeDriver;
import org.openqa.selenium.chrome.ChromeDriverService;
import org.openqa.selenium.chrome.ChromeOptions;
import org.openqa.selenium.support.ui.ExpectedConditions;
import org.openqa.selenium.support.ui.Select;
import org.openqa.selenium.support.ui.WebDriverWait;

import java.io.File;
import java.net.URL;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.UUID;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * The admin console in a real headless Chromium: sign in with the admin key, create an account and fund it, create a
 * key (its secret shown once), see a completed request appear in the usage table and the charts. Screenshots of each
 * page go to target/console-*.png.
 */
@QuarkusTest
@QuarkusTestResource(EmbeddedPostgresResource.class)
@QuarkusTestResource(EmbeddedKafkaResource.class)
@TestProfile(AdminApiTest.WithAdminKey.class)
class ConsoleTest {

    static final Path CHROMIUM = Path.of("/usr/bin/chromium");
    static final Path CHROMEDRIVER = Path.of("/usr/bin/chromedriver");

    @TestHTTPResource("/console/")
    URL console;


    ChromeDriver browser;
    WebDriverWait wait;

    @BeforeEach
    void open() {
        boolean installed = Files.isExecutable(CHROMIUM) && Files.isExecutable(CHROMEDRIVER);
        if (!installed && "true".equals(System.getenv("CI"))) {
            Assertions.fail("CI must test the console in a real browser: apt install chromium chromium-driver (README's prerequisites)");
        }
        Assumptions.assumeTrue(installed, "needs Debian's chromium and chromium-driver (README's prerequisites)");
        ChromeOptions options = new ChromeOptions().setBinary(CHROMIUM.toFile())
                .addArguments("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1360,1000");
        browser = new ChromeDriver(new ChromeDriverService.Builder().usingDriverExecutable(CHROMEDRIVER.toFile()).build(), options);
        wait = new WebDriverWait(browser, Duration.ofSeconds(20));
        wait.ignoring(org.openqa.selenium.StaleElementReferenceException.class);
    }

    @AfterEach
    void close() {
        if (browser != null) {
            browser.quit();
        }
    }

    void shot(String name) throws Exception {
        File f = ((TakesScreenshot) browser).getScreenshotAs(OutputType.FILE);
        Files.copy(f.toPath(), Path.of("target", "console-" + name + ".png"), StandardCopyOption.REPLACE_EXISTING);
    }

    WebElement visible(String css) {
        return wait.until(ExpectedConditions.visibilityOfElementLocated(By.cssSelector(css)));
    }

    void go(String page) {
        browser.findElement(By.cssSelector("nav a[data-page='" + page + "']")).click();
    }

    @Test
    void signInCreateAKeyAndSeeARequestInTheUsageTableAndChart() throws Exception {
        browser.get(console.toString());
        visible("#admin-key").sendKeys("wrong-key");
        browser.findElement(By.id("sign-in")).click();
        wait.until(ExpectedConditions.textToBePresentInElementLocated(By.id("login-error"), "not accepted"));
        shot("login");
        browser.findElement(By.id("admin-key")).clear();
        browser.findElement(By.id("admin-key")).sendKeys(AdminApiTest.ADMIN);
        browser.findElement(By.id("sign-in")).click();
        visible("#stat-spend");

        go("balances");
        String name = "acme-" + UUID.randomUUID().toString().substring(0, 6);
        visible("#account-name").sendKeys(name);
        browser.findElement(By.id("account-create")).click();
        WebElement row = wait.until(ExpectedConditions.visibilityOfElementLocated(By.xpath("//table[@id='accounts']//tr[td[1][text()='" + name + "']]")));
        String accountId = row.getAttribute("data-account");
        new Select(browser.findElement(By.id("credit-account"))).selectByValue(accountId);
        browser.findElement(By.id("credit-amount")).sendKeys("10.00");
        browser.findElement(By.id("credit-submit")).click();
        wait.until(ExpectedConditions.textToBePresentInElementLocated(By.cssSelector("tr[data-account='" + accountId + "'] td:nth-child(3)"), "10.00000000"));
        shot("balances");

        go("keys");
        new Select(visible("#keys-account")).selectByValue(accountId);
        visible("#key-name").sendKeys("web");
        browser.findElement(By.id("key-cap")).sendKeys("2.50");
        browser.findElement(By.id("create-key")).click();
        String secret = visible("#secret-value").getText();
        assertTrue(secret.matches("sk-[0-9a-f]{64}"), secret);
        WebElement keyRow = visible("tr[data-key]");
        String keyId = keyRow.getAttribute("data-key");
        assertTrue(!browser.findElement(By.id("keys-list")).getText().contains(secret.substring(11)), "the list never shows the secret");
        assertEquals("$0.00 of $2.50", keyRow.findElement(By.cssSelector("td.cap")).getText().strip(), "spend against the key's cap");
        shot("keys");

        // a completed request on that key arrives from the gateway
        String cost = "0.00001234";
        TestUsage.send("""
                {"event_id":"%s","request_id":"chatcmpl-console","account_id":"%s","api_key_id":"%s","model":"deepseek-chat",
                 "prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":12,"completion_tokens":9,"cost":"%s","currency":"USD",
                 "finish_reason":"stop","completed_at":"%s"}""".formatted(UUID.randomUUID(), accountId, keyId, cost,
                OffsetDateTime.now(ZoneOffset.UTC).minusMinutes(1)));

        // and one that can never be applied (a NUL in its model): set aside, shown, not lost
        UUID poison = UUID.randomUUID();
        TestUsage.send("""
                {"event_id":"%s","request_id":"chatcmpl-poison","account_id":"%s","api_key_id":"%s","model":"ds/a\\u0000b",
                 "prompt_cache_hit_tokens":0,"prompt_cache_miss_tokens":1,"completion_tokens":1,"cost":"0.00000100","currency":"USD",
                 "finish_reason":"stop","completed_at":"%s"}""".formatted(poison, accountId, keyId, OffsetDateTime.now(ZoneOffset.UTC)));

        go("usage");
        new Select(visible("#usage-account")).selectByValue(accountId);
        wait.until(d -> {
            d.findElement(By.id("usage-apply")).click();
            return d.findElements(By.id("usage-total-cost")).stream().anyMatch(e -> e.getText().equals(cost));
        });
        String table = browser.findElement(By.id("usage-table")).getText();
        assertTrue(table.contains(keyId) && table.contains("deepseek-chat") && table.contains("9"), table);
        wait.until(d -> {
            d.findElement(By.id("usage-apply")).click();
            return d.findElements(By.cssSelector("#dead-letters td code")).stream().anyMatch(e -> e.getText().equals(poison.toString()));
        });
        assertTrue(browser.findElement(By.id("dead-letters")).getText().contains("model contains a control character"));
        shot("usage");

        go("overview");
        visible("#spend-chart svg rect.bar");
        assertTrue(browser.findElements(By.cssSelector("#token-chart svg rect.bar")).size() >= 1);
        assertEquals(false, browser.findElement(By.id("stat-requests")).getText().endsWith(" 0"));
        shot("overview");
    }
}
