-- An order's status may change after it is recorded (PAID → CANCELLED or REFUNDED); the time of
-- the change decides which of two sends is the newer (grading::domain::Order::change_from).
-- Orders recorded before have the status they were sent with since they were ordered.
ALTER TABLE orders ADD COLUMN status_changed_at DATETIME(3) NULL AFTER ordered_at;
UPDATE orders SET status_changed_at = ordered_at;
ALTER TABLE orders MODIFY status_changed_at DATETIME(3) NOT NULL;
