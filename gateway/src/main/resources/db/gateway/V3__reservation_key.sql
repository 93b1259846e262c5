-- Which key a reservation was made for, so the sweeper can release a key's share of a spend cap too.
ALTER TABLE reservations ADD COLUMN api_key_id text;
