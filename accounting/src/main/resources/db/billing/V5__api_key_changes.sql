-- Gateways cache verified API keys and drop an entry the moment its row changes (revoked, limits or models
-- edited, deleted): every change is announced on the deepserve_api_keys channel with the key's id.
CREATE FUNCTION api_key_changed() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('deepserve_api_keys', OLD.id);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER api_keys_changed AFTER UPDATE OF account_id, secret_sha256, models, rpm, tpm, spend_cap, revoked_at ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_key_changed();
CREATE TRIGGER api_keys_deleted AFTER DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_key_changed();
