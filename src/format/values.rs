//! Field-level parsing shared by the readers: exact decimal seconds, dates, addresses, ports and counts, and the
//! header-to-column lookup. Each function returns a [`FieldError`] naming the field, never panics.

use super::FieldError;
use chrono::NaiveDateTime;
use std::net::{IpAddr, Ipv4Addr};

/// Lowercase ASCII letters and digits only: `" Flow ID"` -> `flowid`, `id.orig_h` -> `idorigh`.
pub fn normalise_name(s: &str) -> String {
    s.trim().trim_start_matches('\u{feff}').chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

/// Whether a textual field means "no value": empty, Zeek's `-` and `(empty)`.
pub fn is_unset(s: &str) -> bool {
    let s = s.trim();
    s.is_empty() || s == "-" || s == "(empty)"
}

/// Decimal seconds (`"3.139211"`, `"305.63599999999997"`, `"1e-05"`) to whole microseconds, rounded to nearest.
/// Plain decimals are converted digit by digit so epoch timestamps keep every microsecond (an `f64` would not).
pub fn seconds_to_us(s: &str) -> Option<i64> {
    decimal_scaled(s, 6)
}

/// A decimal number scaled by 10^`scale` and rounded to the nearest integer, exactly for plain decimals.
pub fn decimal_scaled(s: &str, scale: u32) -> Option<i64> {
    let s = s.trim();
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if body.is_empty() {
        return None;
    }
    if body.bytes().any(|b| b == b'e' || b == b'E') || body.eq_ignore_ascii_case("inf") || body.eq_ignore_ascii_case("nan") {
        let v: f64 = s.parse().ok()?;
        let scaled = (v * 10f64.powi(scale as i32)).round();
        return (scaled.is_finite() && scaled.abs() < 9.0e18).then_some(scaled as i64);
    }
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty()) || !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut v: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let fb = frac.as_bytes();
    for i in 0..scale as usize {
        v = v.checked_mul(10)?.checked_add(fb.get(i).map(|b| (b - b'0') as i64).unwrap_or(0))?;
    }
    if fb.get(scale as usize).is_some_and(|b| *b >= b'5') {
        v = v.checked_add(1)?;
    }
    Some(if neg { -v } else { v })
}

const DATE_FORMATS: &[&str] = &[
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y/%m/%d %H:%M:%S%.f",
    "%d/%m/%Y %H:%M:%S%.f",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %I:%M:%S %p",
];

/// A date-time (`2016-07-27 13:43:21`, `2017-07-06 12:39:06.818901`, CIC's `6/7/2017 8:59`, ISO `...T...Z`) as
/// microseconds since the epoch. Times without a zone are taken as UTC.
pub fn parse_datetime_us(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() < 10 {
        return None;
    }
    if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros());
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    DATE_FORMATS.iter().find_map(|f| NaiveDateTime::parse_from_str(s, f).ok()).map(|dt| dt.and_utc().timestamp_micros())
}

/// Microseconds since the epoch as `YYYY-MM-DD HH:MM:SS.ffffff` (UTC).
pub fn format_datetime_us(us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(dt) => dt.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
        None => us.to_string(),
    }
}

/// Microseconds as decimal seconds with six digits (`3.139211`), exact.
pub fn format_seconds(us: i64) -> String {
    let sign = if us < 0 { "-" } else { "" };
    let a = us.unsigned_abs();
    format!("{sign}{}.{:06}", a / 1_000_000, a % 1_000_000)
}

pub fn ip(field: &str, s: &str) -> Result<IpAddr, FieldError> {
    s.trim().parse::<IpAddr>().map_err(|_| FieldError::new(field, format!("invalid IP address {:?}", s.trim())))
}

/// An IPv4 address written as an unsigned 32-bit integer (NetShare), possibly with a `.0` suffix.
pub fn ip_u32(field: &str, s: &str) -> Result<IpAddr, FieldError> {
    let t = s.trim();
    let t = t.strip_suffix(".0").unwrap_or(t);
    match t.parse::<u32>() {
        Ok(n) => Ok(IpAddr::V4(Ipv4Addr::from(n))),
        Err(_) => ip(field, s).map_err(|_| FieldError::new(field, format!("invalid IPv4 address as uint32 {:?}", s.trim()))),
    }
}

pub fn port(field: &str, s: &str) -> Result<u16, FieldError> {
    if is_unset(s) {
        return Ok(0);
    }
    let t = s.trim();
    let t = t.strip_suffix(".0").unwrap_or(t);
    match t.parse::<i64>() {
        Ok(n) if (0..=65535).contains(&n) => Ok(n as u16),
        Ok(n) => Err(FieldError::new(field, format!("port {n} out of range 0..=65535"))),
        Err(_) => Err(FieldError::new(field, format!("invalid port {t:?}"))),
    }
}

