//! The analytics updates and their validation.
//!
//! An update is `{type, organizationId, data, timestamp}`; `type` is `message`, `sentiment` or
//! `metrics`, each with its own `data` schema. Validation names the offending field so that an API
//! client can fix its request.
//!
//! An event may say when it happened in `timestamp`, at the top level or inside `data` (where the
//! Node services this replaces put it: `{..., timestamp: new Date()}`, an ISO-8601 string once
//! serialised), as an ISO-8601 / RFC 3339 date-time with a zone or as milliseconds since the epoch.
//! The update pushed to dashboards has one shape whatever was posted: `timestamp` at the top level,
//! in milliseconds, and no `timestamp` inside `data`.

use serde_json::{Map, Value, json};

/// The kinds of update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UpdateType {
    /// A conversation message.
    Message,
    /// A sentiment score for a message.
    Sentiment,
    /// Aggregate metrics.
    Metrics,
}

impl UpdateType {
    /// All kinds.
    pub const ALL: [Self; 3] = [Self::Message, Self::Sentiment, Self::Metrics];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Sentiment => "sentiment",
            Self::Metrics => "metrics",
        }
    }

    /// The kind named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// A validated update.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The kind.
    pub kind: UpdateType,
    /// The organisation it belongs to.
    pub organization_id: String,
    /// The validated data object.
    pub data: Value,
    /// Milliseconds since the Unix epoch.
    pub timestamp: u64,
}

impl Update {
    /// The payload of the `analytics:update` event.
    pub fn to_json(&self) -> Value {
        json!({
            "type": self.kind.as_str(),
            "organizationId": self.organization_id,
            "data": self.data,
            "timestamp": self.timestamp,
        })
    }
}

/// A validation failure: the field (a path such as `events[2].data.role`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The offending field.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Invalid {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    fn within(self, prefix: &str) -> Self {
        Self {
            field: format!("{prefix}.{}", self.field),
            ..self
        }
    }
}

/// The largest accepted organisation id, in bytes.
pub const MAX_ORG_ID_LEN: usize = 128;

/// Checks an organisation id: 1–128 characters of `[A-Za-z0-9_.-]` (no `:`, which separates the
/// parts of room names).
pub fn valid_org_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ORG_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Validates one event object `{type, data, timestamp?}` posted for organisation `org`.
pub fn validate_event(org: &str, event: &Value, now_ms: u64) -> Result<Update, Invalid> {
    let obj = event
        .as_object()
        .ok_or_else(|| Invalid::new("event", "must be an object"))?;
    let kind = match obj.get("type") {
        Some(Value::String(t)) => UpdateType::parse(t)
            .ok_or_else(|| Invalid::new("type", "must be one of message, sentiment, metrics"))?,
        _ => return Err(Invalid::new("type", "is required and must be a string")),
    };
    if let Some(claimed) = obj.get("organizationId") {
        if claimed.as_str() != Some(org) {
            return Err(Invalid::new(
                "organizationId",
                "must match the organisation in the URL",
            ));
        }
    }
    let mut data = obj
        .get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| Invalid::new("data", "is required and must be an object"))?
        .clone();
    let inner = match data.remove("timestamp") {
        None | Some(Value::Null) => None,
        Some(v) => Some(time_of(&v).map_err(|e| e.within("data"))?),
    };
    let outer = match obj.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(v) => Some(time_of(v)?),
    };
    let timestamp = match (outer, inner) {
        (Some(a), Some(b)) if a != b => {
            return Err(Invalid::new(
                "data.timestamp",
                "disagrees with timestamp (give one, or the same instant)",
            ));
        }
        (Some(t), _) | (None, Some(t)) => t,
        (None, None) => now_ms,
    };
    let data = match kind {
        UpdateType::Message => validate_message(&data),
        UpdateType::Sentiment => validate_sentiment(&data),
        UpdateType::Metrics => validate_metrics(&data),
    }
    .map_err(|e| e.within("data"))?;
    Ok(Update {
        kind,
        organization_id: org.to_owned(),
        data: Value::Object(data),
        timestamp,
    })
}

