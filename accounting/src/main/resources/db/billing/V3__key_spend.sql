-- Per-key spend for spend caps, kept by the gateway: `reserved` is set aside for the key's requests in flight,
-- `spent` is what its settled requests cost. A request may only reserve what the cap leaves: spend_cap - spent - reserved.
ALTER TABLE api_keys
    ADD COLUMN spent    numeric(30,8) NOT NULL DEFAULT 0 CHECK (spent >= 0),
    ADD COLUMN reserved numeric(30,8) NOT NULL DEFAULT 0 CHECK (reserved >= 0);
