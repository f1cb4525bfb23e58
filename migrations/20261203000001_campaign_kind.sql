-- What a campaign is for: SALE (issued first-come-first-served through Redis) or REWARD (granted
-- only by grading policies, never on sale). Existing campaigns were all on sale.
ALTER TABLE campaigns ADD COLUMN kind VARCHAR(8) NOT NULL DEFAULT 'SALE' AFTER partner_id;