/// An event time: milliseconds since the epoch, or an ISO-8601 / RFC 3339 date-time with a zone
/// (`2026-12-03T11:07:34.123Z`, as JavaScript's `Date` serialises; `+01:00` offsets too).
fn time_of(value: &Value) -> Result<u64, Invalid> {
    const WHAT: &str = "must be an ISO-8601 date-time with a zone (such as \
        2026-12-03T11:07:34.123Z) or milliseconds since the epoch";
    let ms = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .ok()
                .and_then(|t| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        }
        _ => None,
    };
    ms.ok_or_else(|| Invalid::new("timestamp", WHAT))
}

const MAX_TEXT: usize = 64 * 1024;

fn string(data: &Map<String, Value>, field: &str, required: bool) -> Result<(), Invalid> {
    match data.get(field) {
        None if !required => Ok(()),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_TEXT => Ok(()),
        Some(Value::String(s)) if s.is_empty() => Err(Invalid::new(field, "must not be empty")),
        Some(Value::String(_)) => Err(Invalid::new(field, "is too long")),
        None => Err(Invalid::new(field, "is required")),
        Some(_) => Err(Invalid::new(field, "must be a string")),
    }
}

fn number(
    data: &Map<String, Value>,
    field: &str,
    required: bool,
    range: (f64, f64),
) -> Result<(), Invalid> {
    match data.get(field) {
        None if !required => Ok(()),
        None => Err(Invalid::new(field, "is required")),
        Some(v) => match v.as_f64() {
            Some(n) if n >= range.0 && n <= range.1 => Ok(()),
            Some(_) => Err(Invalid::new(
                field,
                format!("must be between {} and {}", range.0, range.1),
            )),
            None => Err(Invalid::new(field, "must be a number")),
        },
    }
}

fn one_of(data: &Map<String, Value>, field: &str, allowed: &[&str]) -> Result<(), Invalid> {
    match data.get(field).and_then(Value::as_str) {
        Some(v) if allowed.contains(&v) => Ok(()),
        _ => Err(Invalid::new(
            field,
            format!("must be one of {}", allowed.join(", ")),
        )),
    }
}

fn known_fields(data: &Map<String, Value>, fields: &[&str]) -> Result<Map<String, Value>, Invalid> {
    if let Some(unknown) = data.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(Invalid::new(unknown.as_str(), "is not a known field"));
    }
    Ok(data.clone())
}

fn validate_message(data: &Map<String, Value>) -> Result<Map<String, Value>, Invalid> {
    string(data, "conversationId", true)?;
    string(data, "messageId", true)?;
    one_of(data, "role", &["user", "assistant"])?;
    string(data, "content", true)?;
    number(data, "responseTime", false, (0.0, f64::MAX))?;
    known_fields(
        data,
        &[
            "conversationId",
            "messageId",
            "role",
            "content",
            "responseTime",
        ],
    )
}

fn validate_sentiment(data: &Map<String, Value>) -> Result<Map<String, Value>, Invalid> {
    string(data, "conversationId", true)?;
    string(data, "messageId", true)?;
    number(data, "score", true, (-1.0, 1.0))?;
    number(data, "confidence", false, (0.0, 1.0))?;
    one_of(data, "sentiment", &["positive", "negative", "neutral"])?;
    known_fields(
        data,
        &[
            "conversationId",
            "messageId",
            "score",
            "confidence",
            "sentiment",
        ],
    )
}

