//! The typed values of the metrics' labels: each enum spells its label values in one place.

/// How a cache fill ended (the `result` label of `strata_fills_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FillResult {
    /// A slice (or a whole unknown-length object) reached the tiers.
    Stored,
    /// The origin body ended early or failed.
    Incomplete,
    /// A tier refused or failed the write.
    StoreError,
    /// Every interested client left, so the fill stopped.
    Cancelled,
}

impl FillResult {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FillResult::Stored => "stored",
            FillResult::Incomplete => "incomplete",
            FillResult::StoreError => "store_error",
            FillResult::Cancelled => "cancelled",
        }
    }
}

/// Where body bytes sent to a client came from (the `source` label of
/// `strata_response_bytes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ByteSource {
    /// The memory tier.
    Memory,
    /// The disk tier.
    Disk,
    /// The origin, as it arrived (directly, or from a fill in flight).
    Origin,
}

impl ByteSource {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ByteSource::Memory => "memory",
            ByteSource::Disk => "disk",
            ByteSource::Origin => "origin",
        }
    }
}

/// Why an origin request failed (the `kind` label of `strata_origin_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OriginError {
    /// No connection (name resolution, refused, unreachable).
    Connect,
    /// The origin did not answer in time.
    Timeout,
    /// The exchange broke (reset, malformed response, body cut short).
    Protocol,
    /// The origin answered with a server error or refused Strata's credentials.
    Status,
}

impl OriginError {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OriginError::Connect => "connect",
            OriginError::Timeout => "timeout",
            OriginError::Protocol => "protocol",
            OriginError::Status => "status",
        }
    }
}
