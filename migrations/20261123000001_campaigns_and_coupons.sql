-- Runs on MariaDB 10.11 and MySQL 8 / Aurora MySQL 3 alike.
-- Hot tables carry no foreign keys: they would add lock traffic to every insert.

CREATE TABLE campaigns (
    id                BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    partner_id        VARCHAR(64)     NOT NULL,
    name              VARCHAR(200)    NOT NULL,
    total_quantity    INT UNSIGNED    NOT NULL,
    -- Coupon rows written so far; the writer adds once per campaign per chunk, never per row.
    issued_count      INT UNSIGNED    NOT NULL DEFAULT 0,
    issue_starts_at   DATETIME(3)     NOT NULL,
    issue_ends_at     DATETIME(3)     NOT NULL,
    coupon_expires_at DATETIME(3)     NOT NULL,
    discount_type     VARCHAR(16)     NOT NULL,
    discount_value    BIGINT UNSIGNED NOT NULL,
    created_at        DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    KEY idx_campaigns_partner (partner_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE coupons (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    campaign_id  BIGINT UNSIGNED NOT NULL,
    partner_id   VARCHAR(64)     NOT NULL,
    user_id      VARCHAR(64)     NOT NULL,
    status       VARCHAR(16)     NOT NULL DEFAULT 'ISSUED',
    issue_rank   INT UNSIGNED    NOT NULL,
    request_id   CHAR(36)        NOT NULL,
    issued_at    DATETIME(3)     NOT NULL,
    expires_at   DATETIME(3)     NOT NULL,
    PRIMARY KEY (id),
    -- The last line of defence against a second coupon for one user, and the status lookup.
    UNIQUE KEY uq_coupons_campaign_user (campaign_id, user_id),
    KEY idx_coupons_partner_user (partner_id, user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
