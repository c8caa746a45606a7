//! Quotas: token buckets per caller (a key's name, or the client address
//! when no keys are required), one set per class of call, so one client
//! cannot take the whole service or a paid LLM budget.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::Scope;

/// Checks between two sweeps of idle buckets (bounds the memory a stream
/// of new client addresses can take).
const SWEEP_EVERY: u64 = 4096;

/// Which bucket a call draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaClass {
    /// Calls of a key of this scope.
    Scope(Scope),
    /// Calls without a key (servers that require none), per client address.
    Anonymous,
    /// The prompt strategies (rag, zero-shot), on top of the caller's own.
    Llm,
}

impl QuotaClass {
    fn name(self) -> &'static str {
        match self {
            Self::Scope(scope) => scope.as_str(),
            Self::Anonymous => "anonymous",
            Self::Llm => "llm",
        }
    }
}

/// One class's allowance: `count` calls per `per`, bursting up to `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Allowance {
    count: NonZeroU32,
    per: Duration,
}

/// Quotas as configured: `classify=600/m,ingest=60/m,llm=20/m`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuotaSpec {
    entries: Vec<(QuotaClass, Allowance)>,
}

impl FromStr for QuotaSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = || {
                format!(
                    "bad quota {item:?}: expected CLASS=COUNT/UNIT, CLASS one of classify, ingest, \
                     admin, anonymous, llm and UNIT s, m or h (e.g. classify=600/m)"
                )
            };
            let (class, rate) = item.split_once('=').ok_or_else(bad)?;
            let class = match class.trim() {
                "anonymous" => QuotaClass::Anonymous,
                "llm" => QuotaClass::Llm,
                scope => QuotaClass::Scope(scope.parse().map_err(|_| bad())?),
            };
            let (count, unit) = rate.trim().split_once('/').ok_or_else(bad)?;
            let count: NonZeroU32 = count.trim().parse().map_err(|_| bad())?;
            let per = match unit.trim() {
                "s" => Duration::from_secs(1),
                "m" => Duration::from_secs(60),
                "h" => Duration::from_secs(3600),
                _ => return Err(bad()),
            };
            if entries.iter().any(|(c, _)| *c == class) {
                return Err(format!("quota for {} given twice", class.name()));
            }
            entries.push((class, Allowance { count, per }));
        }
        Ok(Self { entries })
    }
}

/// A call over its quota: when to come back.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "quota exceeded for {who} ({class}: {count} calls per {per_s} s); retry in {retry_after_s} s"
)]
pub struct OverQuota {
    who: String,
    class: &'static str,
    count: u32,
    per_s: u64,
    /// Whole seconds until a call would be allowed again.
    pub retry_after_s: u64,
}

/// The live buckets of every configured class.
pub struct Quotas {
    limiters: HashMap<QuotaClass, (Allowance, DefaultKeyedRateLimiter<String>)>,
    checks: AtomicU64,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("classes", &self.limiters.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Quotas {
    /// Buckets for `spec`; classes it does not name are unlimited.
    pub fn new(spec: &QuotaSpec) -> Self {
        let limiters = spec
            .entries
            .iter()
            .map(|&(class, allowance)| {
                let period = allowance.per / allowance.count.get();
                let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                    .expect("a positive period")
                    .allow_burst(allowance.count);
                (class, (allowance, RateLimiter::keyed(quota)))
            })
            .collect();
        Self {
            limiters,
            checks: AtomicU64::new(0),
        }
    }

    /// Takes one call from `who`'s bucket of `class`.
    pub fn charge(&self, class: QuotaClass, who: &str) -> Result<(), OverQuota> {
        let Some((allowance, limiter)) = self.limiters.get(&class) else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter.check_key(&who.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("lextral_quota_exceeded_total", "class" => class.name()).increment(1);
            OverQuota {
                who: who.to_owned(),
                class: class.name(),
                count: allowance.count.get(),
                per_s: allowance.per.as_secs(),
                retry_after_s: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        let spec: QuotaSpec = "classify=600/m, llm=20/h,anonymous=5/s".parse().unwrap();
        assert_eq!(spec.entries.len(), 3);
        assert!("".parse::<QuotaSpec>().unwrap().entries.is_empty());
        for bad in [
            "classify=0/m",
            "root=1/m",
            "classify=1/d",
            "classify",
            "llm=1/m,llm=2/m",
        ] {
            assert!(bad.parse::<QuotaSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_over_the_quota_is_refused_with_a_retry_after() {
        let quotas = Quotas::new(&"classify=3/m".parse().unwrap());
        let class = QuotaClass::Scope(Scope::Classify);
        for _ in 0..3 {
            quotas.charge(class, "web").unwrap();
        }
        let over = quotas.charge(class, "web").unwrap_err();
        assert!((1..=20).contains(&over.retry_after_s), "{over}");
        assert!(over.to_string().contains("3 calls per 60 s"), "{over}");
        // Buckets are per caller, and unnamed classes are unlimited.
        quotas.charge(class, "batch").unwrap();
        for _ in 0..100 {
            quotas.charge(QuotaClass::Llm, "web").unwrap();
        }
    }
}
