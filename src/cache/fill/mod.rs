//! Writing origin bodies into the cache as slices: the miss handlers of the cache plane.
//!
//! - [`run`]: [`RunFill`], for objects of known length: its slices are registered with the
//!   coalescer before the fetch starts, so every client that wants one of them reads it as it
//!   arrives; each complete slice goes to the tiers.
//! - [`unknown_length`]: [`UnsizedFill`], for a body without a length: slices are stored as they
//!   complete, and the object is described only once the body ended complete.
//! - [`tee`]: [`Tee`], for a partial body the origin chose (not on slice boundaries): relayed
//!   to its client, with the whole slices inside it stored as they pass.
//!
//! Both keep pingora-cache's miss-handler contract: a fill that does not finish never becomes
//! visible as a complete object.

mod run;
mod tee;
mod unknown_length;

pub(crate) use run::{register, RunFill};
pub(crate) use tee::Tee;
pub(crate) use unknown_length::UnsizedFill;
