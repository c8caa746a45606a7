//! How many calls a service runs at once: at most
//! `--max-concurrent-requests`, and fewer while its dependencies say they
//! are overloaded. A call whose answer carries [`OVERLOADED_HEADER`] (the
//! orchestrator sets it when a downstream service shed the call) shrinks
//! the limit by a tenth; every other answer grows it by one over the limit
//! (additive increase, multiplicative decrease, as TCP and Netflix's
//! concurrency limiters do). Under a storm the excess is then refused at the
//! door, where a refusal costs microseconds, instead of after a trip to the
//! dependency, and the calls let in wait no longer than the dependency's
//! own bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Response header (and gRPC metadata) naming the dependency that refused
/// a call for overload.
pub const OVERLOADED_HEADER: &str = "lextral-overloaded";

/// Multiplicative decrease per overload signal.
const DECREASE: f64 = 0.9;

/// The limit of one service.
#[derive(Debug)]
pub struct Limiter {
    service: String,
    max: usize,
    in_flight: AtomicUsize,
    limit: Mutex<f64>,
}

/// A call let in; dropping it frees the place. [`Slot::done`] also tells
/// the limiter how the call ended.
#[derive(Debug)]
pub struct Slot {
    limiter: Arc<Limiter>,
}

impl Limiter {
    /// A limiter for `service` allowing up to `max` calls.
    pub fn new(service: &str, max: usize) -> Arc<Self> {
        let limiter = Arc::new(Self {
            service: service.to_owned(),
            max: max.max(1),
            in_flight: AtomicUsize::new(0),
            limit: Mutex::new(max.max(1) as f64),
        });
        limiter.gauge(limiter.max as f64);
        limiter
    }

    fn gauge(&self, limit: f64) {
        metrics::gauge!("lextral_admission_limit", "service" => self.service.clone()).set(limit);
    }

    /// Calls allowed at once now.
    pub fn current(&self) -> usize {
        (*self.limit.lock().unwrap_or_else(|p| p.into_inner())) as usize
    }

    /// Calls running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// A place for one call, or `None` when every place is taken.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let limit = self.current().max(1);
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= limit {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot {
            limiter: self.clone(),
        })
    }

    fn feedback(&self, overloaded: bool) {
        let mut limit = self.limit.lock().unwrap_or_else(|p| p.into_inner());
        *limit = if overloaded {
            (*limit * DECREASE).max(1.0)
        } else {
            (*limit + 1.0 / *limit).min(self.max as f64)
        };
        self.gauge(*limit);
    }
}

impl Slot {
    /// The call ended; `overloaded` when a dependency shed it.
    pub fn done(self, overloaded: bool) {
        self.limiter.feedback(overloaded);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_shrinks_on_overload_and_grows_back() {
        let limiter = Limiter::new("test", 8);
        let slots: Vec<Slot> = (0..8).map(|_| limiter.try_acquire().unwrap()).collect();
        assert!(limiter.try_acquire().is_none());
        for slot in slots {
            slot.done(true);
        }
        // 8 × 0.9⁸ ≈ 3.4
        assert_eq!(limiter.current(), 3);
        let held: Vec<Slot> = (0..3).map(|_| limiter.try_acquire().unwrap()).collect();
        assert!(limiter.try_acquire().is_none(), "three at once now");
        drop(held);
        for _ in 0..200 {
            limiter.try_acquire().unwrap().done(false);
        }
        assert_eq!(limiter.current(), 8, "back to the maximum, never above");
        for _ in 0..100 {
            limiter.try_acquire().unwrap().done(true);
        }
        assert_eq!(limiter.current(), 1, "never below one");
        assert!(limiter.try_acquire().is_some());
        assert_eq!(limiter.in_flight(), 0);
    }
}
