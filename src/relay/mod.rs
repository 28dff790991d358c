//! Per-user relay: the live-session registry, the group-commit writer that assigns
//! durability before any ack, and fan-out in `seq` order.

pub mod hub;
pub mod writer;

pub use hub::{Hub, Outbound, SessionHandle, SessionLink};
pub use writer::Writer;
