//! Property tests over any Unicode input: the event id parser, the order validator and the SSE
//! encoder never panic, and no text gets a field of its own into a stream. Frames are read back
//! by an event-stream parser written here from the WHATWG algorithm, not the project's own.
#![allow(clippy::unwrap_used)]

use order_events::StreamPosition;
use order_events::domain::{Order, OrderRequest};
use order_events::frame::{ORDER_CREATED, encode_event};
use proptest::prelude::*;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// One dispatched event, as an `EventSource` would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Dispatched {
    event_type: String,
    data: String,
    last_event_id: String,
}

/// The WHATWG "event stream interpretation": lines end at CRLF, LF or CR; an empty line
/// dispatches; `:` starts a comment; a field's value loses one leading space.
fn whatwg_parse(bytes: &[u8]) -> Vec<Dispatched> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut events = Vec::new();
    let (mut data, mut event_type, mut last_event_id) = (String::new(), String::new(), String::new());
    let mut lines = Vec::new();
    let mut rest = text;
    // Only complete lines count: text after the last line end is an unfinished line.
    while let Some(at) = rest.find(['\r', '\n']) {
        lines.push(&rest[..at]);
        let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[at + skip..];
    }
    for line in lines {
        if line.is_empty() {
            if data.is_empty() {
                event_type.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            events.push(Dispatched {
                event_type: if event_type.is_empty() {
                    "message".into()
                } else {
                    event_type.clone()
                },
                data: std::mem::take(&mut data),
                last_event_id: last_event_id.clone(),
            });
            event_type.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.find(':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line, ""),
        };
        match field {
            "event" => event_type = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => last_event_id = value.to_owned(),
            _ => {}
        }
    }
    events
}

#[test]
fn the_reference_parser_follows_the_specification_examples() {
    let events = whatwg_parse(
        b"data: YHOO\ndata: +2\ndata: 10\n\n: c\r\nid: 1\r\nevent: x\rdata:  a\r\r\ndata\n\ndata: unfinished\n",
    );
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].data, "YHOO\n+2\n10");
    assert_eq!(events[0].event_type, "message");
    assert_eq!(
        (
            events[1].event_type.as_str(),
            events[1].data.as_str(),
            events[1].last_event_id.as_str()
        ),
        ("x", " a", "1")
    );
    assert_eq!(events[2].data, "");
}

fn any_json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<String>().prop_map(Value::String),
        "[A-Za-z0-9._:-]{0,70}".prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..=1001).prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "[0-9]{1,16}(\\.[0-9]{0,4})?".prop_map(Value::String),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![Just("EUR"), Just("JPY"), Just("KWD"), Just("eur"), Just("XXX")]
            .prop_map(|s| Value::String(s.into())),
    ]
}

fn any_item() -> impl Strategy<Value = Value> {
    (
        any_json_leaf(),
        any_json_leaf(),
        any_json_leaf(),
        proptest::option::of(any_json_leaf()),
    )
        .prop_map(|(sku, quantity, unit_price, extra)| {
            let mut item = json!({"sku": sku, "quantity": quantity, "unitPrice": unit_price});
            if let Some(extra) = extra {
                item["extra"] = extra;
            }
            item
        })
}

fn any_order_body() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            any::<String>(),
            "\\PC{1,10}",
            "[a-z]{1,8}[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{2028}\\u{2029}]?"
        ],
        any_json_leaf(),
        proptest::collection::vec(any_item(), 0..4),
    )
        .prop_map(|(customer, currency, items)| json!({"customerId": customer, "currency": currency, "items": items}))
}

