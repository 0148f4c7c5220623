//! Amounts in a currency's minor units, read from and written as decimal strings.

use super::Currency;

impl Currency {
    /// Formats an amount of minor units as a decimal string (`1250` EUR → `"12.50"`).
    pub fn format(&self, minor: i64) -> String {
        if self.exponent() == 0 {
            return minor.to_string();
        }
        let scale = 10i64.pow(u32::from(self.exponent()));
        let sign = if minor < 0 { "-" } else { "" };
        let abs = minor.unsigned_abs();
        let scale = scale.unsigned_abs();
        format!(
            "{sign}{}.{:0width$}",
            abs / scale,
            abs % scale,
            width = usize::from(self.exponent())
        )
    }

    /// Parses a decimal string with at most `exponent` fraction digits into minor units.
    pub fn parse_decimal(&self, text: &str) -> Result<i64, &'static str> {
        let (whole, fraction) = match text.split_once('.') {
            Some((w, f)) => (w, f),
            None => (text, ""),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must be a non-negative decimal such as \"12.50\"");
        }
        if text.contains('.') && fraction.is_empty() {
            return Err("must have digits after the decimal point");
        }
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must be a non-negative decimal such as \"12.50\"");
        }
        if fraction.len() > usize::from(self.exponent()) {
            return Err("has more decimal places than the currency allows");
        }
        if whole.len() > 15 {
            return Err("is too large");
        }
        let mut minor: i64 = whole.parse().map_err(|_| "is too large")?;
        for i in 0..self.exponent() {
            let digit = fraction
                .as_bytes()
                .get(usize::from(i))
                .map_or(0, |b| i64::from(b - b'0'));
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(digit))
                .ok_or("is too large")?;
        }
        Ok(minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respects_currency_exponent() {
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(jpy.parse_decimal("1200"), Ok(1200));
        assert!(jpy.parse_decimal("12.5").is_err());
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(kwd.format(1234), "1.234");
        assert_eq!(Currency::parse("EUR").unwrap().format(5), "0.05");
    }
}
