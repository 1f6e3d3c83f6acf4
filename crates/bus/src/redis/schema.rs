//! What the Redis engine stores and sends, in one place.
//!
//! Per topic `T`, with every key sharing the hash tag `{T}` so a Redis
//! Cluster keeps them on one shard:
//!
//! - `<prefix>:{T}:meta`: hash with `epoch` (base-36 text, created with the
//!   history) and `offset` (the last offset handed out);
//! - `<prefix>:{T}:stream`: stream of events, entry id `<offset>-0`, fields
//!   `type` and `data`; trimmed with `MAXLEN ~` and given the same TTL as
//!   the meta key, both refreshed on each publish;
//! - `<prefix>:{T}:chan`: pub/sub channel carrying each event once stored;
//! - `<prefix>:{T}:keys`: hash of idempotency key → `<epoch> <offset>
//!   <request digest>` (only once a publish carried a key);
//! - `<prefix>:{T}:key-ages`: sorted set of the same keys scored by the
//!   Unix milliseconds (Redis's clock) of their first publish, for eviction
//!   by age and by count. Both expire one window after the last keyed
//!   publish, and a new history (the meta key gone) starts without them.
//!
//! A pub/sub message is `<epoch>\n<offset>\n<type length>\n<type><data>`:
//! epoch and offset cannot contain a newline, and the byte length of the
//! type makes the split exact whatever the type and data contain, so no
//! input can make a message decode as another event.
//!
//! Nothing here trusts what it reads: data written by an older version or by
//! hand decodes to [`Error::Corrupt`], never to a panic or a wrong event.

use ::redis::Value;
use shared_types::{Epoch, Position};

use crate::error::Error;
use crate::idempotency::Published;

/// Reads a topic in one atomic step: its meta (epoch, offset), the first
/// retained stream entry, and up to `count` entries from an id on, so all
/// three describe the same moment.
///
/// KEYS: meta, stream. ARGV: first id to read (`<offset>-0`), count.
/// Returns `{meta, first, range}` as HMGET and XRANGE would.
///
/// A script rather than MULTI/EXEC: a cluster connection follows a
/// `MOVED` or `ASK` for a script (one command routed by its keys) but not
/// for the commands inside a transaction, which come back as a
/// `Transaction aborted` error after a slot moved or a failover, until
/// something else refreshes the slot map.
pub(crate) const SNAPSHOT_SCRIPT: &str = r#"
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local range = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
return {meta, first, range}
"#;

/// The Lua script that publishes one event. Redis runs a script atomically,
/// so the event is stored and broadcast, or neither.
///
/// It reads and checks everything before its first write: Redis does not
/// roll a script back when a command fails halfway, so an error must happen
/// before anything changed. The last check is the first write: XADD with
/// the explicit id refuses an id at or below the stream's newest, which
/// catches a stream ahead of its meta without reading the stream first.
/// Seven commands per publish without a key: TIME, HMGET, XADD, HSET, two
/// PEXPIREs, PUBLISH.
///
/// Before anything else it compares Redis's clock with the caller's
/// deadline: a script that waited (in the socket of a frozen Redis, or
/// behind a long backlog) until after the caller gave up and answered 503
/// must not store the event then. It answers `EXPIRED` and changes nothing.
///
/// With an idempotency key (the two blocks marked `idempotency`), it looks
/// the key up among the checks, before any write: a key recorded within the
/// window answers `{epoch, offset, 'replayed'}` when its digest matches,
/// `{'key-reused'}` when not, and nothing is published or stored (in
/// cluster mode a replay writes the key's record again, unchanged: see
/// there). A new key
/// is recorded after the event (HSET, ZADD), keys past the window or past
/// the count are dropped oldest first (a bounded number per publish), and
/// both key sets get the window as their TTL: up to eight commands more,
/// plus two for each key dropped.
///
/// In cluster mode the channel argument is empty and the script publishes
/// nothing: the store broadcasts with `SPUBLISH` itself, once `WAIT` has
/// seen the event on a replica (see `Store::publish`). One script text for
/// both modes, so both run the same checks and writes.
///
/// KEYS: meta, stream, keys, key-ages. ARGV: epoch candidate (used only
/// when the topic has no epoch yet; base-36 text because Lua numbers are
/// doubles), event type, data, approximate MAXLEN, TTL in milliseconds (0:
/// no expiry), channel, deadline in Unix milliseconds by Redis's clock (0:
/// none), then, with a key: the key, the request digest, the window in
/// milliseconds, the most keys per topic.
/// Returns `{epoch, offset}` as text for the same reason.
pub(crate) const PUBLISH_SCRIPT: &str = r#"
local meta, stream = KEYS[1], KEYS[2]
local deadline = tonumber(ARGV[7]) or 0
local key = ARGV[8]
local now = 0
if deadline > 0 or key then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
if deadline > 0 and now > deadline then
  return redis.error_reply('EXPIRED publish reached Redis after its deadline; nothing stored')