fn is_refused_control(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_text_parses_as_a_position_only_if_it_prints_back_identically(text in prop_oneof![any::<String>(), "[0-9]{0,22}-[0-9]{0,22}", "[0-9 +-]{0,8}"]) {
        if let Ok(position) = StreamPosition::parse(&text) {
            prop_assert_eq!(position.to_string(), text);
        }
    }

    #[test]
    fn every_position_round_trips(ms in any::<u64>(), seq in any::<u64>()) {
        let position = StreamPosition::new(ms, seq);
        prop_assert_eq!(StreamPosition::parse(&position.to_string()), Ok(position));
    }

    #[test]
    fn any_payload_is_one_event_with_exactly_its_id_and_data(ms in any::<u64>(), seq in any::<u64>(), payload in any::<String>()) {
        let position = StreamPosition::new(ms, seq);
        let frame = encode_event(position, ORDER_CREATED, &payload);
        let events = whatwg_parse(&frame);
        prop_assert_eq!(events.len(), 1);
        prop_assert_eq!(&events[0].event_type, ORDER_CREATED);
        prop_assert_eq!(&events[0].last_event_id, &position.to_string());
        // SSE data cannot carry a carriage return: every line break arrives as LF.
        let expected = payload.replace("\r\n", "\n").replace('\r', "\n");
        prop_assert_eq!(&events[0].data, &expected);
    }

    #[test]
    fn frames_back_to_back_stay_separate_events(payloads in proptest::collection::vec(any::<String>(), 1..5)) {
        let mut stream = b"retry: 2000\n\n".to_vec();
        for (n, payload) in payloads.iter().enumerate() {
            stream.extend_from_slice(&encode_event(StreamPosition::new(n as u64, 0), ORDER_CREATED, payload));
            stream.extend_from_slice(b": heartbeat\n\n");
        }
        let events = whatwg_parse(&stream);
        prop_assert_eq!(events.len(), payloads.len());
        for (n, event) in events.iter().enumerate() {
            prop_assert_eq!(&event.last_event_id, &format!("{n}-0"));
            prop_assert_eq!(&event.event_type, ORDER_CREATED);
        }
    }

    #[test]
    fn any_order_body_is_validated_without_panic_and_an_accepted_one_streams_as_itself(body in any_order_body()) {
        let Ok(request) = OrderRequest::parse(&body) else {
            return Ok(());
        };
        prop_assert!(!request.customer_id.chars().any(is_refused_control));
        prop_assert!(!request.customer_id.trim().is_empty());
        for item in &request.items {
            prop_assert!(!item.sku.is_empty());
            prop_assert!(item.sku.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)));
            prop_assert!((1..=1000).contains(&item.quantity));
            prop_assert!(item.unit_price_minor >= 0);
        }
        prop_assert!(request.total_minor().is_some());
        let order = Order::create(&request, OffsetDateTime::now_utc());
        let json = order.to_json();
        prop_assert!(!json.contains(['\n', '\r']));
        let frame = encode_event(StreamPosition::new(1, 0), ORDER_CREATED, &json);
        let events = whatwg_parse(&frame);
        prop_assert_eq!(events.len(), 1);
        prop_assert_eq!(&events[0].data, &json);
        let back: Value = serde_json::from_str(&events[0].data).unwrap();
        prop_assert_eq!(back["customerId"].as_str(), Some(request.customer_id.as_str()));
    }

    #[test]
    fn a_customer_id_is_accepted_exactly_when_it_is_non_blank_short_and_free_of_controls(customer in prop_oneof![any::<String>(), "\\PC{0,130}", "[ a-z\\x00-\\x1f\\x7f-\\u{a0}\\u{2028}\\u{2029}]{0,6}"]) {
        let body = json!({"customerId": customer, "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unitPrice": "1.00"}]});
        let acceptable = !customer.trim().is_empty() && customer.chars().count() <= 128 && !customer.chars().any(is_refused_control);
        let parsed = OrderRequest::parse(&body);
        prop_assert_eq!(parsed.is_ok(), acceptable, "{:?}", parsed);
        if let Ok(request) = parsed {
            let json = Order::create(&request, OffsetDateTime::now_utc()).to_json();
            let events = whatwg_parse(&encode_event(StreamPosition::new(7, 0), ORDER_CREATED, &json));
            prop_assert_eq!(events.len(), 1);
            prop_assert_eq!(&events[0].data, &json);
        }
    }

    #[test]
    fn any_text_as_a_body_is_refused_or_parsed_without_panic(text in any::<String>()) {
        if let Ok(value) = order_events::strict_json::parse(text.as_bytes()) {
            let _ = OrderRequest::parse(&value);
        }
    }
}
