-- Points (issue 14): a wallet per (partner, user); points arrive in lots, each with its own expiry,
-- and are spent first-expiring-first. Every movement is an append-only point_transactions row;
-- point_allocations says which lots a USE or TRANSFER_OUT drew from, so a cancel puts back exactly
-- those. Invariant (fcfs-admin points verify): balance = Σ remaining of the wallet's lots =
-- Σ amount of its transactions. No foreign keys: the wallet row is hot.

CREATE TABLE point_wallets (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    partner_id VARCHAR(64)     NOT NULL,
    user_id    VARCHAR(64)     NOT NULL,
    -- Σ remaining of the wallet's lots, including lots past their time the sweep has not reached
    -- (readers subtract those; every write expires them first).
    balance    BIGINT UNSIGNED NOT NULL DEFAULT 0,
    updated_at DATETIME(3)     NOT NULL,
    PRIMARY KEY (id),
    -- The one global lock order: a transfer locks both wallets ascending by this key.
    UNIQUE KEY uq_point_wallets_owner (partner_id, user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE point_lots (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    wallet_id      BIGINT UNSIGNED NOT NULL,
    -- The EARN or TRANSFER_IN that brought it.
    transaction_id BIGINT UNSIGNED NOT NULL,
    amount         BIGINT UNSIGNED NOT NULL,
    remaining      BIGINT UNSIGNED NOT NULL,
    -- What expired of it (by the sweep, a write, or a cancel after its time).
    expired        BIGINT UNSIGNED NOT NULL DEFAULT 0,
    expires_at     DATETIME(3)     NOT NULL,
    created_at     DATETIME(3)     NOT NULL,
    -- The expiry sweep's index holds only lots with something left to expire.
    due_at         DATETIME(3) AS (IF(remaining > 0, expires_at, NULL)) STORED,
    PRIMARY KEY (id),
    -- A wallet's spendable lots, first-expiring-first.
    KEY idx_point_lots_wallet (wallet_id, expires_at, id),
    KEY idx_point_lots_due (due_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE point_transactions (
    id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    wallet_id    BIGINT UNSIGNED NOT NULL,
    partner_id   VARCHAR(64)     NOT NULL,
    user_id      VARCHAR(64)     NOT NULL,
    -- EARN, USE, USE_CANCEL, EXPIRE, TRANSFER_OUT, TRANSFER_IN
    kind         VARCHAR(16)     NOT NULL,
    -- The change to the balance: negative for USE, EXPIRE and TRANSFER_OUT.
    amount       BIGINT          NOT NULL,
    balance_after BIGINT UNSIGNED NOT NULL,
    reason       VARCHAR(255)    NULL,
    order_id     VARCHAR(128)    NULL,
    -- USE_CANCEL: the USE; TRANSFER_IN: the TRANSFER_OUT and back; EXPIRE: NULL.
    related_id   BIGINT UNSIGNED NULL,
    -- EXPIRE: the lot that expired.
    lot_id       BIGINT UNSIGNED NULL,
    -- USE: its USE_CANCEL, once cancelled.
    cancelled_by BIGINT UNSIGNED NULL,
    created_at   DATETIME(3)     NOT NULL,
    PRIMARY KEY (id),
    -- A wallet's history, newest first, keyset-paginated by id.
    KEY idx_point_transactions_wallet (wallet_id, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE point_allocations (
    transaction_id BIGINT UNSIGNED NOT NULL,
    lot_id         BIGINT UNSIGNED NOT NULL,
    amount         BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (transaction_id, lot_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- A partner's default validity of earned points, when it is not the functions' default.
CREATE TABLE point_policies (
    partner_id    VARCHAR(64) NOT NULL,
    validity_days INT UNSIGNED NOT NULL,
    PRIMARY KEY (partner_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Idempotency-Key records, committed in the same transaction as the effect they answer for; a
-- repeat runs into the primary key at its own commit, rolls its effect back and replays the record.
CREATE TABLE idempotency_keys (
    partner_id        VARCHAR(64)     NOT NULL,
    idempotency_key   VARCHAR(128)    NOT NULL,
    -- SHA-256 of the operation and its parameters: the same key with another request is refused.
    request_hash      CHAR(64)        NOT NULL,
    -- The answer: a receipt (transaction_id, balance, and a transfer's receiving side) or a refusal.
    transaction_id    BIGINT UNSIGNED NULL,
    balance           BIGINT UNSIGNED NULL,
    to_transaction_id BIGINT UNSIGNED NULL,
    to_balance        BIGINT UNSIGNED NULL,
    refusal           VARCHAR(32)     NULL,
    created_at        DATETIME(3)     NOT NULL,
    PRIMARY KEY (partner_id, idempotency_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
