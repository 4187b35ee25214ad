//! The value syntax of fe-php's configuration file that more than one crate
//! reads: durations (`"500ms"`, `"5s"`, `"2m"`) and sizes (`65536`, `"16K"`,
//! `"64M"`, `"1G"`), each with its parser, its `Display` in the same syntax and a
//! serde visitor whose errors say what is accepted. The library (`fe-php`, for
//! `[php]` and `[backend]`) and `fe-php-host` (for `[server]`) both use these, so
//! one file has one syntax.

use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// Longest duration a timeout setting accepts.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// `"64M"` → (64, "M"), `"500 ms"` → (500, " ms"): the leading whole number and
/// what follows it; None without digits or past u64.
fn number_and_unit(text: &str) -> Option<(u64, &str)> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    Some((number.parse().ok()?, unit))
}

/// A duration as the configuration writes it: a whole number with a unit,
/// `"500ms"`, `"5s"` or `"2m"` (like nginx's and php-fpm's own settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    /// Parses `"500ms"`, `"5s"`, `"2m"`; the error says what is accepted.
    pub fn parse(text: &str) -> Result<ConfigDuration, String> {
        let bad = || {
            format!("invalid duration \"{text}\": write a whole number with a unit, e.g. \"500ms\", \"5s\" or \"2m\"")
        };
        let (n, unit) = number_and_unit(text).ok_or_else(bad)?;
        let d = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            _ => return Err(bad()),
        };
        if d.is_zero() {
            return Err(format!(
                "invalid duration \"{text}\": it must be more than 0"
            ));
        }
        if d > MAX_DURATION {
            return Err(format!(
                "invalid duration \"{text}\": at most 24 hours (\"1440m\")"
            ));
        }
        Ok(ConfigDuration(d))
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl UnitValue for ConfigDuration {
    const EXPECTING: &'static str = "a duration with a unit, e.g. \"500ms\", \"5s\" or \"2m\"";

    fn parse(text: &str) -> Result<Self, String> {
        ConfigDuration::parse(text)
    }

    fn from_integer(v: i128) -> Result<Self, String> {
        Err(format!(
            "durations need a unit: write \"{v}s\" (or \"500ms\", \"2m\"), not {v}"
        ))
    }

    fn from_float(v: f64) -> Result<Self, String> {
        Err(format!(
            "durations need a unit: write e.g. \"500ms\" or \"5s\", not {v}"
        ))
    }
}

/// A size in bytes as the configuration writes it: a number of bytes (`65536` or
/// `"65536"`) or a whole number with a binary unit, `"16K"`, `"64M"`, `"1G"`
/// (like nginx's sizes and php.ini's; `k`, `m`, `g` work too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigSize(pub u64);

impl ConfigSize {
    /// Parses `"16K"`, `"64M"`, `"1G"` or `"4096"`; the error says what is accepted.
    pub fn parse(text: &str) -> Result<ConfigSize, String> {
        let bad = || {
            format!("invalid size \"{text}\": write a number of bytes or a whole number with K, M or G, e.g. \"16K\", \"64M\" or \"1G\"")
        };
        let (n, unit) = number_and_unit(text).ok_or_else(bad)?;
        let shift = match unit {
            "" => 0,
            "k" | "K" => 10,
            "m" | "M" => 20,
            "g" | "G" => 30,
            _ => return Err(bad()),
        };
        n.checked_mul(1 << shift)
            .map(ConfigSize)
            .ok_or_else(|| format!("invalid size \"{text}\": too large"))
    }
}

impl fmt::Display for ConfigSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
            if n != 0 && n % (1 << shift) == 0 {
                return write!(f, "\"{}{unit}\"", n >> shift);
            }
        }
        write!(f, "{n}")
    }
}

impl UnitValue for ConfigSize {
    const EXPECTING: &'static str = "a size: a number of bytes or e.g. \"16K\", \"64M\", \"1G\"";

    fn parse(text: &str) -> Result<Self, String> {
        ConfigSize::parse(text)
    }

    fn from_integer(v: i128) -> Result<Self, String> {
        u64::try_from(v)
            .map(ConfigSize)
            .map_err(|_| format!("invalid size {v}: sizes cannot be negative"))
    }

    fn from_float(v: f64) -> Result<Self, String> {
        Err(format!(
            "invalid size {v}: write a whole number of bytes or e.g. \"1536K\""
        ))
    }
}

/// A value written as text with a unit (`"5s"`, `"64M"`), with its own answer to a
/// bare TOML number; one serde visitor serves every such type.
trait UnitValue: Sized {
    /// What the error for a wrong TOML type says was expected.
    const EXPECTING: &'static str;
    fn parse(text: &str) -> Result<Self, String>;
    fn from_integer(v: i128) -> Result<Self, String>;
    fn from_float(v: f64) -> Result<Self, String>;
}

struct UnitVisitor<T>(std::marker::PhantomData<T>);

impl<T: UnitValue> serde::de::Visitor<'_> for UnitVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        T::parse(v).map_err(E::custom)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        T::from_integer(v.into()).map_err(E::custom)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        T::from_integer(v.into()).map_err(E::custom)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<T, E> {
        T::from_float(v).map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UnitVisitor(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests;
