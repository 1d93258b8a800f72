//! How bytes reach the device: buffers aligned for direct IO (reused through a private pool),
//! the device itself, and the io engines behind one trait.
//!
//! - [`aligned`]: [`AlignedBuf`], the only buffer type IO takes;
//! - [`growing`]: [`GrowingBuf`], an aligned buffer one writer fills while readers hold views
//!   of it; lent to an engine as an [`AlignedBuf`] once written;
//! - `bufpool`: idle buffers kept for reuse; private to this module, raw pointers never leave it;
//! - [`device`]: opening a file or a block device with `O_DIRECT`;
//! - [`engine`]: the [`IoEngine`] trait, psync and io_uring.

pub(crate) mod aligned;
mod bufpool;
pub(crate) mod device;
pub(crate) mod engine;
pub(crate) mod growing;

pub use aligned::AlignedBuf;
pub use device::{Device, DeviceKind};
pub use engine::{start, CompletionHook, EngineKind, EngineOptions, IoEngine, IoFuture, IoResult};
