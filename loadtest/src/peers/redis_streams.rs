//! The `redis-streams` peer's devices: `XADD ferry:<user> * p <payload>` on a
//! multiplexed connection of the device's own (the entry ID is the ack and the
//! `seq`), and `XREAD BLOCK 0 STREAMS ferry:<user> <last-id>` in a loop on a
//! second connection, read by a task of its own.

use std::net::SocketAddr;
use std::time::Instant;

use redis::Value;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

use super::{EVENT_QUEUE, Event, Inbox, connect_all, delivery, label, refused};
use crate::common::ConnArgs;
use crate::net::Failure;
use crate::pattern::{Decoded, Pattern, Wire};

/// The field each entry keeps its payload in.
const FIELD: &str = "p";

/// The stream of user `user`.
pub(super) fn key(user: u32) -> String {
    format!("ferry:{user}")
}

/// One device: its publishing connection and its user's stream.
pub(super) struct RedisWire {
    conn: MultiplexedConnection,
    key: String,
    inbox: Inbox,
}

/// Connects every device of the pattern (two connections each) and starts its
/// reader.
pub(super) async fn connect(
    addr: SocketAddr,
    pat: &Pattern,
    conn: &ConnArgs,
) -> anyhow::Result<Vec<RedisWire>> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    // No response timeout: XREAD BLOCK 0 waits as long as it must, and a slow
    // XADD is counted late (or unanswered at the end), not lost.
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(conn.connect_timeout))
        .set_response_timeout(None);
    let devices = pat.devices;
    connect_all(
        "redis-streams",
        pat.sessions(),
        conn.connect_concurrency,
        move |i| {
            let (client, config) = (client.clone(), config.clone());
            async move {
                let open = || async {
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map_err(|e| Failure::Connect(label("redis", &e.kind())))
                };
                let publisher = open().await?;
                let reader = open().await?;
                let key = key(i / devices);
                let (tx, rx) = mpsc::channel(EVENT_QUEUE);
                let task = tokio::spawn(read(reader, key.clone(), i, tx));
                Ok(RedisWire {
                    conn: publisher,
                    key,
                    inbox: Inbox::new(rx, task),
                })
            }
        },
    )
    .await
}

/// Reads the user's stream from the start with blocking XREADs, forwarding every
/// entry but the device's own, until a read fails.
async fn read(mut conn: MultiplexedConnection, key: String, me: u32, tx: mpsc::Sender<Event>) {
    let mut last = "0-0".to_string();
    loop {
        let reply: redis::RedisResult<Value> = redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(0)
            .arg("STREAMS")
            .arg(&key)
            .arg(&last)
            .query_async(&mut conn)
            .await;
        let at = Instant::now();
        let entries = match reply {
            Ok(v) => parse_xread(v),
            Err(e) => Err(label("xread", &e.kind())),
        };
        let entries = match entries {
            Ok(e) => e,
            Err(why) => {
                let _ = tx.send(Err(Failure::Peer(why))).await;
                return;
            }
        };
        for (id, payload) in entries {
            let event = match stream_id_seq(&id) {
                Some(seq) => match delivery(me, seq, &payload) {
                    Some(d) => Ok((at, d)),
                    None => {
                        last = id;
                        continue;
                    }
                },
                None => Err(Failure::Peer("xread_bad_entry_id".into())),
            };
            let failed = event.is_err();
            if tx.send(event).await.is_err() || failed {
                return;
            }
            last = id;
        }
    }
}

/// An entry ID `<ms>-<n>` as one number that keeps their order: `ms·2²⁰ + n`
/// (`None` beyond 2⁴³ ms, year 2248, or 2²⁰ entries in one millisecond, or not
/// an ID).
pub(super) fn stream_id_seq(id: &str) -> Option<u64> {
    let (ms, n) = id.split_once('-')?;
    let (ms, n): (u64, u64) = (ms.parse().ok()?, n.parse().ok()?);
    (ms < 1 << 43 && n < 1 << 20 && (ms, n) != (0, 0)).then_some(ms << 20 | n)
}

/// The entries of an XREAD reply on one stream: (ID, payload field) in order.
/// `Err` names what is malformed.
pub(super) fn parse_xread(v: Value) -> Result<Vec<(String, Vec<u8>)>, String> {
    let bad = |what: &str| Err(format!("xread_bad_{what}"));
    let streams: Vec<(Value, Value)> = match v {
        Value::Nil => return Ok(Vec::new()),
        // RESP2: [[key, entries], …]
        Value::Array(streams) => {
            let mut out = Vec::with_capacity(streams.len());
            for s in streams {
                let Value::Array(pair) = s else {
                    return bad("stream");
                };
                let Ok::<[Value; 2], _>([k, e]) = pair.try_into() else {
                    return bad("stream");
                };
                out.push((k, e));
            }
            out
        }
        // RESP3: {key: entries, …}
        Value::Map(streams) => streams,
        _ => return bad("reply"),
    };
    let mut out = Vec::new();
    for (_, entries) in streams {
        let Value::Array(entries) = entries else {
            return bad("entries");
        };
        for entry in entries {
            let Value::Array(entry) = entry else {
                return bad("entry");
            };
            let Ok::<[Value; 2], _>([id, fields]) = entry.try_into() else {
                return bad("entry");
            };
            let id = match id {
                Value::BulkString(b) => match String::from_utf8(b) {
                    Ok(id) => id,
                    Err(_) => return bad("entry_id"),
                },
                Value::SimpleString(s) => s,
                _ => return bad("entry_id"),
            };
            let Value::Array(fields) = fields else {
                return bad("fields");
            };
            let payload = fields
                .chunks(2)
                .find_map(|kv| match kv {
                    [Value::BulkString(k), Value::BulkString(v)] if k == FIELD.as_bytes() => {
                        Some(v.clone())
                    }
                    _ => None,
                })
                .unwrap_or_default();
            out.push((id, payload));
        }
    }
    Ok(out)
}

