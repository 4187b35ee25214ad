use super::*;

#[test]
fn durations() {
    for (text, d) in [
        ("500ms", Duration::from_millis(500)),
        ("5s", Duration::from_secs(5)),
        (" 2m ", Duration::from_secs(120)),
        ("5 s", Duration::from_secs(5)),
        ("1440m", MAX_DURATION),
    ] {
        assert_eq!(ConfigDuration::parse(text), Ok(ConfigDuration(d)), "{text}");
    }
    for (text, why) in [
        ("5 sec", "invalid duration \"5 sec\": write a whole number with a unit, e.g. \"500ms\", \"5s\" or \"2m\""),
        ("1.5s", "invalid duration \"1.5s\": write a whole number with a unit"),
        ("s", "invalid duration \"s\": write a whole number"),
        ("5", "invalid duration \"5\": write a whole number with a unit"),
        ("0s", "invalid duration \"0s\": it must be more than 0"),
        ("1441m", "invalid duration \"1441m\": at most 24 hours (\"1440m\")"),
        ("99999999999999999999s", "invalid duration \"99999999999999999999s\": write a whole number"),
    ] {
        let e = ConfigDuration::parse(text).unwrap_err();
        assert!(e.starts_with(why), "{text}: {e}");
    }
    assert_eq!(ConfigDuration(Duration::from_secs(120)).to_string(), "120s");
    assert_eq!(
        ConfigDuration(Duration::from_millis(1500)).to_string(),
        "1500ms"
    );
}

#[test]
fn sizes() {
    for (text, bytes) in [
        ("0", 0),
        ("4096", 4096),
        ("16K", 16 << 10),
        ("16k", 16 << 10),
        ("64M", 64 << 20),
        ("1G", 1 << 30),
        ("3g", 3 << 30),
    ] {
        assert_eq!(ConfigSize::parse(text), Ok(ConfigSize(bytes)), "{text}");
    }
    for (text, why) in [
        ("64 MB", "invalid size \"64 MB\": write a number of bytes or a whole number with K, M or G, e.g. \"16K\", \"64M\" or \"1G\""),
        ("64MB", "invalid size \"64MB\": write a number of bytes"),
        ("1T", "invalid size \"1T\": write a number of bytes"),
        ("99999999999G", "invalid size \"99999999999G\": too large"),
    ] {
        let e = ConfigSize::parse(text).unwrap_err();
        assert!(e.starts_with(why), "{text}: {e}");
    }
    assert_eq!(ConfigSize(64 << 20).to_string(), "\"64M\"");
    assert_eq!(ConfigSize(1536).to_string(), "1536");
    assert_eq!(ConfigSize(0).to_string(), "0");
}

/// The visitor's answers to bare numbers, as a deserializer hands them over.
#[test]
fn bare_numbers() {
    use serde::de::value::{Error, F64Deserializer, I64Deserializer, StrDeserializer};
    use serde::de::IntoDeserializer;
    let int = |v: i64| -> I64Deserializer<Error> { v.into_deserializer() };
    let float = |v: f64| -> F64Deserializer<Error> { v.into_deserializer() };
    let text = |v: &'static str| -> StrDeserializer<'static, Error> { v.into_deserializer() };
    assert_eq!(
        ConfigSize::deserialize(int(65536)).unwrap(),
        ConfigSize(65536)
    );
    assert_eq!(
        ConfigSize::deserialize(text("2K")).unwrap(),
        ConfigSize(2048)
    );
    assert_eq!(
        ConfigSize::deserialize(int(-1)).unwrap_err().to_string(),
        "invalid size -1: sizes cannot be negative"
    );
    assert_eq!(
        ConfigSize::deserialize(float(1.5)).unwrap_err().to_string(),
        "invalid size 1.5: write a whole number of bytes or e.g. \"1536K\""
    );
    assert_eq!(
        ConfigDuration::deserialize(int(75))
            .unwrap_err()
            .to_string(),
        "durations need a unit: write \"75s\" (or \"500ms\", \"2m\"), not 75"
    );
    assert_eq!(
        ConfigDuration::deserialize(float(1.5))
            .unwrap_err()
            .to_string(),
        "durations need a unit: write e.g. \"500ms\" or \"5s\", not 1.5"
    );
    assert_eq!(
        ConfigDuration::deserialize(text("3s")).unwrap(),
        ConfigDuration(Duration::from_secs(3))
    );
}
