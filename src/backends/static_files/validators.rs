//! HTTP validators and ranges (RFC 9110 §8.8, §13, §14): entity-tag lists,
//! dates and `Range` parsing. Pure functions, no I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One entity-tag from a header list.
#[derive(Debug, PartialEq, Eq)]
pub struct ETag<'a> {
    pub weak: bool,
    /// Between the quotes.
    pub opaque: &'a str,
}

/// The value of If-Match / If-None-Match.
#[derive(Debug, PartialEq, Eq)]
pub enum ETagList<'a> {
    Any,
    Tags(Vec<ETag<'a>>),
}

/// Parses `*` or a comma-separated list of entity-tags. Malformed members are skipped.
pub fn parse_etag_list(value: &str) -> ETagList<'_> {
    if value.trim() == "*" {
        return ETagList::Any;
    }
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let weak = rest.starts_with("W/");
        if weak {
            rest = &rest[2..];
        }
        if let Some(body) = rest.strip_prefix('"') {
            match body.find('"') {
                Some(end) => {
                    tags.push(ETag {
                        weak,
                        opaque: &body[..end],
                    });
                    rest = &body[end + 1..];
                }
                None => break,
            }
        } else {
            // Not a quoted tag: skip to the next comma.
            match rest.find(',') {
                Some(i) => rest = &rest[i + 1..],
                None => break,
            }
        }
    }
    ETagList::Tags(tags)
}

/// Parses one entity-tag (for If-Range); None when the value is not an entity-tag.
pub fn parse_etag(value: &str) -> Option<ETag<'_>> {
    let v = value.trim();
    let (weak, v) = match v.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains('"')).then_some(ETag {
        weak,
        opaque: inner,
    })
}

/// Our own ETag, `"…"` with quotes, against a list: strong comparison (If-Match).
pub fn strong_match(list: &ETagList<'_>, ours: &str) -> bool {
    match list {
        ETagList::Any => true,
        ETagList::Tags(tags) => tags.iter().any(|t| !t.weak && t.opaque == unquote(ours)),
    }
}

/// Weak comparison (If-None-Match).
pub fn weak_match(list: &ETagList<'_>, ours: &str) -> bool {
    match list {
        ETagList::Any => true,
        ETagList::Tags(tags) => tags.iter().any(|t| t.opaque == unquote(ours)),
    }
}

fn unquote(tag: &str) -> &str {
    tag.trim_start_matches("W/").trim_matches('"')
}

/// Parses an HTTP-date (IMF-fixdate, RFC 850 or asctime).
pub fn parse_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

/// A modification time truncated to whole seconds, as HTTP dates carry.
pub fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A byte range, both ends inclusive, within a representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The outcome of a `Range` header against a representation of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeOutcome {
    /// Not a valid bytes range header (or too many ranges): serve the whole thing.
    Ignore,
    /// No range overlaps the representation: 416.
    Unsatisfiable,
    /// Sorted, coalesced, non-empty.
    Ranges(Vec<ByteRange>),
}

/// Most ranges honoured in one request; more is treated as no Range at all.
pub const MAX_RANGES: usize = 32;

