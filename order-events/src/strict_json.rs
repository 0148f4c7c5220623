//! JSON request bodies parsed strictly: a key repeated within one object is an error naming
//! where it is, instead of the last value silently winning.

use std::cell::RefCell;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Longest key name quoted back in an error.
const MAX_QUOTED_KEY_CHARS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum StrictJsonError {
    #[error("the body is not valid JSON: {0}")]
    Syntax(serde_json::Error),
    /// `field` is the path of the repeated key, as a client writes it (`items[0].sku`).
    #[error("{field} appears more than once")]
    DuplicateKey { field: String },
}

/// Parses a JSON document, refusing any object (at any depth) that names a key twice.
pub fn parse(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let duplicate = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let parsed = Node {
        path: String::new(),
        duplicate: &duplicate,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value));
    match (parsed, duplicate.into_inner()) {
        (_, Some(field)) => Err(StrictJsonError::DuplicateKey { field }),
        (Ok(value), None) => Ok(value),
        (Err(error), None) => Err(StrictJsonError::Syntax(error)),
    }
}

/// One value of the document, at `path`; a repeated key is recorded in `duplicate`.
struct Node<'a> {
    path: String,
    duplicate: &'a RefCell<Option<String>>,
}

impl Node<'_> {
    fn child(&self, path: String) -> Self {
        Node {
            path,
            duplicate: self.duplicate,
        }
    }

    fn field(&self, key: &str) -> String {
        let key: String = key.chars().take(MAX_QUOTED_KEY_CHARS).collect();
        if self.path.is_empty() {
            key
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN or infinity, so every parsed float is a number.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut values = Vec::new();
        while let Some(value) = seq.next_element_seed(self.child(format!("{}[{}]", self.path, values.len())))? {
            values.push(value);
        }
        Ok(Value::Array(values))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let field = self.field(&key);
            if object.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some(field.clone());
                return Err(de::Error::custom(format!("{field} appears more than once")));
            }
            let value = map.next_value_seed(self.child(field))?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn duplicate(text: &str) -> Option<String> {
        match parse(text.as_bytes()) {
            Err(StrictJsonError::DuplicateKey { field }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn parses_what_serde_json_parses() {
        let text = r#"{"a": [1, -2, 3.5, "x", null, true, {"b": {}}], "c": "\u00e9\n"}"#;
        assert_eq!(
            parse(text.as_bytes()).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert_eq!(parse(b"[]").unwrap(), json!([]));
    }

    #[test]
    fn names_a_repeated_key_at_any_depth() {
        assert_eq!(
            duplicate(r#"{"customerId": "a", "customerId": "b"}"#).as_deref(),
            Some("customerId")
        );
        assert_eq!(
            duplicate(r#"{"items": [{"sku": "A"}, {"sku": "A", "sku": "B"}]}"#).as_deref(),
            Some("items[1].sku")
        );
        assert_eq!(
            duplicate(r#"{"x": {"y": [[{"z": 1, "z": 1}]]}}"#).as_deref(),
            Some("x.y[0][0].z")
        );
        // Escapes are decoded before comparing: "\u0061" is "a".
        assert_eq!(duplicate(r#"{"a": 1, "\u0061": 2}"#).as_deref(), Some("a"));
        // The same key in sibling objects is not a repeat.
        assert_eq!(duplicate(r#"{"items": [{"sku": "A"}, {"sku": "B"}]}"#), None);
    }

    #[test]
    fn refuses_syntax_errors_trailing_data_and_bad_utf8() {
        for bad in [
            &b"{"[..],
            b"{} {}",
            b"{\"a\": 1,}",
            b"\"\xff\"",
            br#""\ud800""#,
            b"1e999",
            b"",
        ] {
            assert!(
                matches!(parse(bad), Err(StrictJsonError::Syntax(_))),
                "{:?} was accepted",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
