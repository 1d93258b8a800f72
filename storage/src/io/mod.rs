//! How bytes reach the device: aligned buffers, the device, the io engines.
pub mod aligned;
pub(crate) mod bufpool;
pub mod device;
pub mod engine;