end
local state = redis.call('HMGET', meta, 'epoch', 'offset')
local epoch, offset = state[1], state[2]
local fresh = not epoch
local next_offset = 1
if fresh then
  -- No epoch: a new topic, or its meta key expired or was evicted on its
  -- own. Whatever the stream still holds belongs to an epoch no reader can
  -- resume from any more, so a new history starts from scratch.
  redis.call('DEL', meta, stream, KEYS[3], KEYS[4])
  epoch = ARGV[1]
else
  if #epoch == 0 or #epoch > 13 or string.find(epoch, '[^0-9a-z]')
      or not string.find(epoch, '[1-9a-z]')
      or (#epoch == 13 and epoch > '3w5e11264sgsf') then
    return redis.error_reply('CORRUPT ' .. meta .. ' has an unreadable epoch')
  end
  if offset and not string.find(offset, '^%d+$') then
    return redis.error_reply('CORRUPT ' .. meta .. ' has an unreadable offset')
  end
  -- Offsets beyond 2^53 would lose precision in a Lua number.
  if offset and #offset > 15 then
    return redis.error_reply('CORRUPT ' .. meta .. ' offset is out of range')
  end
  next_offset = (tonumber(offset) or 0) + 1
end
-- idempotency: a key seen within the window replays or is refused here,
-- before the first write. A fresh history has no keys.
if key and not fresh then
  local first = redis.call('ZSCORE', KEYS[4], key)
  local record = redis.call('HGET', KEYS[3], key)
  if first and record and now - tonumber(first) < tonumber(ARGV[10]) then
    local e, o, digest = string.match(record, '^([0-9a-z]+) (%d+) (%x+)$')
    if not e then
      return redis.error_reply('CORRUPT ' .. KEYS[3] .. ' has an unreadable record')
    end
    if digest == ARGV[9] then
      if #ARGV[6] == 0 then
        -- Cluster mode: the store answers a replay, as a new event, only
        -- once WAIT saw a replica hold it, and WAIT counts what this
        -- connection wrote. The record, written again as it is, comes
        -- after the event in the replication stream.
        redis.call('HSET', KEYS[3], key, record)
      end
      return {e, o, 'replayed'}
    end
    return {'key-reused'}
  end
end
offset = string.format('%d', next_offset)
-- The first write. XADD itself refuses an id at or below the stream's
-- newest entry, which happens only when meta and stream disagree: then
-- nothing has been written and publishing must not go on.
local added = redis.pcall('XADD', stream, 'MAXLEN', '~', ARGV[4], offset .. '-0',
  'type', ARGV[2], 'data', ARGV[3])
if type(added) == 'table' and added.err then
  if string.find(added.err, 'equal or smaller', 1, true) then
    return redis.error_reply('CORRUPT ' .. stream .. ' is ahead of ' .. meta)
  end
  return added
end
if fresh then
  redis.call('HSET', meta, 'epoch', epoch, 'offset', offset)
else
  redis.call('HSET', meta, 'offset', offset)
end
if tonumber(ARGV[5]) > 0 then
  redis.call('PEXPIRE', meta, ARGV[5])
  redis.call('PEXPIRE', stream, ARGV[5])
else
  redis.call('PERSIST', meta)
  redis.call('PERSIST', stream)
end
-- idempotency: record the key, then drop what the window or the count no
-- longer allows, oldest first, never the key just recorded; at most 100
-- keys per publish, so one publish after a long lull or a lowered cap does
-- bounded work (the rest go with the next ones, or with the TTL).
if key then
  local keys, ages, window = KEYS[3], KEYS[4], tonumber(ARGV[10])
  redis.call('HSET', keys, key, epoch .. ' ' .. offset .. ' ' .. ARGV[9])
  redis.call('ZADD', ages, now, key)
  local drop = redis.call('ZRANGEBYSCORE', ages, '-inf', '(' .. (now - window + 1), 'LIMIT', 0, 100)
  local over = math.min(redis.call('ZCARD', ages) - #drop - tonumber(ARGV[11]), 100 - #drop)
  if over > 0 then
    for _, k in ipairs(redis.call('ZRANGE', ages, #drop, #drop + over)) do
      if k ~= key and over > 0 then
        drop[#drop + 1] = k
        over = over - 1
      end
    end
  end
  if #drop > 0 then
    redis.call('ZREM', ages, unpack(drop))
    redis.call('HDEL', keys, unpack(drop))
  end
  redis.call('PEXPIRE', keys, window)
  redis.call('PEXPIRE', ages, window)
end
if #ARGV[6] > 0 then
  redis.call('PUBLISH', ARGV[6], epoch .. '\n' .. offset .. '\n' .. #ARGV[2] .. '\n' .. ARGV[2] .. ARGV[3])
end
return {epoch, offset}
"#;

/// Names of every key and channel the engine uses, under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// Namespaces this deployment's data (and each test's) in a shared Redis.
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    pub(crate) fn meta(&self, topic: &str) -> String {
        format!("{}:{{{topic}}}:meta", self.prefix)
    }

    pub(crate) fn stream(&self, topic: &str) -> String {
        format!("{}:{{{topic}}}:stream", self.prefix)
    }

    pub(crate) fn idempotency_keys(&self, topic: &str) -> String {
        format!("{}:{{{topic}}}:keys", self.prefix)
    }

    pub(crate) fn idempotency_ages(&self, topic: &str) -> String {
        format!("{}:{{{topic}}}:key-ages", self.prefix)
    }

    pub(crate) fn channel(&self, topic: &str) -> String {
        format!("{}:{{{topic}}}:chan", self.prefix)
    }

    /// The topic a channel of ours carries, or `None` for any other channel.
    pub(crate) fn topic_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:chan")
    }

    /// A channel private to one relay, used to prove that pub/sub delivers.
    pub(crate) fn health_channel(&self, token: &str) -> String {
        format!("{}:health:{token}", self.prefix)
    }
}

/// One event as pub/sub carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) position: Position,
    pub(crate) event_type: String,
    pub(crate) data: String,
}

/// Encodes a message exactly as the publish script does: the writer in
/// cluster mode, where the store broadcasts after replication.
pub(crate) fn encode_message(position: Position, event_type: &str, data: &str) -> Vec<u8> {
    format!(
        "{}\n{}\n{}\n{event_type}{data}",
        position.epoch,
        position.offset,
        event_type.len()
    )
    .into_bytes()
}

/// Decodes a pub/sub payload; see the module docs for the layout.
pub(crate) fn decode_message(payload: &[u8]) -> Result<Message, Error> {
    let corrupt = |why: &str| Error::Corrupt(format!("pub/sub message {why}"));
    let mut fields = payload.splitn(4, |b| *b == b'\n');
    let mut field = |name: &str| {
        fields
            .next()
            .ok_or_else(|| corrupt(&format!("has no {name}")))
    };
    let epoch = parse_epoch(field("epoch")?).ok_or_else(|| corrupt("has an unreadable epoch"))?;
    let offset = parse_u64(field("offset")?).ok_or_else(|| corrupt("has an unreadable offset"))?;
    let type_len = parse_u64(field("type length")?)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| corrupt("has an unreadable type length"))?;
    let rest = field("body")?;
    if type_len > rest.len() {
        return Err(corrupt("is shorter than its type length"));
    }
    let (event_type, data) = rest.split_at(type_len);
    Ok(Message {
        position: Position::new(epoch, offset),
        event_type: utf8(event_type).ok_or_else(|| corrupt("has a type that is not UTF-8"))?,
        data: utf8(data).ok_or_else(|| corrupt("has data that is not UTF-8"))?,
    })
}

/// A topic's meta hash as `HMGET meta epoch offset` returns it: `None` when
/// the topic has no epoch, i.e. no history a reader could resume.
pub(crate) fn parse_meta(reply: Value) -> Result<Option<Position>, Error> {
    let corrupt = |why: &str| Error::Corrupt(format!("topic meta {why}"));
    let Value::Array(fields) = reply else {
        return Err(corrupt("is not a field list"));
    };
    let [epoch, offset] =
        <[Value; 2]>::try_from(fields).map_err(|_| corrupt("has the wrong field count"))?;
    // An offset without an epoch is not a history: the next publish starts
    // a new one (see the script), so readers treat it as empty too.
    let Some(epoch) = bytes(epoch).map_err(|_| corrupt("epoch is not text"))? else {
        return Ok(None);
    };
    let epoch = parse_epoch(&epoch).ok_or_else(|| corrupt("has an unreadable epoch"))?;
    let offset = bytes(offset)
        .map_err(|_| corrupt("offset is not text"))?
        .ok_or_else(|| corrupt("has an epoch but no offset"))?;
    let offset = parse_u64(&offset).ok_or_else(|| corrupt("has an unreadable offset"))?;
    Ok(Some(Position::new(epoch, offset)))
}

/// The publish script's reply: `{epoch, offset}` for a stored event,
/// `{epoch, offset, 'replayed'}` for a key's replay, `{'key-reused'}` for a
/// key used with another request.
pub(crate) fn parse_published(reply: Value) -> Result<Published, Error> {
    let corrupt = || Error::Corrupt("publish script returned an unexpected reply".to_owned());
    let Value::Array(mut fields) = reply else {
        return Err(corrupt());
    };
    let mark = match fields.len() {
        1 | 3 => fields.pop().and_then(|mark| bytes(mark).ok().flatten()),
        2 => None,
        _ => return Err(corrupt()),
    };
    if fields.is_empty() {
        return match mark.as_deref() {
            Some(b"key-reused") => Ok(Published::KeyReused),
            _ => Err(corrupt()),
        };
    }
    let [epoch, offset] = <[Value; 2]>::try_from(fields).map_err(|_| corrupt())?;
    let epoch = bytes(epoch)
        .ok()
        .flatten()
        .and_then(|e| parse_epoch(&e))
        .ok_or_else(corrupt)?;
    let offset = bytes(offset)
        .ok()
        .flatten()
        .and_then(|o| parse_u64(&o))
        .ok_or_else(corrupt)?;
    let position = Position::new(epoch, offset);
    match mark.as_deref() {
        None => Ok(Published::Stored(position)),
        Some(b"replayed") => Ok(Published::Replayed(position)),
        Some(_) => Err(corrupt()),
    }
}

/// One stream entry as XRANGE returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) offset: u64,
    pub(crate) event_type: String,
    pub(crate) data: String,
}

/// The entries of an XRANGE reply, oldest first.
pub(crate) fn parse_entries(reply: Value) -> Result<Vec<Entry>, Error> {
    match reply {
        Value::Array(entries) => entries.into_iter().map(parse_entry).collect(),
        Value::Nil => Ok(Vec::new()),
        _ => Err(Error::Corrupt("stream range is not a list".to_owned())),
    }
}

fn parse_entry(entry: Value) -> Result<Entry, Error> {
    let corrupt = |why: String| Error::Corrupt(format!("stream entry {why}"));
    let Value::Array(parts) = entry else {
        return Err(corrupt("is not an [id, fields] pair".to_owned()));
    };
    let [id, fields] = <[Value; 2]>::try_from(parts)
        .map_err(|_| corrupt("is not an [id, fields] pair".to_owned()))?;
    let id = bytes(id)
        .ok()
        .flatten()
        .ok_or_else(|| corrupt("has no id".to_owned()))?;
    let id_text = String::from_utf8_lossy(&id).into_owned();
    // Our ids are `<offset>-0`; anything else was not written by us.
    let offset = id
        .strip_suffix(b"-0")
        .and_then(parse_u64)
        .filter(|offset| *offset > 0)
        .ok_or_else(|| corrupt(format!("{id_text} is not an event id")))?;
    let pairs: Vec<(Value, Value)> = match fields {
        Value::Array(flat) => {
            if flat.len() % 2 != 0 {
                return Err(corrupt(format!("{id_text} has an odd field list")));
            }
            let mut flat = flat.into_iter();
            std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect()
        }
        // RESP3 connections may answer with a map.
        Value::Map(pairs) => pairs,
        _ => return Err(corrupt(format!("{id_text} has no field list"))),
    };
    let (mut event_type, mut data) = (None, None);
    for (name, value) in pairs {
        let slot = match bytes(name).ok().flatten().as_deref() {
            Some(b"type") => &mut event_type,
            Some(b"data") => &mut data,
            // Extra fields from a newer version are tolerated.
            _ => continue,
        };
        *slot = bytes(value).ok().flatten().and_then(|v| utf8(&v));
    }
    Ok(Entry {
        offset,
        event_type: event_type.ok_or_else(|| corrupt(format!("{id_text} has no readable type")))?,
        data: data.ok_or_else(|| corrupt(format!("{id_text} has no readable data")))?,
    })
}

/// The bytes of a string reply; `Ok(None)` for nil, `Err` for other types.
fn bytes(value: Value) -> Result<Option<Vec<u8>>, ()> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => Ok(Some(bytes)),
        Value::SimpleString(text) => Ok(Some(text.into_bytes())),
        Value::Int(n) => Ok(Some(n.to_string().into_bytes())),
        _ => Err(()),
    }
}

