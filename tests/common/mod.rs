//! The integration-test harness. `db.rs` and `server.rs` are also compiled into the
//! client crate's tests (`clients/rust/tests/sdk.rs`): a crate they start to use must
//! be a dev-dependency of `clients/rust` as well.

#![allow(dead_code, unreachable_pub)]

pub mod backends;
pub mod child;
pub mod client;
pub mod db;
pub mod http;
pub mod redis;
pub mod server;
