//! Token-bucket rate limits (governor): one bucket per hostname and one per client IP, IPv6
//! clients keyed by their /64 so one host cannot dodge the limit by rotating addresses.
//! Buckets of idle keys are purged by [`RateLimits::purge`], called from a timer.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limited {
    Host(Duration),
    Ip(Duration),
}

/// The gateway's rate limiters.
#[derive(Debug)]
pub(crate) struct RateLimits {
    host: Option<DefaultKeyedRateLimiter<String>>,
    ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

impl RateLimits {
    /// `per_host` / `per_ip` in requests per second (burst = one second's worth); 0 disables.
    pub(crate) fn new(per_host: u32, per_ip: u32) -> Self {
        Self {
            host: keyed(per_host),
            ip: keyed(per_ip),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one token for the client IP and one for the host.
    pub(crate) fn check(&self, host: &str, ip: IpAddr) -> Result<(), Limited> {
        if let Some(limiter) = &self.ip
            && let Err(not_until) = limiter.check_key(&ip_key(ip))
        {
            return Err(Limited::Ip(not_until.wait_time_from(self.clock.now())));
        }
        if let Some(limiter) = &self.host
            && let Err(not_until) = limiter.check_key(&host.to_owned())
        {
            return Err(Limited::Host(not_until.wait_time_from(self.clock.now())));
        }
        Ok(())
    }

    /// Drops buckets that are full again (idle keys) and returns the memory.
    pub(crate) fn purge(&self) {
        if let Some(l) = &self.host {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.ip {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Number of live keys (hosts + IPs), for tests and metrics.
    pub(crate) fn keys(&self) -> usize {
        self.host.as_ref().map_or(0, |l| l.len()) + self.ip.as_ref().map_or(0, |l| l.len())
    }
}

fn keyed<K: std::hash::Hash + Eq + Clone>(rps: u32) -> Option<DefaultKeyedRateLimiter<K>> {
    NonZeroU32::new(rps).map(|r| RateLimiter::keyed(Quota::per_second(r)))
}

/// IPv4 as is; IPv6 truncated to its /64; IPv4-mapped IPv6 as IPv4.
pub(crate) fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Seconds for a Retry-After header: rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis().div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_keyed_by_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(ip_key(mapped), "10.0.0.1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let limits = RateLimits::new(5, 0);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let ok = (0..20)
            .filter(|_| limits.check("a.example", ip).is_ok())
            .count();
        assert_eq!(ok, 5, "burst equals one second of tokens");
        match limits.check("a.example", ip) {
            Err(Limited::Host(wait)) => assert!(wait <= Duration::from_millis(200), "{wait:?}"),
            other => panic!("expected host limit, got {other:?}"),
        }
        // Another host has its own bucket.
        assert!(limits.check("b.example", ip).is_ok());
    }

    #[test]
    fn ip_limit_applies_across_hosts() {
        let limits = RateLimits::new(0, 3);
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let ok = (0..10)
            .filter(|i| limits.check(&format!("h{i}.example"), ip).is_ok())
            .count();
        assert_eq!(ok, 3);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2100)), 3);
    }

    #[test]
    fn purge_drops_idle_keys() {
        let limits = RateLimits::new(1000, 0);
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        for i in 0..50 {
            let _ = limits.check(&format!("h{i}"), ip);
        }
        assert_eq!(limits.keys(), 50);
        std::thread::sleep(Duration::from_millis(20));
        limits.purge();
        assert_eq!(limits.keys(), 0);
    }
}