pub fn parse_range(value: &str, size: u64) -> RangeOutcome {
    let value = value.trim();
    let Some((unit, specs)) = value.split_once('=') else {
        return RangeOutcome::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeOutcome::Ignore;
    }
    let mut ranges = Vec::new();
    let mut count = 0;
    for spec in specs.split(',') {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        count += 1;
        if count > MAX_RANGES {
            return RangeOutcome::Ignore;
        }
        let Some((a, b)) = spec.split_once('-') else {
            return RangeOutcome::Ignore;
        };
        let (a, b) = (a.trim(), b.trim());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        if a.is_empty() {
            // Suffix range: the last N bytes.
            if !digits(b) {
                return RangeOutcome::Ignore;
            }
            let n: u64 = b.parse().unwrap_or(u64::MAX);
            if n == 0 || size == 0 {
                continue;
            }
            ranges.push(ByteRange {
                first: size.saturating_sub(n),
                last: size - 1,
            });
        } else {
            if !digits(a) || !(b.is_empty() || digits(b)) {
                return RangeOutcome::Ignore;
            }
            let first: u64 = match a.parse() {
                Ok(v) => v,
                Err(_) => continue, // beyond u64: cannot overlap
            };
            let last: u64 = if b.is_empty() {
                u64::MAX
            } else {
                b.parse().unwrap_or(u64::MAX)
            };
            if last < first {
                return RangeOutcome::Ignore;
            }
            if first >= size {
                continue;
            }
            ranges.push(ByteRange {
                first,
                last: last.min(size - 1),
            });
        }
    }
    if count == 0 {
        return RangeOutcome::Ignore;
    }
    if ranges.is_empty() {
        return RangeOutcome::Unsatisfiable;
    }
    ranges.sort_by_key(|r| r.first);
    let mut merged: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(m) if r.first <= m.last.saturating_add(1) => m.last = m.last.max(r.last),
            _ => merged.push(r),
        }
    }
    RangeOutcome::Ranges(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_lists() {
        assert_eq!(parse_etag_list(" * "), ETagList::Any);
        let l = parse_etag_list(r#""a", W/"b",  "c,d" , junk, "e""#);
        assert_eq!(
            l,
            ETagList::Tags(vec![
                ETag {
                    weak: false,
                    opaque: "a"
                },
                ETag {
                    weak: true,
                    opaque: "b"
                },
                ETag {
                    weak: false,
                    opaque: "c,d"
                },
                ETag {
                    weak: false,
                    opaque: "e"
                },
            ])
        );
        assert!(strong_match(&l, "\"a\""));
        assert!(!strong_match(&l, "\"b\""));
        assert!(weak_match(&l, "\"b\""));
        assert!(!weak_match(&l, "\"z\""));
        assert_eq!(
            parse_etag("W/\"x\""),
            Some(ETag {
                weak: true,
                opaque: "x"
            })
        );
        assert_eq!(parse_etag("Sun, 06 Nov 1994 08:49:37 GMT"), None);
    }

    #[test]
    fn dates() {
        let t = parse_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(parse_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(t));
        assert_eq!(parse_date("Sun Nov  6 08:49:37 1994"), Some(t));
        assert_eq!(parse_date("yesterday"), None);
    }

    fn r(first: u64, last: u64) -> ByteRange {
        ByteRange { first, last }
    }

    #[test]
    fn ranges() {
        use RangeOutcome::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Ranges(vec![r(0, 99)]));
        assert_eq!(parse_range("bytes=900-", 1000), Ranges(vec![r(900, 999)]));
        assert_eq!(parse_range("bytes=-100", 1000), Ranges(vec![r(900, 999)]));
        assert_eq!(parse_range("bytes=-5000", 1000), Ranges(vec![r(0, 999)]));
        assert_eq!(parse_range("bytes=0-5000", 1000), Ranges(vec![r(0, 999)]));
        assert_eq!(
            parse_range("BYTES = 0-0 , 10-19", 1000),
            Ranges(vec![r(0, 0), r(10, 19)])
        );
        assert_eq!(
            parse_range("bytes=10-19,0-4,15-30,31-40", 1000),
            Ranges(vec![r(0, 4), r(10, 40)])
        );
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), Ignore);
        assert_eq!(parse_range("bytes=a-b", 1000), Ignore);
        assert_eq!(parse_range("items=0-1", 1000), Ignore);
        assert_eq!(parse_range("bytes=", 1000), Ignore);
        assert_eq!(
            parse_range("bytes=99999999999999999999999-", 1000),
            Unsatisfiable
        );
        let many: Vec<String> = (0..40)
            .map(|i| format!("{}-{}", i * 10, i * 10 + 1))
            .collect();
        assert_eq!(
            parse_range(&format!("bytes={}", many.join(",")), 1000),
            Ignore
        );
    }
}
