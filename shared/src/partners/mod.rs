//! The partners context: how much of the shared system one partner may hold at once, so that one
//! partner cannot crowd out another (Redis memory for live campaigns, MySQL rows for orders).
//! `domain.rs` holds the limits, their defaults and the one admission rule every context that
//! enforces a limit runs; `ports.rs` the store of per-partner overrides (`partner_limits`).

pub mod domain;
pub mod ports;
