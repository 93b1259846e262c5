package dev.deepserve.billing.messaging;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonProperty;

import java.math.BigDecimal;
import java.time.OffsetDateTime;
import java.util.UUID;

/**
 * The usage event the gateway publishes for every request, as it arrives on the {@code usage} topic.
 * Token counts are integers and cost is a decimal string, never a float.
 */
@JsonIgnoreProperties(ignoreUnknown = true)
public record UsageEvent(
        @JsonProperty(value = "event_id", required = true) UUID eventId,
        @JsonProperty(value = "request_id", required = true) String requestId,
        @JsonProperty(value = "account_id", required = true) String accountId,
        @JsonProperty("api_key_id") String apiKeyId,
        @JsonProperty(value = "model", required = true) String model,
        @JsonProperty(value = "prompt_cache_hit_tokens", required = true) int promptCacheHitTokens,
        @JsonProperty(value = "prompt_cache_miss_tokens", required = true) int promptCacheMissTokens,
        @JsonProperty(value = "completion_tokens", required = true) int completionTokens,
        @JsonProperty(value = "cost", required = true) BigDecimal cost,
        @JsonProperty(value = "currency", required = true) String currency,
        @JsonProperty("finish_reason") String finishReason,
        @JsonProperty(value = "completed_at", required = true) OffsetDateTime completedAt) {
}
