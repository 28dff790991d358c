//! Fuzz targets for Ferry's parsers and verifiers, and the fixtures they share.
//!
//! Each target in `fuzz_targets/` is one line that hands libFuzzer's input to a
//! function of [`targets`]; the logic lives here so that [`seeds`] can build each
//! target's starting corpus from the same fixtures. Every fixture comes from the
//! protocol vectors (`ferry-proto/tests/data/protocol-vectors.json`), and [`fixture`]
//! checks on first use that a handshake driven by them establishes the vectors'
//! session, so a target that refuses a tampered input refuses it against the real
//! thing.
//!
//! The invariant of every target: no panic, and where the input meets a decision, a
//! wrong input is refused (a sealed frame that is not the vector's never opens, a
//! token other than the one signed never verifies, a certificate with any field
//! changed never verifies).

#![warn(missing_docs)]

pub mod fixture;
pub mod seeds;
pub mod targets;

pub use fixture::{Fixture, fixture};
