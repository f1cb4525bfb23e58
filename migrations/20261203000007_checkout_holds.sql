-- Checkout holds: a coupon and points held for an order while it is paid, then confirmed (the
-- coupon USED, the points' USE kept) or released (both back). Each context keeps its own part:
-- checkout_holds (the checkout context), the coupon's hold columns (coupons), point_holds (points).

CREATE TABLE checkout_holds (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    partner_id   VARCHAR(64)     NOT NULL,
    user_id      VARCHAR(64)     NOT NULL,
    order_id     VARCHAR(128)    NOT NULL,
    -- SHA-256 of the request as asked: the same order again with another request is refused.
    request_hash CHAR(64)        NOT NULL,
    order_amount BIGINT UNSIGNED NOT NULL,
    coupon_id    BIGINT UNSIGNED NULL,
    discount     BIGINT UNSIGNED NOT NULL,
    points       BIGINT UNSIGNED NOT NULL,
    -- The points' USE entry while held (and after a confirm).
    points_transaction_id BIGINT UNSIGNED NULL,
    -- PENDING, CONFIRMED, RELEASED or EXPIRED; a PENDING hold past expires_at reads EXPIRED.
    status       VARCHAR(16)     NOT NULL,
    expires_at   DATETIME(3)     NOT NULL,
    created_at   DATETIME(3)     NOT NULL,
    settled_at   DATETIME(3)     NULL,
    -- One live hold per order: a released or expired one no longer names it, so the order can
    -- be held again (a payment retried after a failure).
    live_order_id VARCHAR(128) AS (IF(status IN ('PENDING', 'CONFIRMED'), order_id, NULL)) STORED,
    PRIMARY KEY (id),
    UNIQUE KEY uq_checkout_holds_live_order (partner_id, live_order_id),
    -- A retried hold finds the order's latest hold, live or not.
    KEY idx_checkout_holds_order (partner_id, order_id, id),
    -- The sweep: PENDING holds past their time, oldest first.
    KEY idx_checkout_holds_due (status, expires_at, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A coupon held by a hold: every read treats it as HELD until held_until, ISSUED after.
ALTER TABLE coupons
    ADD COLUMN hold_id       BIGINT UNSIGNED NULL,
    ADD COLUMN held_order_id VARCHAR(128)    NULL,
    ADD COLUMN held_amount   BIGINT UNSIGNED NULL,
    ADD COLUMN held_until    DATETIME(3)     NULL;

-- Points held: the hold's USE entry, until it is confirmed (the row goes, the USE stays) or
-- released (cancelled, as a use's cancel is). A row past expires_at is released by the next write
-- of its wallet or by the sweep; readers count it released at once.
CREATE TABLE point_holds (
    transaction_id BIGINT UNSIGNED NOT NULL,
    wallet_id      BIGINT UNSIGNED NOT NULL,
    amount         BIGINT UNSIGNED NOT NULL,
    expires_at     DATETIME(3)     NOT NULL,
    PRIMARY KEY (transaction_id),
    KEY idx_point_holds_wallet (wallet_id, expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
