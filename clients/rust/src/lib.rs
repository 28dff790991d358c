//! The async client SDK for Ferry: tokio, tokio-tungstenite and rustls on top of the
//! sans-IO protocol crate, `ferry-proto`. Unlike `ferry-proto`, this crate does IO,
//! reads the clock and draws randomness from the operating system.
//!
//! - Identities: [`UserKey`], [`DeviceKey`], certificates, linking a new device
//!   ([`LinkGrant`]) and the stored [`Profile`].
//! - [`Connection`]: one session, low level — handshake, sealed requests matched to
//!   replies, unsolicited messages as a queue, the close code. It never reconnects.
//! - [`Client`]: the logical connection of one device — reconnects with jittered
//!   exponential [`Backoff`], publishes with automatic retries under a stable event
//!   id, and streams the user's log gap-free ([`EventStream`]).
//!
//! Payloads are opaque to the server and to this SDK: applications encrypt them end
//! to end (with keys only the user's devices hold) before publishing.
//!
//! # Example
//!
//! ```no_run
//! use ferry_client::{Client, ClientOptions, Profile, PublishOptions};
//!
//! # async fn demo() -> Result<(), ferry_client::ClientError> {
//! // A new user whose first device is this one; the server key is pinned on first use.
//! let mut profile = Profile::create("ws://127.0.0.1:8080/v1/ws", None);
//! let client = Client::connect(ClientOptions::from_profile(&profile)).await?;
//! profile.server_key = Some(client.server_key());
//! profile.save("ferry-client/profile.json")?;
//!
//! let ack = client
//!     .publish(b"sealed bytes".to_vec(), PublishOptions::default())
//!     .await?;
//! assert_eq!(ack.seq, Some(1));
//!
//! let mut log = client.sync_from(0);
//! while let Some(event) = log.next().await {
//!     let event = event?;
//!     println!("seq {}: {} bytes", event.seq, event.payload.len());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # TLS
//!
//! The SDK bundles no root certificates and reads none from the system: `wss://`
//! needs a [`rustls::ClientConfig`] ([`ClientOptions::tls`]), for example from
//! [`tls_config`] with the roots the application trusts. Server authenticity does not
//! rest on TLS alone: the handshake checks the server's Ed25519 key against the pin.
//!
//! # The command line
//!
//! The crate's binary, `ferry-client` (feature `cli`, on by default), is a sync client
//! for trying a server out, built on this SDK (`ferry-client --help`). Applications
//! that only use the library can turn it off with `default-features = false`.

#![warn(missing_docs)]

mod backoff;
mod connection;
mod error;
mod identity;
mod sync_client;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use backoff::Backoff;
pub use connection::{
    AuthOk, CONNECT_TIMEOUT, Connection, INCOMING_QUEUE, Incoming, KEEPALIVE, Presence,
    REQUEST_TIMEOUT, Requester, encode_request,
};
pub use error::ClientError;
pub use identity::{DeviceKey, LinkGrant, Profile, UserKey, write_private};
pub use sync_client::{
    Ack, Client, ClientOptions, EphemeralEvent, Event, EventStream, PublishOptions, Subscription,
    SyncPage,
};

pub use ferry_proto::handshake::{DeviceCredentials, ServerPin};

/// A rustls client configuration (ring provider, TLS 1.2 and 1.3) that trusts
/// exactly `roots`.
pub fn tls_config(
    roots: impl IntoIterator<Item = rustls::pki_types::CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut store = rustls::RootCertStore::empty();
    for cert in roots {
        store
            .add(cert)
            .map_err(|e| ClientError::Tls(format!("root certificate rejected: {e}")))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Tls(e.to_string()))?
    .with_root_certificates(store)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Unix seconds now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
