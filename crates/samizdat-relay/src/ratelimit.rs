//! Per-client-address rate limits (fixed one-minute windows).
//!
//! This is the one piece of in-process state, and deliberately so: it only protects this
//! process. With N processes behind a balancer an address gets at most N times the limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<(u64, HashMap<IpAddr, u32>)>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute,
            windows: Mutex::new((0, HashMap::new())),
        }
    }

    /// Count one request from `ip` at `now_secs`; false if over the limit.
    pub fn allow(&self, ip: IpAddr, now_secs: u64) -> bool {
        let minute = now_secs / 60;
        let Ok(mut w) = self.windows.lock() else {
            return true;
        };
        if w.0 != minute {
            *w = (minute, HashMap::new());
        }
        let n = w.1.entry(ip).or_insert(0);
        if *n >= self.per_minute {
            return false;
        }
        *n += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_window() {
        let r = RateLimiter::new(2);
        let ip: IpAddr = [127, 0, 0, 1].into();
        assert!(r.allow(ip, 60));
        assert!(r.allow(ip, 61));
        assert!(!r.allow(ip, 62));
        assert!(r.allow(ip, 120));
    }
}
