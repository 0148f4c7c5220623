//! Order requests as a client sends them, validated field by field with every problem reported.

use serde::Serialize;
use serde_json::Value;

use super::Currency;

pub const MAX_CUSTOMER_ID_CHARS: usize = 128;
pub const MAX_SKU_CHARS: usize = 64;
pub const MAX_ITEMS: usize = 100;
pub const MAX_QUANTITY: u64 = 1000;
/// Keeps every total far from `i64` overflow: 10^12 minor units is ten billion in most currencies.
pub const MAX_UNIT_PRICE_MINOR: i64 = 1_000_000_000_000;

/// One invalid field of a request, addressed the way a client wrote it (`items[2].quantity`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A validated order request: the only way to build one is [`OrderRequest::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    pub customer_id: String,
    pub currency: Currency,
    pub items: Vec<LineItem>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    pub sku: String,
    pub quantity: u64,
    pub unit_price_minor: i64,
}

impl OrderRequest {
    /// Validates every field of a JSON request body and reports all problems at once.
    pub fn parse(body: &Value) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let Some(object) = body.as_object() else {
            return Err(vec![FieldError::new("", "the body must be a JSON object")]);
        };
        for key in object.keys() {
            if !matches!(key.as_str(), "customerId" | "currency" | "items") {
                errors.push(FieldError::new(key.clone(), "is not a known field"));
            }
        }

        let customer_id = match object.get("customerId") {
            None | Some(Value::Null) => {
                errors.push(FieldError::new("customerId", "is required"));
                None
            }
            Some(Value::String(s)) if s.trim().is_empty() => {
                errors.push(FieldError::new("customerId", "must not be blank"));
                None
            }
            Some(Value::String(s)) if s.chars().any(is_control) => {
                errors.push(FieldError::new("customerId", CONTROL_CHARACTERS));
                None
            }
            Some(Value::String(s)) if s.chars().count() > MAX_CUSTOMER_ID_CHARS => {
                errors.push(FieldError::new(
                    "customerId",
                    format!("must be at most {MAX_CUSTOMER_ID_CHARS} characters"),
                ));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                errors.push(FieldError::new("customerId", "must be a string"));
                None
            }
        };

        let currency = match object.get("currency") {
            None | Some(Value::Null) => {
                errors.push(FieldError::new("currency", "is required"));
                None
            }
            Some(Value::String(s)) => {
                let parsed = Currency::parse(s);
                if parsed.is_none() {
                    errors.push(FieldError::new("currency", "must be an ISO 4217 code such as \"EUR\""));
                }
                parsed
            }
            Some(_) => {
                errors.push(FieldError::new("currency", "must be a string"));
                None
            }
        };

        let mut items = Vec::new();
        match object.get("items") {
            None | Some(Value::Null) => errors.push(FieldError::new("items", "is required")),
            Some(Value::Array(list)) if list.is_empty() => {
                errors.push(FieldError::new("items", "must contain at least one item"))
            }
            Some(Value::Array(list)) if list.len() > MAX_ITEMS => errors.push(FieldError::new(
                "items",
                format!("must contain at most {MAX_ITEMS} items"),
            )),
            Some(Value::Array(list)) => {
                for (i, item) in list.iter().enumerate() {
                    if let Some(item) = parse_item(i, item, currency.as_ref(), &mut errors) {
                        items.push(item);
                    }
                }
            }
            Some(_) => errors.push(FieldError::new("items", "must be an array")),
        }

        match (customer_id, currency) {
            (Some(customer_id), Some(currency)) if errors.is_empty() => {
                let request = Self {
                    customer_id,
                    currency,
                    items,
                };
                if request.total_minor().is_none() {
                    return Err(vec![FieldError::new("items", "the order total is too large")]);
                }
                Ok(request)
            }
            _ => Err(errors),
        }
    }

    /// The order total in minor units, `None` on overflow.
    pub fn total_minor(&self) -> Option<i64> {
        self.items.iter().try_fold(0i64, |sum, item| {
            let quantity = i64::try_from(item.quantity).ok()?;
            sum.checked_add(item.unit_price_minor.checked_mul(quantity)?)
        })
    }
}

