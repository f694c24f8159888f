//! Reading a JSON-RPC request's envelope in one pass, without building a `serde_json::Value`
//! of the whole body: the message's parts (most of a `SendMessage`'s bytes) are skipped, not
//! copied. Same answers as reading the body into a `Value` and looking fields up: the last of
//! duplicate keys wins, a field of the wrong type counts as absent, and anything that is not
//! one JSON object with `"jsonrpc": "2.0"` and a string `method` is not a request.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::{Call, canonical_method};

/// Reads `body` as a JSON-RPC 2.0 request; `None` when it is not one.
pub(crate) fn read(body: &[u8]) -> Option<Call> {
    let mut de = serde_json::Deserializer::from_slice(body);
    // Only an object is a request (an array is a batch, a scalar is nothing).
    let envelope = de.deserialize_map(Object::<Envelope>(PhantomData)).ok()?;
    de.end().ok()?;
    if envelope.jsonrpc.as_deref() != Some("2.0") {
        return None;
    }
    let name = envelope.method?;
    let (params, message) = (envelope.params, envelope.params_message);
    Some(Call {
        method: canonical_method(&name).map_or(name, str::to_owned),
        id: envelope.id.unwrap_or(Value::Null),
        task_id: params.id.or(params.task_id).or(message.task_id),
        context_id: message.context_id.or(params.context_id),
    })
}

/// The fields of the request object that matter.
#[derive(Default)]
struct Envelope {
    jsonrpc: Option<String>,
    method: Option<String>,
    id: Option<Value>,
    params: Ids,
    params_message: Ids,
}

/// The `id`, `taskId`, `contextId` (and `message`) fields of `params` or of `params.message`;
/// all absent when that value is not an object.
#[derive(Default)]
struct Ids {
    id: Option<String>,
    task_id: Option<String>,
    context_id: Option<String>,
    message: Option<Box<Ids>>,
}

/// An object whose fields matter one by one; the rest are skipped without being copied.
trait Fields: Default {
    /// Reads the value of `key` from `map` (or skips it).
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

impl Fields for Envelope {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "jsonrpc" => self.jsonrpc = map.next_value::<Text>()?.0,
            "method" => self.method = map.next_value::<Text>()?.0,
            // `null` is kept as an id (it is one), as a `Value` lookup would.
            "id" => self.id = Some(map.next_value::<Value>()?),
            "params" => {
                let mut params = map.next_value::<Lenient<Ids>>()?.0;
                self.params_message = params.message.take().map(|m| *m).unwrap_or_default();
                self.params = params;
            }
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl Fields for Ids {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "id" => self.id = map.next_value::<Text>()?.0,
            "taskId" => self.task_id = map.next_value::<Text>()?.0,
            "contextId" => self.context_id = map.next_value::<Text>()?.0,
            "message" => {
                let message = map.next_value::<Lenient<Ids>>()?.0;
                // Only two levels matter (`params`, `params.message`).
                self.message = Some(Box::new(Ids {
                    message: None,
                    ..message
                }));
            }
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// A map key, borrowed from the body when it has no escapes.
struct Key<'a>(std::borrow::Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(v.into()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(v.to_owned().into()))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Visits an object's fields into `T`.
struct Object<T>(PhantomData<T>);

impl<'de, T: Fields> Visitor<'de> for Object<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut fields = T::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            fields.field(&key.0, &mut map)?;
        }
        Ok(fields)
    }
}

/// An object's fields when the value is an object; anything else is skipped and reads as
/// an object with no fields.
struct Lenient<T>(T);

impl<'de, T: Fields> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Skipping(Object::<T>(PhantomData), T::default, true))
            .map(Lenient)
    }
}

/// A string value; any other value is skipped and reads as absent.
struct Text(Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Skipping(Strings, || None, false))
            .map(Text)
    }
}

/// The string visitor of [`Text`].
struct Strings;

impl Visitor<'_> for Strings {
    type Value = Option<String>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<String>, E> {
        Ok(Some(v.to_owned()))
    }
}

/// Visits with `V` the kind of value it expects (a string, or an object when the flag is
/// set) and consumes any other, answering the closure's "absent" for it.
struct Skipping<V, F>(V, F, bool);

impl<'de, V: Visitor<'de>, F: FnOnce() -> V::Value> Visitor<'de> for Skipping<V, F> {
    type Value = V::Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        self.0.visit_str(v).or_else(|_: E| Ok((self.1)()))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<V::Value, A::Error> {
        if self.2 {
            return self.0.visit_map(map);
        }
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok((self.1)())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<V::Value, E> {
        Ok((self.1)())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<V::Value, E> {
        Ok((self.1)())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<V::Value, E> {
        Ok((self.1)())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<V::Value, E> {
        Ok((self.1)())
    }
    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        Ok((self.1)())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<V::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok((self.1)())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reading this module replaces: the whole body into a `Value`, then lookups.
    fn by_value(body: &[u8]) -> Option<Call> {
        let value: Value = serde_json::from_slice(body).ok()?;
        if value.get("jsonrpc")? != "2.0" {
            return None;
        }
        let name = value.get("method")?.as_str()?;
        let params = value.get("params");
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let message = params.and_then(|p| p.get("message"));
        Some(Call {
            method: canonical_method(name).map_or_else(|| name.to_owned(), str::to_owned),
            id: value.get("id").cloned().unwrap_or(Value::Null),
            task_id: text(params.and_then(|p| p.get("id")))
                .or_else(|| text(params.and_then(|p| p.get("taskId"))))
                .or_else(|| text(message.and_then(|m| m.get("taskId")))),
            context_id: text(message.and_then(|m| m.get("contextId")))
                .or_else(|| text(params.and_then(|p| p.get("contextId")))),
        })
    }

    #[test]
    fn answers_as_reading_the_whole_body_into_a_value_would() {
        let bodies: &[&str] = &[
            r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"role":"user","parts":[{"kind":"text","text":"hi"}],"taskId":"t1","contextId":"c1"}}}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"message/send","params":{"message":{"contextId":"c"},"contextId":"p"}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"tasks/get","params":{"id":"t9"}}"#,
            r#"{"jsonrpc":"2.0","method":"GetTask","params":{"id":7,"taskId":"t2"}}"#,
            r#"{"jsonrpc":"2.0","id":{"x":[1,2]},"method":"CancelTask","params":[1,2,3]}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":"text"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":[{"taskId":"x"}]}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"taskId":{"a":1},"contextId":true}}}"#,
            // Duplicate keys: the last wins.
            r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","method":"CancelTask"}"#,
            r#"{"jsonrpc":"2.0","params":{"id":"a"},"params":{"taskId":"b"},"method":"GetTask"}"#,
            // Escaped keys and values.
            r#"{"json\u0072pc":"2.0","m\u0065thod":"Send\u004dessage","params":{"message":{"task\u0049d":"t\"q"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"Custom/Thing","params":{}}"#,
            // Not requests.
            r#"{"jsonrpc":"1.0","id":1,"method":"SendMessage"}"#,
            r#"{"jsonrpc":2.0,"id":1,"method":"SendMessage"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"SendMessage"}]"#,
            r#""SendMessage""#,
            r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage"} trailing"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage""#,
            r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"parts":[}}}"#,
            "",
            "null",
        ];
        for body in bodies {
            assert_eq!(read(body.as_bytes()), by_value(body.as_bytes()), "{body}");
        }
    }
}