/// A non-negative count (packets, bytes); unset means 0. Accepts `12`, `12.0`, and nfdump's `1.2 M` style.
pub fn count(field: &str, s: &str) -> Result<u64, FieldError> {
    if is_unset(s) {
        return Ok(0);
    }
    let t = s.trim();
    let (num, mult) = match t.rsplit_once(' ') {
        Some((n, "K")) => (n, 1e3),
        Some((n, "M")) => (n, 1e6),
        Some((n, "G")) => (n, 1e9),
        _ => (t, 1.0),
    };
    if mult == 1.0 {
        if let Ok(n) = num.parse::<u64>() {
            return Ok(n);
        }
        if num.starts_with('-') {
            return Err(FieldError::new(field, format!("negative count {t:?}")));
        }
    }
    match num.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() && v * mult < 1.8e19 => Ok((v * mult).round() as u64),
        Ok(_) => Err(FieldError::new(field, format!("count out of range {t:?}"))),
        Err(_) => Err(FieldError::new(field, format!("invalid number {t:?}"))),
    }
}

/// A signed integer field (CIC header lengths can be negative through a known CICFlowMeter overflow).
pub fn int(field: &str, s: &str) -> Result<i64, FieldError> {
    if is_unset(s) {
        return Ok(0);
    }
    let t = s.trim();
    t.parse::<i64>()
        .or_else(|_| t.parse::<f64>().map(|v| v.round() as i64))
        .map_err(|_| FieldError::new(field, format!("invalid integer {t:?}")))
}

/// A non-negative duration in decimal seconds; unset means 0.
pub fn duration_seconds(field: &str, s: &str) -> Result<u64, FieldError> {
    if is_unset(s) {
        return Ok(0);
    }
    match seconds_to_us(s) {
        Some(v) if v >= 0 => Ok(v as u64),
        Some(v) => Err(FieldError::new(field, format!("negative duration {v} us"))),
        None => Err(FieldError::new(field, format!("invalid duration {:?}", s.trim()))),
    }
}

pub fn protocol(field: &str, s: &str) -> Result<u8, FieldError> {
    crate::record::proto::parse(s).ok_or_else(|| FieldError::new(field, format!("unknown protocol {:?}", s.trim())))
}

/// Positions of named columns in a header row, looked up by normalised name with aliases.
#[derive(Clone, Debug)]
pub struct Columns {
    names: Vec<String>,
}

impl Columns {
    pub fn new<'a>(header: impl IntoIterator<Item = &'a str>) -> Self {
        Columns { names: header.into_iter().map(normalise_name).collect() }
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
    /// Index of the first of `aliases` present.
    pub fn find(&self, aliases: &[&str]) -> Option<usize> {
        aliases.iter().find_map(|a| {
            let a = normalise_name(a);
            self.names.iter().position(|n| *n == a)
        })
    }
    /// Like [`Columns::find`], but a missing column is an error naming what was expected.
    pub fn require(&self, what: &str, aliases: &[&str]) -> Result<usize, String> {
        self.find(aliases).ok_or_else(|| format!("header has no `{what}` column (looked for {})", aliases.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_seconds() {
        assert_eq!(seconds_to_us("1545403816.962094"), Some(1_545_403_816_962_094));
        assert_eq!(seconds_to_us("305.63599999999997"), Some(305_636_000));
        assert_eq!(seconds_to_us("48.380"), Some(48_380_000));
        assert_eq!(seconds_to_us("0"), Some(0));
        assert_eq!(seconds_to_us(".5"), Some(500_000));
        assert_eq!(seconds_to_us("1e-05"), Some(10));
        assert_eq!(seconds_to_us("-1.5"), Some(-1_500_000));
        assert_eq!(seconds_to_us("abc"), None);
        assert_eq!(seconds_to_us("1.2.3"), None);
        assert_eq!(seconds_to_us(""), None);
        assert_eq!(decimal_scaled("1458298072364000.0", 0), Some(1_458_298_072_364_000));
    }

    #[test]
    fn dates() {
        assert_eq!(parse_datetime_us("2016-07-27 13:43:21"), Some(1_469_627_001_000_000));
        assert_eq!(parse_datetime_us("2017-07-06 12:39:06.818901"), Some(1_499_344_746_818_901));
        assert_eq!(parse_datetime_us("2016-07-27T13:43:21Z"), Some(1_469_627_001_000_000));
        assert_eq!(parse_datetime_us("6/7/2017 8:59"), Some(1_499_331_540_000_000));
        assert_eq!(parse_datetime_us("2016-13-27 13:43:21"), None);
        assert_eq!(format_datetime_us(1_499_344_746_818_901), "2017-07-06 12:39:06.818901");
        assert_eq!(format_seconds(3_139_211), "3.139211");
    }

    #[test]
    fn fields() {
        assert_eq!(port("dp", "443").unwrap(), 443);
        assert_eq!(port("dp", "").unwrap(), 0);
        assert_eq!(port("dp", "70000").unwrap_err().message, "port 70000 out of range 0..=65535");
        assert_eq!(ip_u32("srcip", "1730436467").unwrap().to_string(), "103.36.93.115");
        assert!(ip("sa", "300.1.1.1").is_err());
        assert_eq!(count("byt", "1.5 M").unwrap(), 1_500_000);
        assert!(count("pkt", "-3").is_err());
        assert_eq!(normalise_name(" Flow ID"), "flowid");
    }
}
