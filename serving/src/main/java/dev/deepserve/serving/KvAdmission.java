package dev.deepserve.serving;

/**
 * How admission spends KV blocks. {@code ON_DEMAND} (vLLM's way): a request is admitted when its context fits now;
 * sequences take blocks as they grow, and when a step would run out, the most recently admitted sequences are
 * preempted — their blocks freed, later recomputed from prompt + generated tokens (bit-identical, nothing is sent
 * twice). More sequences run at once when most stop well before max_tokens. {@code RESERVE}: blocks for prompt +
 * max_tokens are promised at admission, so nothing is ever preempted, at the price of fewer sequences at once.
 */
public enum KvAdmission { ON_DEMAND, RESERVE }