/// The device's view of an XADD reply.
fn ack(counter: u64, reply: redis::RedisResult<Value>) -> Decoded {
    let id = match reply {
        Ok(Value::BulkString(b)) => String::from_utf8(b).ok(),
        Ok(Value::SimpleString(s)) => Some(s),
        Ok(_) => None,
        Err(e) => return refused(counter, label("publish", &e.kind())),
    };
    match id.as_deref().and_then(stream_id_seq) {
        Some(seq) => Decoded::Ack { counter, seq },
        None => refused(counter, "publish_bad_entry_id".into()),
    }
}

impl Wire for RedisWire {
    async fn next(&mut self) -> Event {
        self.inbox.next().await
    }

    async fn feed(&mut self, counter: u64, payload: &[u8]) -> Result<(), Failure> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&self.key).arg("*").arg(FIELD).arg(payload);
        let mut conn = self.conn.clone();
        // Sent when `next` first polls it, right after this batch of publishes.
        self.inbox
            .push(async move { ack(counter, cmd.query_async(&mut conn).await) });
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Failure> {
        Ok(())
    }

    async fn close(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn entry_ids_keep_their_order() {
        let a = stream_id_seq("1767225540000-0").unwrap();
        let b = stream_id_seq("1767225540000-1").unwrap();
        let c = stream_id_seq("1767225540001-0").unwrap();
        assert!(0 < a && a < b && b < c);
        assert_eq!(stream_id_seq("0-1"), Some(1));
        assert_eq!(stream_id_seq("5-3"), Some((5 << 20) + 3));
        for bad in ["0-0", "12", "x-1", "1-x", "", "1-1048576"] {
            assert_eq!(stream_id_seq(bad), None, "{bad}");
        }
        assert_eq!(stream_id_seq(&format!("{}-0", 1u64 << 43)), None);
    }

    #[test]
    fn xread_replies_parse() {
        let entry = |id: &[u8], payload: &[u8]| {
            Value::Array(vec![
                bulk(id),
                Value::Array(vec![bulk(b"p"), bulk(payload)]),
            ])
        };
        let resp2 = Value::Array(vec![Value::Array(vec![
            bulk(b"ferry:0"),
            Value::Array(vec![entry(b"1-0", b"\x00\x01"), entry(b"1-1", b"xyz")]),
        ])]);
        assert_eq!(
            parse_xread(resp2).unwrap(),
            [
                ("1-0".to_string(), vec![0, 1]),
                ("1-1".to_string(), b"xyz".to_vec())
            ]
        );
        let resp3 = Value::Map(vec![(
            bulk(b"ferry:0"),
            Value::Array(vec![entry(b"2-0", b"a")]),
        )]);
        assert_eq!(
            parse_xread(resp3).unwrap(),
            [("2-0".to_string(), b"a".to_vec())]
        );
        assert!(parse_xread(Value::Nil).unwrap().is_empty());
        // An entry without the payload field: an empty payload (foreign to the check).
        let other = Value::Array(vec![Value::Array(vec![
            bulk(b"ferry:0"),
            Value::Array(vec![Value::Array(vec![
                bulk(b"3-0"),
                Value::Array(vec![bulk(b"q"), bulk(b"v")]),
            ])]),
        ])]);
        assert_eq!(
            parse_xread(other).unwrap(),
            [("3-0".to_string(), Vec::new())]
        );
        assert_eq!(parse_xread(Value::Int(1)).unwrap_err(), "xread_bad_reply");
        let short = Value::Array(vec![Value::Array(vec![bulk(b"ferry:0")])]);
        assert_eq!(parse_xread(short).unwrap_err(), "xread_bad_stream");
    }

    #[test]
    fn xadd_replies_are_acks() {
        assert_eq!(
            ack(4, Ok(bulk(b"7-2"))),
            Decoded::Ack {
                counter: 4,
                seq: (7 << 20) + 2
            }
        );
        assert_eq!(
            ack(4, Ok(Value::Nil)),
            refused(4, "publish_bad_entry_id".into())
        );
        let err = redis::RedisError::from(std::io::Error::other("down"));
        match ack(5, Err(err)) {
            Decoded::Refused { counter, label } => {
                assert_eq!(counter, Some(5));
                assert!(label.starts_with("publish_"), "{label}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(key(3), "ferry:3");
    }
}
