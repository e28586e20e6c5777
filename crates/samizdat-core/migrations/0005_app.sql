-- Version 5: what the app shows.
--
-- A contact whose safety number the user compared and marked as verified.
ALTER TABLE contacts ADD COLUMN verified INTEGER NOT NULL DEFAULT 0;

