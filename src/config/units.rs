//! Sizes (`256MiB`) and durations (`10m`) as the configuration writes them.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A byte size written as `256MiB`, `1GiB`, `4096` …
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Size(n)),
            Raw::Text(s) => parse_size::Config::new()
                .with_binary()
                .parse_size(s.trim())
                .map(Size)
                .map_err(|e| {
                    serde::de::Error::custom(format!(
                        "invalid size `{s}` ({e}); write e.g. 256MiB or 2GiB"
                    ))
                }),
        }
    }
}

/// A duration written as `10m`, `1s`, `250ms` …
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Dur).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration `{s}` ({e}); write e.g. 10m or 30s"
            ))
        })
    }
}
