//! Per-user relay: the live-session registry and (later) sequencing and fan-out.

pub mod hub;

pub use hub::{Hub, Outbound, SessionHandle, SessionLink};
