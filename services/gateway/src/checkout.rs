//! The checkout form, parsed and checked before anything is sent (pure).

use distlab_platform::FieldError;

/// A checkout the order service can be asked to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub sku: String,
    pub quantity: i64,
    pub customer_id: String,
    /// From the product page's form: a resubmitted form places one order, not two.
    pub idempotency_key: Option<String>,
}

/// The largest form accepted.
pub const FORM_LIMIT: usize = 4 * 1024;

fn is_id(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses `application/x-www-form-urlencoded` fields `sku`, `quantity`, `customer_id` and the optional
/// `idempotency_key`; every problem is reported at once.
pub fn parse(body: &[u8]) -> Result<Checkout, Vec<FieldError>> {
    let mut sku = None;
    let mut quantity = None;
    let mut customer_id = None;
    let mut idempotency_key = None;
    for (name, value) in form_urlencoded::parse(body) {
        let slot = match name.as_ref() {
            "sku" => &mut sku,
            "quantity" => &mut quantity,
            "customer_id" => &mut customer_id,
            "idempotency_key" => &mut idempotency_key,
            _ => continue,
        };
        slot.get_or_insert(value.into_owned());
    }
    let mut errors = Vec::new();
    let id = |field: &str, value: Option<String>, errors: &mut Vec<FieldError>| match value {
        Some(value) if is_id(&value) => Some(value),
        Some(_) => {
            errors.push(FieldError::new(
                field,
                "1 to 64 characters of A-Z a-z 0-9 . _ -",
            ));
            None
        }
        None => {
            errors.push(FieldError::new(field, "is required"));
            None
        }
    };
    let sku = id("sku", sku, &mut errors);
    let customer_id = id("customer_id", customer_id, &mut errors);
    let quantity = match quantity.as_deref().map(str::trim).map(str::parse::<i64>) {
        Some(Ok(q)) if (1..=1000).contains(&q) => Some(q),
        Some(_) => {
            errors.push(FieldError::new("quantity", "a whole number from 1 to 1000"));
            None
        }
        None => {
            errors.push(FieldError::new("quantity", "is required"));
            None
        }
    };
    let idempotency_key = match idempotency_key {
        Some(key) if key.is_empty() => None,
        Some(key) if key.len() <= 255 && key.bytes().all(|b| b.is_ascii_graphic()) => Some(key),
        Some(_) => {
            errors.push(FieldError::new(
                "idempotency_key",
                "1 to 255 visible ASCII characters",
            ));
            None
        }
        None => None,
    };
    match (sku, quantity, customer_id) {
        (Some(sku), Some(quantity), Some(customer_id)) if errors.is_empty() => Ok(Checkout {
            sku,
            quantity,
            customer_id,
            idempotency_key,
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_form_is_parsed() {
        let checkout =
            parse(b"sku=shop-mug&quantity=+2&customer_id=alice&idempotency_key=k-1&extra=x")
                .expect("good");
        assert_eq!(
            checkout,
            Checkout {
                sku: "shop-mug".into(),
                quantity: 2,
                customer_id: "alice".into(),
                idempotency_key: Some("k-1".into()),
            }
        );
    }

    #[test]
    fn every_bad_field_is_reported() {
        let errors = parse(b"sku=a%20b&quantity=0&idempotency_key=%C3%A9").expect_err("bad");
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["sku", "customer_id", "quantity", "idempotency_key"]
        );
        let errors = parse(b"sku=x&customer_id=y&quantity=1001").expect_err("too many");
        assert_eq!(errors[0].field, "quantity");
        assert!(parse(b"").is_err());
        assert!(parse(b"sku=x&customer_id=y&quantity=ten").is_err());
    }
}
