-- Reservations the writer refused (the campaign was full, or the message named a partner that does
-- not own the campaign): kept with their reason, never dropped, so every accepted request has an
-- answer (`REJECTED`) and reconcile can account for every place Redis handed out.
CREATE TABLE coupon_rejections (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    campaign_id BIGINT UNSIGNED NOT NULL,
    partner_id  VARCHAR(64)     NOT NULL,
    user_id     VARCHAR(64)     NOT NULL,
    request_id  CHAR(36)        NOT NULL,
    issue_rank  INT UNSIGNED    NOT NULL,
    reserved_at DATETIME(3)     NOT NULL,
    reason      VARCHAR(32)     NOT NULL,
    rejected_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    -- One answer per user and campaign; a redelivered rejection is written once. Also the status lookup.
    UNIQUE KEY uq_rejections_campaign_user (campaign_id, user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Rejections recorded for the campaign, kept beside issued_count under the same row lock.
ALTER TABLE campaigns ADD COLUMN rejected_count INT UNSIGNED NOT NULL DEFAULT 0 AFTER issued_count;
