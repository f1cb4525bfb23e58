-- A partner may pause a campaign: no new places while set (the issue script reads it from the
-- campaign's rules in Redis; this column is what they are primed and healed from).
ALTER TABLE campaigns ADD COLUMN paused TINYINT(1) NOT NULL DEFAULT 0;
