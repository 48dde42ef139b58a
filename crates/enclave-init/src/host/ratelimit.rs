//! A warning that anyone can trigger (a datagram on the world-writable
//! notify socket, a connection while init is out of descriptors) must not
//! become a flood that costs init its CPU and pushes its own lines off a
//! slow console. [`RateLimit`] lets `burst` through per `interval` and
//! counts the rest, to be reported once the interval is over.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    burst: u32,
    window_start: Option<Instant>,
    passed: u32,
    suppressed: u64,
}

impl RateLimit {
    pub const fn new(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst,
            window_start: None,
            passed: 0,
            suppressed: 0,
        }
    }

    /// Whether one more may go through now; if not, it is counted.
    pub fn allow(&mut self, now: Instant) -> bool {
        let fresh = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.interval);
        if fresh && self.suppressed == 0 {
            self.window_start = Some(now);
            self.passed = 0;
        }
        if self.passed < self.burst && self.suppressed == 0 {
            self.passed += 1;
            return true;
        }
        self.suppressed = self.suppressed.saturating_add(1);
        false
    }

    /// When the suppressed count is due to be reported (`None`: nothing
    /// suppressed, so no timer needed).
    pub fn deadline(&self) -> Option<Instant> {
        if self.suppressed == 0 {
            return None;
        }
        self.window_start
            .and_then(|start| start.checked_add(self.interval))
    }

    /// The count to report once the interval is over; a new window starts.
    pub fn take_suppressed(&mut self, now: Instant) -> Option<u64> {
        if self.deadline().is_none_or(|d| d > now) {
            return None;
        }
        let n = std::mem::take(&mut self.suppressed);
        self.window_start = Some(now);
        self.passed = 0;
        Some(n)
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_count_then_a_new_window() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(Duration::from_secs(5), 3);
        assert_eq!(limit.deadline(), None);
        let passed = (0..1000).filter(|_| limit.allow(t0)).count();
        assert_eq!(passed, 3);
        assert_eq!(limit.deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(limit.take_suppressed(t0 + Duration::from_secs(4)), None);
        // Still within the window: counted, not let through.
        assert!(!limit.allow(t0 + Duration::from_secs(4)));
        let later = t0 + Duration::from_secs(5);
        assert_eq!(limit.take_suppressed(later), Some(998));
        assert_eq!(limit.deadline(), None);
        assert!(limit.allow(later));
        // Quiet for long: a fresh burst.
        let much_later = later + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| limit.allow(much_later)).count(), 3);
    }
}
