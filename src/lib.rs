//! Ferry: a relay server for apps that sync end-to-end-encrypted data between one
//! person's devices.
//!
//! # Layout
//! - [`config`]: typed, layered, validated configuration.
//! - [`keys`]: the server identity key (load, generate, permissions).
//! - [`cli`]: the `ferry` command line.
//! - [`server`]: `run(config, listeners, shutdown)` — builds [`app::App`] and serves.
//! - [`app`]: the shared state handed to every connection: the core, `Auth`,
//!   metrics, configuration and connection limits.
//! - [`net`]: accepting connections (caps, TLS, HTTP, graceful close).
//! - [`api`]: the HTTP routers (`/v1/ws`, the REST and admin APIs, health, metrics,
//!   OpenAPI); the only module that knows HTTP.
//! - [`auth`]: REST authentication (challenge logins, JWT access tokens, refresh
//!   token families, revocation, admin keys).
//! - [`session`]: the IO shell of one WebSocket connection.
//! - [`relay`]: the domain core, [`relay::Relay`]: it alone holds the store and the
//!   hub of live sessions, and offers what devices and operators can do.
//! - [`model`]: the domain's plain data (ids, events, devices).
//! - [`clock`]: wall-clock time for the IO shell.
//! - [`limits`]: rate limits and connection caps.
//! - [`store`]: durable storage behind one trait; the only module that knows SQL.
//! - [`telemetry`]: logs, OpenTelemetry traces and Prometheus metrics.
//!
//! The wire protocol itself lives in the `ferry-proto` crate, which does no IO.

#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod auth;
pub mod backup;
pub mod breaker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod keys;
pub mod limits;
pub mod model;
pub mod net;
pub mod relay;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod store;
pub mod telemetry;
