-- Idempotency-Key records are kept for a retention period (points::domain::KEY_RETENTION_DAYS)
-- and then pruned by the points expiry sweep, oldest first: this index finds them.
CREATE INDEX idx_idempotency_keys_created ON idempotency_keys (created_at);

-- The records of a partner's point writes, counted per UTC day over a few shard rows (the key's
-- hash picks one), by the transaction that inserts the record: the partner's limit of records
-- kept at once is checked against the sum of the days still kept, never by counting the records.
-- Grading's grants keep records too; they are not counted (a partner's monthly grading must not
-- fail on its own requests' limit).
CREATE TABLE idempotency_counts (
    partner_id  VARCHAR(64)      NOT NULL,
    day         DATE             NOT NULL,
    shard       TINYINT UNSIGNED NOT NULL,
    records     BIGINT UNSIGNED  NOT NULL,
    PRIMARY KEY (partner_id, day, shard),
    -- The sweep deletes the days past retention by this index, locking only those rows.
    KEY idx_idempotency_counts_day (day)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT INTO idempotency_counts (partner_id, day, shard, records)
SELECT partner_id, DATE(created_at), 0, COUNT(*) FROM idempotency_keys
WHERE idempotency_key NOT LIKE 'grading-%' GROUP BY partner_id, DATE(created_at);

ALTER TABLE partner_limits ADD COLUMN idempotency_records BIGINT UNSIGNED NULL AFTER orders_per_month;
