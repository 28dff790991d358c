//! The Ferry wire protocol, version 1.
//!
//! This crate is **sans-IO**: it never opens a socket, never reads a clock and never
//! draws randomness by itself. Time and random bytes are passed in; decisions come
//! back as values. The async client SDK (tokio + tokio-tungstenite) is built on top
//! of it in its own crate, `ferry-client`, for applications and the load generator;
//! the server uses the same types, so both ends share one implementation of the
//! contract.
//!
//! # Layout
//! - [`b64u`]: strict base64url without padding.
//! - [`keys`]: Ed25519 identities, device certificates and the other signed statements.
//! - [`handshake`]: the client and server handshake state machines (§2).
//! - [`seal`]: sealed frames with per-direction counters (§3).
//! - [`message`]: the JSON messages inside the sealed channel (§4).
//! - [`close`]: close codes.

#![warn(missing_docs)]

pub mod b64u;
pub mod close;
pub mod handshake;
pub mod keys;
pub mod message;
pub mod seal;

pub use close::CloseCode;
