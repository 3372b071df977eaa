-- Where an entry's record is in the record segments of a local store
-- (segment number << 32 | offset); 0 for a record kept as its own object.
ALTER TABLE entries ADD COLUMN record BIGINT NOT NULL DEFAULT 0;
