//! Per-client limits (`limits`): a request rate and a number of requests at once per client
//! address. A client over either gets `429 Too Many Requests` with `Retry-After`; other
//! clients are not affected.
//!
//! Both are Pingora's fixed-size estimators (a count-min sketch keyed by address): memory
//! does not grow with the number of clients, and a collision can only make a limit bite early
//! for two addresses sharing every hash, never let a client past it.

use std::net::IpAddr;
use std::time::Duration;

use pingora_limits::inflight::{Guard, Inflight};
use pingora_limits::rate::Rate;

use crate::config::LimitsConfig;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Over {
    /// More requests in the last second than `limits.requests_per_second`.
    Rate,
    /// More requests at once than `limits.requests_in_flight`.
    InFlight,
}

/// The limits of a node.
pub(crate) struct Limits {
    per_second: Option<u32>,
    in_flight: Option<u32>,
    rate: Rate,
    flights: Inflight,
}

/// A request admitted under the limits; its slot in flight ends when this is dropped.
pub(crate) struct Admitted(#[allow(dead_code)] Option<Guard>);

impl Limits {
    /// The limits `cfg` sets.
    pub(crate) fn new(cfg: &LimitsConfig) -> Limits {
        Limits {
            per_second: cfg.requests_per_second.filter(|&n| n > 0),
            in_flight: cfg.requests_in_flight.filter(|&n| n > 0),
            rate: Rate::new(Duration::from_secs(1)),
            flights: Inflight::new(),
        }
    }

    /// Admits a request from `client`, or says which limit it is over.
    pub(crate) fn admit(&self, client: Option<IpAddr>) -> Result<Admitted, Over> {
        let Some(ip) = client else {
            return Ok(Admitted(None));
        };
        if let Some(max) = self.per_second {
            // Counted whether or not it is refused: a client hammering on stays refused.
            if self.rate.observe(&ip, 1) > max as isize {
                return Err(Over::Rate);
            }
        }
        let Some(max) = self.in_flight else {
            return Ok(Admitted(None));
        };
        let (guard, now) = self.flights.incr(ip, 1);
        if now > max as isize {
            return Err(Over::InFlight);
        }
        Ok(Admitted(Some(guard)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_has_its_own_budget() {
        let l = Limits::new(&LimitsConfig {
            requests_per_second: Some(3),
            requests_in_flight: Some(2),
            ..LimitsConfig::default()
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = l.admit(Some(a)).unwrap();
        let second = l.admit(Some(a)).unwrap();
        assert_eq!(l.admit(Some(a)).err(), Some(Over::InFlight));
        drop((first, second));
        assert_eq!(l.admit(Some(a)).err(), Some(Over::Rate));
        assert!(l.admit(Some(b)).is_ok());
        assert!(l.admit(None).is_ok());
        let off = Limits::new(&LimitsConfig::default());
        assert!((0..100).all(|_| off.admit(Some(a)).is_ok()));
    }
}
