//! Ferry: a relay server for apps that sync end-to-end-encrypted data between one
//! person's devices.
//!
//! # Layout
//! - [`config`]: typed, layered, validated configuration.
//! - [`keys`]: the server identity key (load, generate, permissions).
//! - [`cli`]: the `ferry` command line.
//! - [`store`]: durable storage behind one trait; the only module that knows SQL.

#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod keys;
pub mod store;
