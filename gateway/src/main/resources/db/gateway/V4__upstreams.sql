-- Upstream providers added at runtime through the admin API (those from DEEPSERVE_UPSTREAMS live in config).
-- The API key is never stored: only the name of the env var that holds it on the gateway hosts.
CREATE TABLE upstreams (
    name         text        PRIMARY KEY,
    base_url     text        NOT NULL,
    api_key_env  text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
