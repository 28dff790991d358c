//! The `jetstream` peer's devices: one NATS connection each, JetStream publishes
//! to `ferry.<user>` (the PubAck's stream sequence is the `seq`), and an ordered
//! push consumer on the same subject read by a task of its own.

use std::net::SocketAddr;
use std::time::Instant;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;

use super::{EVENT_QUEUE, Event, Inbox, connect_all, delivery, label, refused};
use crate::common::ConnArgs;
use crate::net::Failure;
use crate::pattern::{Decoded, Pattern, Wire};

/// The stream every user's subject is stored in.
const STREAM: &str = "FERRY";

/// The subject of user `user`.
pub(super) fn subject(user: u32) -> String {
    format!("ferry.{user}")
}

/// One device: its connection, its JetStream context, its user's subject.
pub(super) struct NatsWire {
    js: jetstream::Context,
    subject: async_nats::Subject,
    inbox: Inbox,
    /// Kept so the connection lives as long as the device.
    _client: async_nats::Client,
}

/// Creates the file-backed stream over `ferry.*`, then connects every device of
/// the pattern and creates its consumer (before anything is published).
pub(super) async fn connect(
    addr: SocketAddr,
    pat: &Pattern,
    conn: &ConnArgs,
) -> anyhow::Result<Vec<NatsWire>> {
    // Replies may take as long as the run: a slow ack is counted late, not lost.
    let timeout = pat.warmup + pat.duration + pat.drain;
    let setup = async_nats::ConnectOptions::new()
        .connection_timeout(conn.connect_timeout)
        .connect(format!("nats://{addr}"))
        .await?;
    jetstream::new(setup.clone())
        .create_stream(stream::Config {
            name: STREAM.into(),
            subjects: vec!["ferry.*".into()],
            storage: stream::StorageType::File,
            num_replicas: 1,
            ..Default::default()
        })
        .await?;
    drop(setup);
    let devices = pat.devices;
    let connect_timeout = conn.connect_timeout;
    connect_all(
        "jetstream",
        pat.sessions(),
        conn.connect_concurrency,
        move |i| device(addr, i, i / devices, connect_timeout, timeout),
    )
    .await
}

/// Connects device `me` of user `user` and starts its consumer.
async fn device(
    addr: SocketAddr,
    me: u32,
    user: u32,
    connect_timeout: std::time::Duration,
    timeout: std::time::Duration,
) -> Result<NatsWire, Failure> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(connect_timeout)
        .connect(format!("nats://{addr}"))
        .await
        .map_err(|e| Failure::Connect(label("nats", &e.kind())))?;
    let js = jetstream::ContextBuilder::new()
        .timeout(timeout)
        .build(client.clone());
    let subject = subject(user);
    let config = consumer::push::OrderedConfig {
        deliver_subject: client.new_inbox(),
        filter_subject: subject.clone(),
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    };
    let messages = js
        .create_consumer_on_stream(config, STREAM)
        .await
        .map_err(|_| Failure::Protocol("jetstream_consumer_create"))?
        .messages()
        .await
        .map_err(|_| Failure::Protocol("jetstream_consumer_subscribe"))?;
    let (tx, rx) = mpsc::channel(EVENT_QUEUE);
    let reader = tokio::spawn(read(messages, me, tx));
    Ok(NatsWire {
        js,
        subject: subject.into(),
        inbox: Inbox::new(rx, reader),
        _client: client,
    })
}

/// Forwards the consumer's messages (but the device's own) until it fails.
async fn read(mut messages: consumer::push::Ordered, me: u32, tx: mpsc::Sender<Event>) {
    while let Some(m) = messages.next().await {
        let at = Instant::now();
        let event = match m {
            Ok(m) => match m.info() {
                Ok(info) => match delivery(me, info.stream_sequence, &m.payload) {
                    Some(d) => Ok((at, d)),
                    None => continue,
                },
                Err(_) => Err(Failure::Protocol("jetstream_reply_subject")),
            },
            Err(e) => Err(Failure::Peer(label("jetstream", &e.kind()))),
        };
        let failed = event.is_err();
        if tx.send(event).await.is_err() || failed {
            return;
        }
    }
    let _ = tx
        .send(Err(Failure::Transport("jetstream_consumer_ended")))
        .await;
}

/// The device's view of a PubAck.
fn ack(
    counter: u64,
    reply: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
) -> Decoded {
    match reply {
        Ok(a) if a.duplicate => refused(counter, "ack_duplicate".into()),
        Ok(a) => Decoded::Ack {
            counter,
            seq: a.sequence,
        },
        Err(e) => refused(counter, label("publish", &e.kind())),
    }
}

impl Wire for NatsWire {
    async fn next(&mut self) -> Event {
        self.inbox.next().await
    }

    async fn feed(&mut self, counter: u64, payload: &[u8]) -> Result<(), Failure> {
        // Sent to the connection now; the PubAck is awaited from `next`.
        match self
            .js
            .publish(self.subject.clone(), Bytes::copy_from_slice(payload))
            .await
        {
            Ok(pending) => self.inbox.push(async move { ack(counter, pending.await) }),
            Err(e) => {
                let reason = label("publish", &e.kind());
                self.inbox
                    .push(std::future::ready(refused(counter, reason)));
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Failure> {
        // The client's connection task writes and flushes what is queued.
        Ok(())
    }

    async fn close(&mut self) {}
}
