-- Browser tokens: short-lived keys a backend mints with its own key (POST /v1/client_tokens) for a web page. Each is
-- an api_keys row of its own — its spend ceiling is its spend_cap, so it is reserved and settled like any capped
-- key, and its usage is in the ledger under its own id — bound to the origins that may use it, a per-request
-- max_tokens and an expiry, and tied to the key that minted it: revoking or deleting that key revokes or deletes it.
ALTER TABLE api_keys
    ADD COLUMN parent_key_id text REFERENCES api_keys (id) ON DELETE CASCADE,
    ADD COLUMN expires_at    timestamptz,
    ADD COLUMN origins       text[],
    ADD COLUMN max_tokens    integer CHECK (max_tokens > 0),
    ADD CONSTRAINT browser_token_bound CHECK (parent_key_id IS NULL
        OR (expires_at IS NOT NULL AND origins IS NOT NULL AND spend_cap IS NOT NULL));
CREATE INDEX api_keys_parent ON api_keys (parent_key_id, expires_at) WHERE parent_key_id IS NOT NULL;

-- A key revoked takes its live browser tokens with it (each change is announced, so gateways drop them from their
-- caches; expired ones are refused anyway and left as they are).
CREATE FUNCTION api_key_revoke_tokens() RETURNS trigger AS $$
BEGIN
    UPDATE billing.api_keys SET revoked_at = NEW.revoked_at WHERE parent_key_id = NEW.id AND revoked_at IS NULL AND expires_at > now();
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_keys_revoke_tokens AFTER UPDATE OF revoked_at ON api_keys
    FOR EACH ROW WHEN (NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL) EXECUTE FUNCTION api_key_revoke_tokens();
