//! API Gateway's throttling as the template sets it: a token bucket for the whole stage
//! (`MethodSettings` on `/*`) and one per usage-plan key (the authorizer's `usageIdentifierKey`,
//! one per partner). Over either, the gateway answers `THROTTLED` itself.

use std::num::NonZeroU32;
use std::time::Duration;

use fcfs_template::ThrottleSpec;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

fn quota(spec: ThrottleSpec) -> Option<Quota> {
    // The template crate checked both positive; a rate too high for a period is no limit.
    Quota::with_period(Duration::from_secs_f64(1.0 / spec.rate))
        .map(|q| q.allow_burst(NonZeroU32::new(spec.burst).unwrap_or(NonZeroU32::MIN)))
}

pub(crate) struct Throttles {
    stage: Option<DefaultDirectRateLimiter>,
    key: Option<DefaultKeyedRateLimiter<String>>,
}

impl Throttles {
    pub(crate) fn new(stage: Option<ThrottleSpec>, key: Option<ThrottleSpec>) -> Self {
        Self {
            stage: stage.and_then(quota).map(RateLimiter::direct),
            key: key.and_then(quota).map(RateLimiter::keyed),
        }
    }

    pub(crate) fn none() -> Self {
        Self { stage: None, key: None }
    }

    /// Takes a token from the stage's bucket: false when it is empty.
    pub(crate) fn stage_admits(&self) -> bool {
        self.stage.as_ref().is_none_or(|l| l.check().is_ok())
    }

    /// Takes a token from this key's bucket: false when it is empty.
    pub(crate) fn key_admits(&self, key: &str) -> bool {
        self.key.as_ref().is_none_or(|l| l.check_key(&key.to_owned()).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_admitted_then_the_rest_of_the_second_is_refused_per_key() {
        let spec = ThrottleSpec { rate: 1.0, burst: 3 };
        let throttles = Throttles::new(Some(ThrottleSpec { rate: 1.0, burst: 5 }), Some(spec));
        let admitted = (0..10).filter(|_| throttles.key_admits("acme")).count();
        assert_eq!(admitted, 3, "the burst, then nothing until a token refills");
        assert!(throttles.key_admits("other"), "each key has its own bucket");
        assert_eq!((0..10).filter(|_| throttles.stage_admits()).count(), 5);
        let open = Throttles::none();
        assert!((0..10_000).all(|_| open.stage_admits() && open.key_admits("acme")));
    }
}
