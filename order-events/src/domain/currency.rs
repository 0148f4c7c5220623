//! ISO 4217 currencies and the number of minor-unit digits each one has.

use serde::{Deserialize, Serialize};

/// ISO 4217 currency with its number of minor-unit digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

/// Active ISO 4217 codes whose minor unit is not 2 digits.
const EXPONENT_EXCEPTIONS: &[(&str, u8)] = &[
    ("BHD", 3),
    ("BIF", 0),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("IQD", 3),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("PYG", 0),
    ("RWF", 0),
    ("TND", 3),
    ("UGX", 0),
    ("UYI", 0),
    ("UYW", 4),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
    ("CLF", 4),
];

/// Active ISO 4217 codes with 2 minor-unit digits.
const TWO_DIGIT_CODES: &str = "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB \
BOV BRL BSD BTN BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUC CUP CVE CZK DKK DOP DZD EGP ERN \
ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD \
KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK \
NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD SSP STN \
SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG ZWL";

impl Currency {
    pub fn parse(code: &str) -> Option<Self> {
        let bytes: [u8; 3] = code.as_bytes().try_into().ok()?;
        if let Some((_, exponent)) = EXPONENT_EXCEPTIONS.iter().find(|(c, _)| *c == code) {
            return Some(Self {
                code: bytes,
                exponent: *exponent,
            });
        }
        TWO_DIGIT_CODES
            .split_ascii_whitespace()
            .any(|c| c == code)
            .then_some(Self {
                code: bytes,
                exponent: 2,
            })
    }

    pub fn code(&self) -> &str {
        // The bytes came from a `&str` that matched an ASCII code, so they are valid UTF-8.
        std::str::from_utf8(&self.code).unwrap_or("XXX")
    }

    pub fn exponent(&self) -> u8 {
        self.exponent
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = String::deserialize(d)?;
        Currency::parse(&code).ok_or_else(|| serde::de::Error::custom("unknown currency"))
    }
}
