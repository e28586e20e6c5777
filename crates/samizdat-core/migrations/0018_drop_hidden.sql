-- `hidden` said what `kind = 'self'` says since 0017: the self group is the only hidden
-- conversation. One source of truth: the column goes.
ALTER TABLE conversations DROP COLUMN hidden;
