-- Monthly grading (issue 16): partners' orders, grading policies, runs with their step log, the
-- grades and the rewards they granted. No foreign keys (hot tables; the application keeps them).

CREATE TABLE orders (
    partner_id  VARCHAR(64)       NOT NULL,
    order_id    VARCHAR(64)       NOT NULL,
    user_id     VARCHAR(64)       NOT NULL,
    amount      BIGINT UNSIGNED   NOT NULL,
    status      VARCHAR(10)       NOT NULL,
    ordered_at  DATETIME(3)       NOT NULL,
    -- YYYYMM of ordered_at (UTC) and the user's bucket (FNV-1a of the id mod 1024, computed by
    -- the application: grading::domain::user_bucket), so a partition of a month is one range of
    -- the covering index below and the aggregate reads nothing else.
    order_month INT               NOT NULL,
    user_bucket SMALLINT UNSIGNED NOT NULL,
    PRIMARY KEY (partner_id, order_id),
    KEY idx_orders_grading (partner_id, order_month, user_bucket, user_id, status, amount)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE grading_policies (
    partner_id VARCHAR(64) NOT NULL,
    policy     TEXT        NOT NULL,
    updated_at DATETIME(3) NOT NULL,
    PRIMARY KEY (partner_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE grading_runs (
    id               BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    partner_id       VARCHAR(64)     NOT NULL,
    month            INT             NOT NULL,
    status           VARCHAR(10)     NOT NULL,
    partitions_total INT UNSIGNED    NOT NULL,
    partitions_done  INT UNSIGNED    NOT NULL DEFAULT 0,
    users_graded     BIGINT UNSIGNED NOT NULL DEFAULT 0,
    rewards_granted  BIGINT UNSIGNED NOT NULL DEFAULT 0,
    -- The policy as it was when the run started: a policy changed mid-run does not mix grades.
    policy           TEXT            NOT NULL,
    -- Every partition's message was sent; a run without it is dispatched again when asked for.
    dispatched       TINYINT         NOT NULL DEFAULT 0,
    started_at       DATETIME(3)     NOT NULL,
    finished_at      DATETIME(3)     NULL,
    PRIMARY KEY (id),
    -- One run per partner and month, whoever asks first.
    UNIQUE KEY uq_grading_runs_month (partner_id, month),
    KEY idx_grading_runs_done (partner_id, status, month)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- The step log: one row per partition of a run, done with the partition's last chunk.
CREATE TABLE grading_steps (
    run_id          BIGINT UNSIGNED NOT NULL,
    partition_no    INT UNSIGNED    NOT NULL,
    users_graded    BIGINT UNSIGNED NOT NULL DEFAULT 0,
    rewards_granted BIGINT UNSIGNED NOT NULL DEFAULT 0,
    done_at         DATETIME(3)     NULL,
    PRIMARY KEY (run_id, partition_no)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE user_grades (
    partner_id  VARCHAR(64)     NOT NULL,
    month       INT             NOT NULL,
    user_id     VARCHAR(64)     NOT NULL,
    -- NULL: paid orders below every tier.
    grade       VARCHAR(32)     NULL,
    paid_amount BIGINT UNSIGNED NOT NULL,
    run_id      BIGINT UNSIGNED NOT NULL,
    graded_at   DATETIME(3)     NOT NULL,
    PRIMARY KEY (partner_id, month, user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per user, month and kind of reward: the unique key that makes a grant happen once.
CREATE TABLE grade_rewards (
    partner_id   VARCHAR(64)     NOT NULL,
    month        INT             NOT NULL,
    user_id      VARCHAR(64)     NOT NULL,
    kind         VARCHAR(8)      NOT NULL,
    grade        VARCHAR(32)     NOT NULL,
    -- COUPON: the campaign; POINTS: the EARN entry (point_transactions.id).
    reference_id BIGINT UNSIGNED NULL,
    points       BIGINT UNSIGNED NULL,
    -- GRANTED, ALREADY_HELD (the user had the campaign's coupon), SOLD_OUT, NO_CAMPAIGN.
    outcome      VARCHAR(16)     NOT NULL,
    granted_at   DATETIME(3)     NOT NULL,
    PRIMARY KEY (partner_id, month, user_id, kind)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
