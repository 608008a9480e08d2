//! Exactly-once effects where the output is a stream in the same hash slot.
//!
//! [`ack_and_produce`] acks an input and appends its output in one script:
//! a consumer killed at any point either did both or neither, and a
//! redelivered input whose output exists is recognized (it is no longer
//! pending) and produces nothing. [`send_once`] appends at most once per
//! dedupe key within a window.
//!
//! Both require the keys to share a hash slot, also on a single server, so
//! code that works today keeps working on Redis Cluster: put a hash tag in
//! the names, e.g. `{orders}.in` and `{orders}.out`.

use std::time::Duration;

use redis::Value;

use crate::conn::Connector;
use crate::consumer::Delivery;
use crate::error::{Error, Result};
use crate::explain;
use crate::scripts;
use crate::types::{key_slot, Bytes, StreamId, StreamKey};

fn same_slot(a: &str, b: &str) -> Result<()> {
    if key_slot(a) == key_slot(b) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{a:?} and {b:?} are in different hash slots ({} and {}); give both the same hash tag, \
             e.g. {{orders}}.in and {{orders}}.out",
            key_slot(a),
            key_slot(b)
        )))
    }
}

/// Acks `input` and appends `fields` to `output` in one script. Returns
/// the output's ID, or `None` when the input was no longer pending (it was
/// processed already, e.g. by the consumer that reclaimed it): then
/// nothing is appended.
///
/// ```no_run
/// # async fn f(d: streamkeeper::Delivery) -> streamkeeper::Result<()> {
/// use streamkeeper::{exactly_once::ack_and_produce, fields, StreamKey};
/// let out = StreamKey::new("{orders}.billed")?;
/// ack_and_produce(&d, &out, &fields([("total", "12.50")])).await?;
/// # Ok(()) }
/// ```
pub async fn ack_and_produce(
    input: &Delivery,
    output: &StreamKey,
    fields: &[(Bytes, Bytes)],
) -> Result<Option<StreamId>> {
    if fields.is_empty() {
        return Err(Error::InvalidInput(
            "an output entry needs at least one field".into(),
        ));
    }
    let stream = input.stream();
    same_slot(stream.as_str(), output.as_str())?;
    AckAndProduce {
        input,
        output,
        fields,
    }
    .invoke()
    .await
}

/// `lua/ack_and_produce.lua`: its KEYS and ARGV, and its reply.
struct AckAndProduce<'a> {
    input: &'a Delivery,
    output: &'a StreamKey,
    fields: &'a [(Bytes, Bytes)],
}

impl AckAndProduce<'_> {
    /// The output's ID, or `None` when the input was no longer pending.
    async fn invoke(&self) -> Result<Option<StreamId>> {
        let stream = self.input.stream();
        let mut invocation = scripts::ACK_AND_PRODUCE.key(stream);
        invocation
            .key(self.output)
            .key(crate::keys::StreamKeys::attempts(stream))
            .arg(self.input.group())
            .arg(self.input.id());
        for (k, v) in self.fields {
            invocation.arg(k.as_slice()).arg(v.as_slice());
        }
        let mut conn = self.input.connector().shared();
        let r: redis::RedisResult<Value> = invocation.invoke_async(&mut conn).await;
        match r {
            Ok(Value::BulkString(b)) => Ok(Some(StreamId::from_bytes(&b)?)),
            Ok(_) => Ok(None),
            Err(e) => {
                Err(explain::explain(&mut conn, self.output, "ack-and-produce script", e).await)
            }
        }
    }
}

/// Appends `fields` to `stream` unless `dedupe_key` was used within
/// `window`. Returns `(true, new id)` or `(false, id of the earlier send)`.
/// The dedupe key lives at `{S}:once:<dedupe_key>`.
pub async fn send_once(
    connector: &Connector,
    stream: &StreamKey,
    dedupe_key: &str,
    window: Duration,
    fields: &[(Bytes, Bytes)],
) -> Result<(bool, StreamId)> {
    if fields.is_empty() {
        return Err(Error::InvalidInput(
            "an entry needs at least one field".into(),
        ));
    }
    SendOnce {
        stream,
        dedupe_key,
        window,
        fields,
    }
    .invoke(connector)
    .await
}

/// `lua/send_once.lua`: its KEYS and ARGV, and its reply.
struct SendOnce<'a> {
    stream: &'a StreamKey,
    dedupe_key: &'a str,
    window: Duration,
    fields: &'a [(Bytes, Bytes)],
}

impl SendOnce<'_> {
    /// `(true, new id)` or `(false, id of the earlier send)`.
    async fn invoke(&self, connector: &Connector) -> Result<(bool, StreamId)> {
        let mut invocation = scripts::SEND_ONCE.key(self.stream);
        invocation
            .key(crate::keys::StreamKeys::once(self.stream, self.dedupe_key))
            .arg(
                u64::try_from(self.window.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            );
        for (k, v) in self.fields {
            invocation.arg(k.as_slice()).arg(v.as_slice());
        }
        let mut conn = connector.shared();
        let r: redis::RedisResult<(i64, Vec<u8>)> = invocation.invoke_async(&mut conn).await;
        match r {
            Ok((sent, id)) => Ok((sent == 1, StreamId::from_bytes(&id)?)),
            Err(e) => Err(explain::explain(&mut conn, self.stream, "send-once script", e).await),
        }
    }
}
