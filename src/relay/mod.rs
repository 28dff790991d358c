//! Per-user relay: the live-session registry, the group-commit writer that assigns
//! durability before any ack, fan-out in `seq` order, and the operations
//! (`ops`) that the WebSocket session and the REST API share.

pub mod bus;
pub mod hub;
pub mod ops;
pub mod writer;

pub use hub::{Hub, Outbound, SessionHandle, SessionLink};
pub use writer::Writer;
