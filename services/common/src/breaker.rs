//! A circuit breaker before a remote dependency (the LLM providers): after
//! `failures` failed calls in a row it opens and calls fail at once for
//! `open_for`, so a provider that is down costs callers nothing but a fast
//! UNAVAILABLE instead of a timeout each. Then one trial call goes through
//! (half-open): success closes the circuit, failure opens it again.
//!
//! Only unavailability counts (network errors, timeouts, 5xx): a 429 or a
//! rejected request says the provider is up.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Failed calls in a row that open the circuit; 0 disables the breaker.
    pub failures: u32,
    /// How long the circuit stays open before a trial call.
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        after: u32,
    },
    /// One trial call is out; others are refused until it ends.
    Trial,
}

/// Why a call was not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit open after {failures} failed calls in a row; next try in {}s", retry_in.as_secs().max(1))]
pub struct CircuitOpen {
    /// The failures that opened it.
    pub failures: u32,
    /// Until the next trial call.
    pub retry_in: Duration,
}

/// A circuit breaker named for its metrics.
#[derive(Debug)]
pub struct Breaker {
    name: String,
    policy: BreakerPolicy,
    state: Mutex<State>,
}

/// A call let through; report how it ended with [`Permit::success`] or
/// [`Permit::failure`]. Dropped without either (the caller went away, or
/// the answer said nothing about availability): counts as neither.
#[must_use]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    trial: bool,
    done: bool,
}

impl Breaker {
    /// A closed breaker for the dependency `name`.
    pub fn new(name: impl Into<String>, policy: BreakerPolicy) -> Self {
        let breaker = Self {
            name: name.into(),
            policy,
            state: Mutex::new(State::Closed { failures: 0 }),
        };
        breaker.gauge(false);
        breaker
    }

    fn gauge(&self, open: bool) {
        metrics::gauge!("lextral_circuit_open", "dependency" => self.name.clone()).set(if open {
            1.0
        } else {
            0.0
        });
    }

    /// Lets one call through, or says why not.
    pub fn allow(&self) -> Result<Permit<'_>, CircuitOpen> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let trial = match *state {
            State::Closed { .. } => false,
            State::Open { until, after } => {
                let now = Instant::now();
                if now < until {
                    return Err(self.refuse(after, until - now));
                }
                *state = State::Trial;
                true
            }
            State::Trial => {
                return Err(self.refuse(self.policy.failures, self.policy.open_for));
            }
        };
        Ok(Permit {
            breaker: self,
            trial,
            done: false,
        })
    }

    fn refuse(&self, failures: u32, retry_in: Duration) -> CircuitOpen {
        metrics::counter!("lextral_circuit_refused_total", "dependency" => self.name.clone())
            .increment(1);
        CircuitOpen { failures, retry_in }
    }

    /// Whether calls are refused now.
    pub fn is_open(&self) -> bool {
        match *self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            State::Closed { .. } => false,
            State::Open { until, .. } => Instant::now() < until,
            State::Trial => true,
        }
    }

    fn record(&self, ok: bool, trial: bool) {
        if self.policy.failures == 0 {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let failures = match (&*state, ok) {
            (_, true) => 0,
            (State::Closed { failures }, false) => failures + 1,
            // A failed trial reopens at once.
            (_, false) if trial => self.policy.failures,
            // A late failure of a call let through before the circuit opened.
            (_, false) => return,
        };
        if !ok && failures >= self.policy.failures {
            tracing::warn!(
                dependency = %self.name,
                failures,
                open_s = self.policy.open_for.as_secs(),
                "circuit opened: calls fail fast until the trial call"
            );
            *state = State::Open {
                until: Instant::now() + self.policy.open_for,
                after: failures,
            };
            self.gauge(true);
        } else if ok {
            if !matches!(*state, State::Closed { .. }) {
                tracing::info!(dependency = %self.name, "circuit closed: the trial call succeeded");
            }
            *state = State::Closed { failures: 0 };
            self.gauge(false);
        } else {
            *state = State::Closed { failures };
        }
    }
}

impl Permit<'_> {
    /// The call showed the dependency up.
    pub fn success(mut self) {
        self.done = true;
        self.breaker.record(true, self.trial);
    }

    /// The call showed the dependency unavailable.
    pub fn failure(mut self) {
        self.done = true;
        self.breaker.record(false, self.trial);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        // An abandoned trial must not leave the circuit half-open for ever.
        if self.trial && !self.done {
            let mut state = self.breaker.state.lock().unwrap_or_else(|p| p.into_inner());
            if matches!(*state, State::Trial) {
                *state = State::Open {
                    until: Instant::now(),
                    after: self.breaker.policy.failures,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(open_for: Duration) -> Breaker {
        Breaker::new(
            "test",
            BreakerPolicy {
                failures: 3,
                open_for,
            },
        )
    }

    #[test]
    fn opens_after_failures_in_a_row_and_a_success_resets_the_count() {
        let b = breaker(Duration::from_secs(60));
        b.allow().unwrap().failure();
        b.allow().unwrap().failure();
        b.allow().unwrap().success();
        b.allow().unwrap().failure();
        b.allow().unwrap().failure();
        assert!(!b.is_open());
        b.allow().unwrap().failure();
        assert!(b.is_open());
        let refused = b.allow().unwrap_err();
        assert_eq!(refused.failures, 3);
        assert!(refused.retry_in > Duration::from_secs(50));
        assert!(refused.to_string().contains("3 failed calls"), "{refused}");
    }

    #[test]
    fn one_trial_after_the_pause_closes_or_reopens() {
        let b = breaker(Duration::from_millis(20));
        for _ in 0..3 {
            b.allow().unwrap().failure();
        }
        assert!(b.allow().is_err());
        std::thread::sleep(Duration::from_millis(30));
        let trial = b.allow().unwrap();
        // Only one call probes.
        assert!(b.allow().is_err());
        trial.failure();
        assert!(b.allow().is_err(), "a failed trial reopens at once");
        std::thread::sleep(Duration::from_millis(30));
        b.allow().unwrap().success();
        assert!(!b.is_open());
        b.allow().unwrap().success();
    }

    #[test]
    fn an_abandoned_trial_lets_the_next_call_probe() {
        let b = breaker(Duration::from_millis(10));
        for _ in 0..3 {
            b.allow().unwrap().failure();
        }
        std::thread::sleep(Duration::from_millis(20));
        drop(b.allow().unwrap());
        b.allow().unwrap().success();
        assert!(!b.is_open());
    }

    #[test]
    fn a_zero_threshold_never_opens() {
        let b = Breaker::new(
            "off",
            BreakerPolicy {
                failures: 0,
                open_for: Duration::from_secs(1),
            },
        );
        for _ in 0..100 {
            b.allow().unwrap().failure();
        }
        assert!(!b.is_open());
    }
}
