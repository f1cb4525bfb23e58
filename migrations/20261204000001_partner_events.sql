-- Partner events (a transactional outbox): each effect's transaction records its events here, so
-- an effect never commits without them and they never exist without it. The relay gives each
-- committed event the next `sequence` in the order it sees them committed (an AUTO_INCREMENT id
-- is taken at insert, not at commit, so ids alone could be passed by a later-committing lower id).

CREATE TABLE partner_events (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    partner_id  VARCHAR(64)     NOT NULL,
    type        VARCHAR(32)     NOT NULL,
    -- What the event is about (a coupon id, a user), for operators' queries.
    subject     VARCHAR(160)    NOT NULL,
    -- Events that happen once per subject (an issue, a rejection): a repeated effect (a
    -- redelivered message) records no second event. NULL for the others.
    once_key    VARCHAR(160)    NULL,
    occurred_at DATETIME(3)     NOT NULL,
    data        JSON            NOT NULL,
    -- Given by the relay; NULL until then.
    sequence    BIGINT UNSIGNED NULL,
    PRIMARY KEY (id),
    UNIQUE KEY uq_partner_events_once (once_key),
    -- The relay's feed (NULL first: the rows still to sequence, in id order) and EventBridge's.
    UNIQUE KEY uq_partner_events_sequence (sequence),
    -- A partner's events in sequence: webhooks and the pull API.
    KEY idx_partner_events_partner (partner_id, sequence),
    -- Retention: the oldest first.
    KEY idx_partner_events_age (occurred_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Named positions: `sequence` (the last sequence given), `eventbridge` (the last published).
CREATE TABLE event_cursors (
    name     VARCHAR(32)     NOT NULL,
    position BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

INSERT INTO event_cursors (name, position) VALUES ('sequence', 0), ('eventbridge', 0);

-- One webhook endpoint per partner, with where its deliveries stand. The signing secret is
-- sealed (AES-256-GCM under a key from Secrets Manager): a dump of this table does not reveal it.
CREATE TABLE webhook_endpoints (
    partner_id        VARCHAR(64)     NOT NULL,
    url               VARCHAR(2048)   NOT NULL,
    -- The delivered types, comma-separated.
    event_types       VARCHAR(512)    NOT NULL,
    sealed_secret     VARBINARY(256)  NOT NULL,
    created_at        DATETIME(3)     NOT NULL,
    updated_at        DATETIME(3)     NOT NULL,
    delivered_through BIGINT UNSIGNED NOT NULL,
    failing_since     DATETIME(3)     NULL,
    attempts          INT UNSIGNED    NOT NULL DEFAULT 0,
    next_attempt_at   DATETIME(3)     NOT NULL,
    paused_at         DATETIME(3)     NULL,
    last_error        VARCHAR(512)    NULL,
    -- A relay delivering to this partner holds it until then (never across two relays at once).
    leased_until      DATETIME(3)     NULL,
    PRIMARY KEY (partner_id),
    KEY idx_webhook_endpoints_due (paused_at, next_attempt_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
