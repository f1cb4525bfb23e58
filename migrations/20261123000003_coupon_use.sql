-- Coupon use (issue 13): a coupon is spent by one order under a row lock, given back on cancel,
-- and retired when it expires. Every use and cancel is kept in coupon_history.

ALTER TABLE coupons
    ADD COLUMN used_at         DATETIME(3)     NULL,
    ADD COLUMN order_id        VARCHAR(128)    NULL,
    ADD COLUMN order_amount    BIGINT UNSIGNED NULL,
    ADD COLUMN discount_amount BIGINT UNSIGNED NULL,
    -- A user's coupons, newest first, keyset-paginated (partner, user, issued_at, id).
    ADD KEY idx_coupons_user_newest (partner_id, user_id, issued_at, id),
    -- The expiry sweep: ISSUED rows past their time, oldest first.
    ADD KEY idx_coupons_expiry (status, expires_at, id),
    -- Superseded by idx_coupons_user_newest, whose prefix it is.
    DROP KEY idx_coupons_partner_user;

-- Append-only; no foreign key (the coupon row is hot while it is used).
CREATE TABLE coupon_history (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    coupon_id       BIGINT UNSIGNED NOT NULL,
    partner_id      VARCHAR(64)     NOT NULL,
    user_id         VARCHAR(64)     NOT NULL,
    action          VARCHAR(16)     NOT NULL,
    order_id        VARCHAR(128)    NOT NULL,
    order_amount    BIGINT UNSIGNED NULL,
    discount_amount BIGINT UNSIGNED NULL,
    at              DATETIME(3)     NOT NULL,
    PRIMARY KEY (id),
    KEY idx_history_coupon (coupon_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
