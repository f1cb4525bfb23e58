-- Per-partner limits an operator set (fcfs-admin limits set); NULL keeps the default in code.
CREATE TABLE partner_limits (
    partner_id        VARCHAR(64)     NOT NULL,
    live_campaigns    INT UNSIGNED    NULL,
    orders_per_month  BIGINT UNSIGNED NULL,
    updated_at        DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (partner_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A campaign create counts the partner's live campaigns (issue window not ended) under a lock:
-- this index keeps that count, and its locks, to the partner's live campaigns.
CREATE INDEX idx_campaigns_partner_live ON campaigns (partner_id, issue_ends_at);