fn validate_metrics(data: &Map<String, Value>) -> Result<Map<String, Value>, Invalid> {
    const FIELDS: [&str; 4] = [
        "totalMessages",
        "avgResponseTime",
        "satisfactionScore",
        "resolutionRate",
    ];
    number(data, "totalMessages", false, (0.0, f64::MAX))?;
    number(data, "avgResponseTime", false, (0.0, f64::MAX))?;
    number(data, "satisfactionScore", false, (0.0, f64::MAX))?;
    number(data, "resolutionRate", false, (0.0, 1.0))?;
    if !FIELDS.iter().any(|f| data.contains_key(*f)) {
        return Err(Invalid::new("data", "needs at least one metric"));
    }
    known_fields(data, &FIELDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_each_type() {
        let ok = [
            json!({"type":"message","data":{"conversationId":"c","messageId":"m","role":"user","content":"hi"}}),
            json!({"type":"message","data":{"conversationId":"c","messageId":"m","role":"assistant","content":"hé","responseTime":1.5}}),
            json!({"type":"sentiment","data":{"conversationId":"c","messageId":"m","score":-0.5,"sentiment":"negative"}}),
            json!({"type":"metrics","data":{"totalMessages":10,"resolutionRate":0.5}, "timestamp": 5}),
        ];
        for e in ok {
            let u = validate_event("acme", &e, 1).unwrap();
            assert_eq!(u.organization_id, "acme");
        }
        let bad = [
            (json!([]), "event"),
            (json!({"data":{}}), "type"),
            (json!({"type":"nope","data":{}}), "type"),
            (json!({"type":"message"}), "data"),
            (
                json!({"type":"message","data":{"messageId":"m","role":"user","content":"x"}}),
                "data.conversationId",
            ),
            (
                json!({"type":"message","data":{"conversationId":"c","messageId":"m","role":"bot","content":"x"}}),
                "data.role",
            ),
            (
                json!({"type":"message","data":{"conversationId":"c","messageId":"m","role":"user","content":"x","extra":1}}),
                "data.extra",
            ),
            (
                json!({"type":"sentiment","data":{"conversationId":"c","messageId":"m","score":2,"sentiment":"positive"}}),
                "data.score",
            ),
            (json!({"type":"metrics","data":{}}), "data.data"),
            (
                json!({"type":"metrics","data":{"resolutionRate":"x"}}),
                "data.resolutionRate",
            ),
            (
                json!({"type":"metrics","data":{"totalMessages":1},"timestamp":"yesterday"}),
                "timestamp",
            ),
            (
                json!({"type":"metrics","organizationId":"other","data":{"totalMessages":1}}),
                "organizationId",
            ),
            (
                json!({"type":"metrics","data":{"totalMessages":1,"timestamp":"2026-13-01T00:00:00Z"}}),
                "data.timestamp",
            ),
            (
                // A date-time without a zone is ambiguous.
                json!({"type":"metrics","data":{"totalMessages":1},"timestamp":"2026-12-03T11:07:34"}),
                "timestamp",
            ),
            (
                json!({"type":"metrics","data":{"totalMessages":1},"timestamp":-5}),
                "timestamp",
            ),
            (
                json!({"type":"metrics","data":{"totalMessages":1,"timestamp":1},"timestamp":2}),
                "data.timestamp",
            ),
        ];
        for (e, field) in bad {
            assert_eq!(
                validate_event("acme", &e, 1).unwrap_err().field,
                field,
                "{e}"
            );
        }
    }

    #[test]
    fn takes_the_seeds_timestamp_inside_data_or_at_the_top_as_iso_or_milliseconds() {
        // 2026-12-03T11:07:34.123Z
        const MS: u64 = 1_796_296_054_123;
        let message = |extra: Value| {
            let mut data =
                json!({"conversationId":"c","messageId":"m","role":"user","content":"hi"});
            let mut event = json!({"type":"message"});
            if let Some(t) = extra.get("inner") {
                data["timestamp"] = t.clone();
            }
            if let Some(t) = extra.get("outer") {
                event["timestamp"] = t.clone();
            }
            event["data"] = data;
            validate_event("acme", &event, 7).unwrap()
        };
        for (extra, want) in [
            (json!({"inner": "2026-12-03T11:07:34.123Z"}), MS),
            (json!({"inner": "2026-12-03T12:07:34.123+01:00"}), MS),
            (json!({"outer": "2026-12-03T11:07:34.123Z"}), MS),
            (json!({"outer": MS}), MS),
            (
                json!({"inner": MS, "outer": "2026-12-03T11:07:34.123Z"}),
                MS,
            ),
            (json!({}), 7),
        ] {
            let update = message(extra.clone());
            assert_eq!(update.timestamp, want, "{extra}");
            // One shape out: the time at the top, none inside the data.
            assert!(update.data.get("timestamp").is_none(), "{extra}");
            assert_eq!(update.to_json()["timestamp"], want);
        }
    }

    #[test]
    fn checks_org_ids() {
        assert!(valid_org_id("acme-42"));
        assert!(!valid_org_id(""));
        assert!(!valid_org_id("a/b"));
        assert!(!valid_org_id("a:message"));
        assert!(!valid_org_id(&"x".repeat(129)));
    }
}
