-- Orders per partner and month, kept by the transaction that records them: the partner's limit
-- of orders a month is checked against this row (locked to the commit), never by counting.
CREATE TABLE order_counts (
    partner_id  VARCHAR(64)     NOT NULL,
    order_month INT             NOT NULL,
    orders      BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (partner_id, order_month)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT INTO order_counts (partner_id, order_month, orders)
SELECT partner_id, order_month, COUNT(*) FROM orders GROUP BY partner_id, order_month;