const CONTROL_CHARACTERS: &str = "must not contain control characters (U+0000-U+001F, U+007F-U+009F, U+2028, U+2029)";

/// C0 and C1 controls, DEL, and the line and paragraph separators (which end a line in
/// JavaScript and in many log viewers).
fn is_control(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

fn parse_item(
    index: usize,
    item: &Value,
    currency: Option<&Currency>,
    errors: &mut Vec<FieldError>,
) -> Option<LineItem> {
    let field = |name: &str| format!("items[{index}].{name}");
    let Some(object) = item.as_object() else {
        errors.push(FieldError::new(format!("items[{index}]"), "must be an object"));
        return None;
    };
    let before = errors.len();
    for key in object.keys() {
        if !matches!(key.as_str(), "sku" | "quantity" | "unitPrice") {
            errors.push(FieldError::new(field(key), "is not a known field"));
        }
    }
    let sku = match object.get("sku") {
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= MAX_SKU_CHARS
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            Some(s.clone())
        }
        None | Some(Value::Null) => {
            errors.push(FieldError::new(field("sku"), "is required"));
            None
        }
        Some(Value::String(s)) if s.chars().any(is_control) => {
            errors.push(FieldError::new(field("sku"), CONTROL_CHARACTERS));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(
                field("sku"),
                format!("must be 1 to {MAX_SKU_CHARS} characters of A-Z, a-z, 0-9, '-', '_', '.', ':'"),
            ));
            None
        }
    };
    let quantity = match object.get("quantity") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(q) if (1..=MAX_QUANTITY).contains(&q) => Some(q),
            _ => {
                errors.push(FieldError::new(
                    field("quantity"),
                    format!("must be a whole number from 1 to {MAX_QUANTITY}"),
                ));
                None
            }
        },
        None | Some(Value::Null) => {
            errors.push(FieldError::new(field("quantity"), "is required"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(field("quantity"), "must be a number"));
            None
        }
    };
    let unit_price = match (object.get("unitPrice"), currency) {
        (None | Some(Value::Null), _) => {
            errors.push(FieldError::new(field("unitPrice"), "is required"));
            None
        }
        (Some(Value::Number(n)), _) => match n.as_i64() {
            Some(minor) if (0..=MAX_UNIT_PRICE_MINOR).contains(&minor) && !n.is_f64() => Some(minor),
            _ => {
                errors.push(FieldError::new(
                    field("unitPrice"),
                    "a number must be a whole, non-negative amount of minor units (use a string such as \"12.50\" for decimals)",
                ));
                None
            }
        },
        (Some(Value::String(s)), Some(currency)) => match currency.parse_decimal(s) {
            Ok(minor) if minor <= MAX_UNIT_PRICE_MINOR => Some(minor),
            Ok(_) => {
                errors.push(FieldError::new(field("unitPrice"), "is too large"));
                None
            }
            Err(message) => {
                errors.push(FieldError::new(field("unitPrice"), message));
                None
            }
        },
        // Without a valid currency a decimal string cannot be checked; the currency error says why.
        (Some(Value::String(_)), None) => None,
        (Some(_), _) => {
            errors.push(FieldError::new(
                field("unitPrice"),
                "must be a decimal string or an integer",
            ));
            None
        }
    };
    if errors.len() != before {
        return None;
    }
    Some(LineItem {
        sku: sku?,
        quantity: quantity?,
        unit_price_minor: unit_price?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::OffsetDateTime;

    use super::*;
    use crate::domain::Order;

    fn fields(result: Result<OrderRequest, Vec<FieldError>>) -> Vec<String> {
        result.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn accepts_minor_units_and_decimal_strings() {
        let request = OrderRequest::parse(&json!({
            "customerId": "c-1", "currency": "EUR",
            "items": [{"sku": "A-1", "quantity": 2, "unitPrice": "12.5"}, {"sku": "B", "quantity": 1, "unitPrice": 99}]
        }))
        .unwrap();
        assert_eq!(request.items[0].unit_price_minor, 1250);
        assert_eq!(request.items[1].unit_price_minor, 99);
        assert_eq!(request.total_minor(), Some(2599));
        let order = Order::create(&request, OffsetDateTime::now_utc());
        assert_eq!(order.total, "25.99");
        assert_eq!(order.items[0].unit_price, "12.50");
        assert_eq!(order.items[0].line_total, "25.00");
    }

    #[test]
    fn names_every_bad_field() {
        let bad = fields(OrderRequest::parse(&json!({
            "customerId": 7, "currency": "EURO", "extra": 1,
            "items": [{"sku": "has space", "quantity": 0, "unitPrice": 1.5}, "x"]
        })));
        assert_eq!(
            bad,
            vec![
                "extra",
                "customerId",
                "currency",
                "items[0].sku",
                "items[0].quantity",
                "items[0].unitPrice",
                "items[1]"
            ]
        );
    }

    #[test]
    fn rejects_floats_negative_and_malformed_prices() {
        for price in [
            json!(1.5),
            json!(-1),
            json!("-1.00"),
            json!("1,00"),
            json!("1."),
            json!(".5"),
            json!("1.234"),
            json!("1e3"),
            json!(true),
        ] {
            let result = OrderRequest::parse(&json!({
                "customerId": "c", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unitPrice": price}]
            }));
            assert_eq!(fields(result), vec!["items[0].unitPrice"], "{price} was accepted");
        }
    }

    #[test]
    fn rejects_missing_and_empty() {
        assert_eq!(
            fields(OrderRequest::parse(&json!({}))),
            vec!["customerId", "currency", "items"]
        );
        assert_eq!(
            fields(OrderRequest::parse(
                &json!({"customerId": " ", "currency": "EUR", "items": []})
            )),
            vec!["customerId", "items"]
        );
        assert_eq!(fields(OrderRequest::parse(&json!([1]))), vec![""]);
    }

    #[test]
    fn customer_text_is_kept_verbatim() {
        let request = OrderRequest::parse(&json!({
            "customerId": "O'Brien \"Ltd\" \\ café 東京 🙂 data: y", "currency": "EUR",
            "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}]
        }))
        .unwrap();
        assert_eq!(request.customer_id, "O'Brien \"Ltd\" \\ café 東京 🙂 data: y");
        let json = Order::create(&request, OffsetDateTime::now_utc()).to_json();
        assert!(!json.contains('\n'));
        assert!(json.contains(r#"O'Brien \"Ltd\" \\ café"#), "{json}");
    }

    #[test]
    fn control_characters_in_customer_and_sku_are_refused() {
        for bad in [
            "a\nb",
            "a\rb",
            "\0",
            "a\u{1b}[31m",
            "a\u{7f}",
            "a\u{85}",
            "a\u{9f}",
            "a\u{2028}b",
            "a\u{2029}",
        ] {
            let result = OrderRequest::parse(&json!({
                "customerId": bad, "currency": "EUR", "items": [{"sku": bad, "quantity": 1, "unitPrice": 1}]
            }));
            let errors = result.unwrap_err();
            assert_eq!(
                errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
                vec!["customerId", "items[0].sku"],
                "{bad:?}"
            );
            assert!(
                errors.iter().all(|e| e.message.contains("control characters")),
                "{errors:?}"
            );
        }
        // Neighbours of the refused ranges are fine in a customer id.
        for good in ["a\u{a0}b", "\u{2027}", "\u{202a}x", "~"] {
            let result = OrderRequest::parse(&json!({
                "customerId": good, "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unitPrice": 1}]
            }));
            assert!(result.is_ok(), "{good:?} was refused");
        }
    }
}
