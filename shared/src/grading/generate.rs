//! A realistic month of orders for load tests and benchmarks (`fcfs-admin orders generate`),
//! deterministic for a seed: users `u00000…`, a few heavy buyers and a long tail (a user's weight
//! falls with its index), amounts from 1,000 to 200,000, 5 % cancelled, times spread over the
//! month. No `rand` dependency: SplitMix64 is enough for test data and stable across versions.

use chrono::Duration;

use super::domain::{Month, Order, OrderStatus};
use crate::kernel::UserId;

pub struct OrderGenerator {
    state: u64,
    users: u32,
    month: Month,
    month_ms: i64,
    next: u64,
}

impl OrderGenerator {
    pub fn new(month: Month, users: u32, seed: u64) -> Self {
        let month_ms = (month.next().start() - month.start()).num_milliseconds();
        Self {
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
            users: users.max(1),
            month,
            month_ms,
            next: 0,
        }
    }

    fn random(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A user index, skewed: the square of a uniform draw favours low indices.
    fn user(&mut self) -> u32 {
        let u = (self.random() >> 11) as f64 / (1u64 << 53) as f64;
        ((u * u) * f64::from(self.users)) as u32 % self.users
    }

    pub fn user_id(index: u32) -> String {
        format!("u{index:05}")
    }
}

impl Iterator for OrderGenerator {
    type Item = Order;

    fn next(&mut self) -> Option<Order> {
        let user = Self::user_id(self.user());
        let amount = 1_000 + self.random() % 199_001;
        let status = if self.random() % 100 < 5 {
            OrderStatus::Cancelled
        } else {
            OrderStatus::Paid
        };
        let at = self.month.start() + Duration::milliseconds((self.random() % self.month_ms as u64) as i64);
        let order = Order {
            order_id: format!("o-{}-{:07}", self.month, self.next),
            #[allow(clippy::expect_used, reason = "`u` and five or more digits: a valid user id")]
            user_id: UserId::parse(&user).expect("a generated user id is valid"),
            amount,
            status,
            ordered_at: at,
            status_changed_at: at,
        };
        self.next += 1;
        Some(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_month_of_orders() {
        let month = Month::parse("2026-10").unwrap();
        let a: Vec<Order> = OrderGenerator::new(month, 100, 7).take(1000).collect();
        let b: Vec<Order> = OrderGenerator::new(month, 100, 7).take(1000).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|o| o.month() == month));
        let users: std::collections::HashSet<_> = a.iter().map(|o| o.user_id.as_str()).collect();
        assert!(users.len() > 50, "{}", users.len());
        let cancelled = a.iter().filter(|o| o.status == OrderStatus::Cancelled).count();
        assert!((20..90).contains(&cancelled), "{cancelled}");
    }
}