fn utf8(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

/// A stored epoch; [`Epoch::NONE`] is never stored, so it counts as corrupt.
fn parse_epoch(text: &[u8]) -> Option<Epoch> {
    Epoch::parse(std::str::from_utf8(text).ok()?).filter(|epoch| !epoch.is_none())
}

/// Plain decimal digits only: `u64::from_str` would also take a `+`.
fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn keys_share_the_topic_hash_tag_and_channels_map_back_to_topics() {
        let keys = Keys::new("es");
        assert_eq!(keys.meta("a.b"), "es:{a.b}:meta");
        assert_eq!(keys.stream("a.b"), "es:{a.b}:stream");
        assert_eq!(keys.channel("a.b"), "es:{a.b}:chan");
        assert_eq!(keys.idempotency_keys("a.b"), "es:{a.b}:keys");
        assert_eq!(keys.idempotency_ages("a.b"), "es:{a.b}:key-ages");
        assert_eq!(keys.topic_of("es:{a.b}:chan"), Some("a.b"));
        assert_eq!(keys.topic_of("es:{a}b}:chan"), Some("a}b"));
        assert_eq!(keys.topic_of("other:{a}:chan"), None);
        assert_eq!(keys.topic_of(&keys.health_channel("x")), None);
    }

    #[test]
    fn messages_round_trip_whatever_type_and_data_contain() {
        let position = Position::new(Epoch(12345), 42);
        for (event_type, data) in [
            ("message", "hi"),
            ("a\nb", "\n\nc\r\n"),
            ("", ""),
            ("t", "é\0x"),
        ] {
            let decoded = decode_message(&encode_message(position, event_type, data)).unwrap();
            assert_eq!(
                decoded,
                Message {
                    position,
                    event_type: event_type.into(),
                    data: data.into()
                }
            );
        }
    }

    #[test]
    fn malformed_messages_are_corrupt_not_panics() {
        let bad: [&[u8]; 10] = [
            b"",
            b"abc",
            b"abc\n1",
            b"abc\n1\n3",
            b"abc\n1\n9\nshort",
            b"ABC\n1\n1\nxy",
            b"0\n1\n1\nxy",
            b"abc\n-1\n1\nxy",
            b"abc\n1\n+1\nxy",
            b"abc\n1\n1\n\xff\xfe",
        ];
        for payload in bad {
            assert!(
                matches!(decode_message(payload), Err(Error::Corrupt(_))),
                "{payload:?}"
            );
        }
    }

    #[test]
    fn meta_without_epoch_is_no_history_and_bad_meta_is_corrupt() {
        let meta = |e: Value, o: Value| parse_meta(Value::Array(vec![e, o]));
        assert_eq!(meta(Value::Nil, Value::Nil).unwrap(), None);
        assert_eq!(meta(Value::Nil, bulk("4")).unwrap(), None);
        assert_eq!(
            meta(bulk("z"), bulk("4")).unwrap(),
            Some(Position::new(Epoch(35), 4))
        );
        for (epoch, offset) in [
            (bulk("Z"), bulk("1")),
            (bulk("0"), bulk("1")),
            (bulk("z"), Value::Nil),
            (bulk("z"), bulk("x")),
        ] {
            assert!(matches!(meta(epoch, offset), Err(Error::Corrupt(_))));
        }
        assert!(matches!(parse_meta(Value::Int(3)), Err(Error::Corrupt(_))));
    }

    #[test]
    fn publish_replies_are_stored_replayed_or_key_reused_and_nothing_else() {
        let reply = |fields: &[&str]| {
            parse_published(Value::Array(fields.iter().map(|f| bulk(f)).collect()))
        };
        let position = Position::new(Epoch(35), 4);
        assert_eq!(reply(&["z", "4"]).unwrap(), Published::Stored(position));
        assert_eq!(
            reply(&["z", "4", "replayed"]).unwrap(),
            Published::Replayed(position)
        );
        assert_eq!(reply(&["key-reused"]).unwrap(), Published::KeyReused);
        for bad in [
            &[][..],
            &["z"],
            &["replayed"],
            &["z", "4", "other"],
            &["z", "x", "replayed"],
            &["z", "4", "replayed", "x"],
        ] {
            assert!(matches!(reply(bad), Err(Error::Corrupt(_))), "{bad:?}");
        }
    }

    #[test]
    fn entries_need_our_id_shape_and_both_fields() {
        let good = entry(
            "7-0",
            &["type", "message", "data", "hi", "extra", "ignored"],
        );
        assert_eq!(
            parse_entries(Value::Array(vec![good])).unwrap(),
            [Entry {
                offset: 7,
                event_type: "message".into(),
                data: "hi".into()
            }]
        );
        let bad = [
            entry("7-1", &["type", "m", "data", "d"]),
            entry("0-0", &["type", "m", "data", "d"]),
            entry("x-0", &["type", "m", "data", "d"]),
            entry("7-0", &["foo", "bar"]),
            entry("7-0", &["type", "m", "data"]),
            Value::Array(vec![bulk("7-0")]),
            Value::Int(1),
        ];
        for value in bad {
            assert!(
                matches!(
                    parse_entries(Value::Array(vec![value.clone()])),
                    Err(Error::Corrupt(_))
                ),
                "{value:?}"
            );
        }
    }
}
