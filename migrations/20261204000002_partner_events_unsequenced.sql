-- The sequencer's read (`WHERE sequence IS NULL ORDER BY id LIMIT n`) through the UNIQUE key on
-- `sequence` sorted every unsequenced row for each batch: a unique key's entries are not known to
-- be in primary-key order, so the optimizer filesorts, and a backlog of 250,000 events took a
-- second per 1,000 sequenced. A plain key on (sequence, id) hands the NULLs out in id order; the
-- unique key stays as the guard that no sequence is given twice.
ALTER TABLE partner_events ADD KEY idx_partner_events_unsequenced (sequence, id);
