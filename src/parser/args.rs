//! The arguments of an event or an acknowledgement.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::parser::packet::{attachment_of, placeholder};

/// The arguments of an event or an ack: JSON values, with binary attachments referenced from inside
/// them by `{"_placeholder":true,"num":i}` objects (at any depth), as on the wire.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Args {
    /// The argument values, in order (the event name is not among them).
    pub values: Vec<Value>,
    /// The binary attachments; placeholder `num` indexes this list.
    pub binary: Vec<Bytes>,
}

impl Args {
    /// No arguments.
    pub fn new() -> Self {
        Self::default()
    }

    /// One argument, serialized with serde. A value that cannot be serialized becomes `null`.
    pub fn one<T: Serialize>(value: T) -> Self {
        Self::new().arg(value)
    }

    /// One argument, serialized with serde; a value that cannot be serialized is an error.
    pub fn try_one<T: Serialize>(value: T) -> Result<Self, serde_json::Error> {
        Ok(Self {
            values: vec![serde_json::to_value(value)?],
            binary: Vec::new(),
        })
    }

    /// Appends an argument, serialized with serde (a value that cannot be serialized becomes `null`).
    #[must_use]
    pub fn arg<T: Serialize>(mut self, value: T) -> Self {
        self.values
            .push(serde_json::to_value(value).unwrap_or(Value::Null));
        self
    }

    /// Appends a binary argument (sent as an attachment).
    #[must_use]
    pub fn binary_arg(mut self, bytes: impl Into<Bytes>) -> Self {
        let value = self.attach(bytes);
        self.values.push(value);
        self
    }

    /// Registers an attachment and returns the placeholder to put anywhere inside an argument.
    pub fn attach(&mut self, bytes: impl Into<Bytes>) -> Value {
        self.binary.push(bytes.into());
        placeholder(self.binary.len() - 1)
    }

    /// The attachment a placeholder value stands for.
    pub fn binary_of(&self, value: &Value) -> Option<&Bytes> {
        attachment_of(value, &self.binary)
    }

    /// The number of arguments.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Argument `i`, deserialized.
    pub fn get<T: DeserializeOwned>(&self, i: usize) -> Result<T, serde_json::Error> {
        T::deserialize(self.values.get(i).unwrap_or(&Value::Null))
    }

    /// All the arguments deserialized at once, as a tuple or a sequence: `args.parse::<(String, u32)>()`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_value(Value::Array(self.values.clone()))
    }

    /// The wire data of an event: `[name, ...values]`.
    pub(crate) fn to_event_data(&self, event: &str) -> Value {
        let mut items = Vec::with_capacity(self.values.len() + 1);
        items.push(Value::String(event.to_owned()));
        items.extend(self.values.iter().cloned());
        Value::Array(items)
    }

    /// Args from a decoded packet's data array (the event name already removed, for events).
    pub(crate) fn from_wire(values: Vec<Value>, binary: Vec<Bytes>) -> Self {
        Self { values, binary }
    }
}

impl From<Value> for Args {
    /// One JSON argument.
    fn from(value: Value) -> Self {
        Self {
            values: vec![value],
            binary: Vec::new(),
        }
    }
}

impl From<Vec<Value>> for Args {
    /// Several JSON arguments.
    fn from(values: Vec<Value>) -> Self {
        Self {
            values,
            binary: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_and_reads_arguments() {
        let mut args = Args::new().arg("a").arg(2).binary_arg(vec![1u8, 2]);
        let nested = args.attach(Bytes::from_static(b"xyz"));
        args = args.arg(json!({ "file": nested }));
        assert_eq!(args.len(), 4);
        assert_eq!(args.get::<String>(0).unwrap(), "a");
        assert_eq!(args.get::<u32>(1).unwrap(), 2);
        assert_eq!(args.binary_of(&args.values[2]).unwrap().as_ref(), &[1, 2]);
        assert_eq!(
            args.binary_of(&args.values[3]["file"]).unwrap().as_ref(),
            b"xyz"
        );
        let (a, b): (String, u32) = Args::new().arg("x").arg(7).parse().unwrap();
        assert_eq!((a.as_str(), b), ("x", 7));
        assert_eq!(Args::one(5).to_event_data("ev"), json!(["ev", 5]),);
    }
}
