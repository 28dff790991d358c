//! In-memory handshake tests: a `ServerHandshake` and a `ClientHandshake` wired
//! back to back (quinn-proto's `Pair`, rustls' `do_handshake`), with a virtual clock,
//! deterministic randomness and a hook that can rewrite any message in flight.
//!
//! # Layout
//! - [`harness`]: fixtures (`key`, `Setup`), the `Pair` and its stepping functions,
//!   JSON tamper helpers, `Session` (what a client-side forger can compute), and
//!   `check`, the data-driven assertion most tests are written with.
//! - The cases, one file per theme: [`happy_path`], [`client_hello`],
//!   [`server_hello`], [`client_auth`], [`certificates`], [`device_lookup`],
//!   [`replay`] (replay, reflection and forgery), [`ordering`], [`timeouts`],
//!   [`errors`] (error mapping), and [`generated`]: each message mutated by
//!   [`mutate`] (shared with the crate's `tests/generated.rs`), 500 cases a message.
//!
//! Everything is deterministic: long-term keys come from fixed seeds, ephemerals from a
//! counter-based RNG, and time from the virtual `Clock`. Nothing measures real time.
//!
//! To add a case, prefer adding a row to a table over writing a new test: a row is a
//! tamper function and the outcome it must end in (`Expect`).

mod harness;
#[path = "../../../tests/support/mutate.rs"]
mod mutate;

mod certificates;
mod client_auth;
mod client_hello;
mod device_lookup;
mod errors;
mod generated;
mod happy_path;
mod ordering;
mod replay;
mod server_hello;
mod timeouts;
