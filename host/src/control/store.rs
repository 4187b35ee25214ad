//! The configuration as a document: TOML and JSON forms of it, one section
//! replaced or removed by its path, and the atomic write of the configuration
//! file (which stays the source of truth: a later SIGHUP or restart reads what
//! the API wrote).

use serde_json::Value as Json;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// A JSON value as TOML; `at` names where it is, for the message about a value
/// TOML cannot hold (null).
pub fn json_to_toml(v: &Json, at: &str) -> Result<toml::Value, String> {
    Ok(match v {
        Json::Null => {
            return Err(format!(
                "{} is null: TOML has no null. Leave the key out to have its default.",
                if at.is_empty() { "the document" } else { at }
            ))
        }
        Json::Bool(b) => toml::Value::Boolean(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => toml::Value::Integer(i),
            (None, Some(f)) if n.is_f64() => toml::Value::Float(f),
            _ => {
                return Err(format!(
                    "{at} = {n} is too large for TOML (a 64-bit signed integer)"
                ))
            }
        },
        Json::String(s) => toml::Value::String(s.clone()),
        Json::Array(a) => toml::Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, v)| json_to_toml(v, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(o) => toml::Value::Table(
            o.iter()
                .map(|(k, v)| {
                    let at = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    Ok((k.clone(), json_to_toml(v, &at)?))
                })
                .collect::<Result<_, String>>()?,
        ),
    })
}

/// A whole document as TOML text.
pub fn to_toml_text(doc: &toml::Table) -> String {
    toml::to_string_pretty(doc).unwrap_or_else(|e| format!("# cannot be shown as TOML: {e}\n"))
}

/// One value as TOML text: a table as a document, anything else as a value.
pub fn value_to_toml_text(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(t) => to_toml_text(t),
        other => format!("{other}\n"),
    }
}

/// The path segments of `/config/a/b` (percent-decoded): `["a", "b"]`.
pub fn segments(rest: &str) -> Result<Vec<String>, String> {
    rest.split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

pub fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-escape in the path segment \"{s}\""))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("the path segment \"{s}\" is not UTF-8"))
}

/// The value at `path` in `doc`, if there is one (numbers index arrays).
pub fn get<'a>(doc: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let mut v = doc.get(first)?;
    for seg in rest {
        v = match v {
            toml::Value::Table(t) => t.get(seg)?,
            toml::Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// Replaces (or adds) the value at `path`, creating the tables on the way;
/// `None` removes it. Err: the path goes through something that is not a table
/// (or an array index that does not exist).
pub fn set(
    doc: &mut toml::Table,
    path: &[String],
    value: Option<toml::Value>,
) -> Result<(), String> {
    let shown = path.join(".");
    let Some((last, parents)) = path.split_last() else {
        return Err("no section named: use PUT /config for the whole configuration".to_owned());
    };
    let mut table = doc;
    let mut at = Vec::new();
    for seg in parents {
        at.push(seg.as_str());
        let next = table
            .entry(seg.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match next {
            toml::Value::Table(t) => t,
            toml::Value::Array(a) => {
                // `backend/routing_rules/0/...`: into one element of an array.
                return set_in_array(a, &path[at.len()..], value, &shown);
            }
            _ => {
                return Err(format!(
                    "{} is not a table, so it has no {shown}",
                    at.join(".")
                ))
            }
        };
    }
    match value {
        Some(v) => {
            table.insert(last.clone(), v);
        }
        None => {
            if table.remove(last).is_none() {
                return Err(format!("the running configuration has no {shown}"));
            }
        }
    }
    Ok(())
}

fn set_in_array(
    array: &mut [toml::Value],
    path: &[String],
    value: Option<toml::Value>,
    shown: &str,
) -> Result<(), String> {
    let index = path[0]
        .parse::<usize>()
        .ok()
        .filter(|&i| i < array.len())
        .ok_or_else(|| {
            format!(
                "{shown}: \"{}\" is not an index of that array (0 to {})",
                path[0],
                array.len().saturating_sub(1)
            )
        })?;
    if path.len() == 1 {
        return match value {
            Some(v) => {
                array[index] = v;
                Ok(())
            }
            None => Err(format!(
                "{shown}: remove an element by replacing the whole array"
            )),
        };
    }
    match &mut array[index] {
        toml::Value::Table(t) => set(t, &path[1..], value).map_err(|e| format!("{shown}: {e}")),
        _ => Err(format!("{shown}: that element is not a table")),
    }
}

/// Writes `text` to the configuration file `path` atomically: a temporary file
/// beside it (same directory, so the rename cannot cross file systems), synced,
/// given the original's mode and owner, renamed over it, and the directory
/// synced. A reader sees the old file or the new one, never a part.
pub fn write_atomically(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.control-{}.tmp", std::process::id()));
    let meta = std::fs::metadata(path).ok();
    let mode = meta
        .as_ref()
        .map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text)?;
        if let Some(m) = &meta {
            // Keep the owner (the master may run as root for a file an admin
            // user owns); failing that (not root) the file is ours anyway.
            let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
        }
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(p: &str) -> Vec<String> {
        segments(p).unwrap()
    }

    #[test]
    fn sections_are_replaced_added_and_removed() {
        let mut doc: toml::Table = "[backend]\nenable_hybrid = true\n[backend.static_files]\nroot = \"/a\"\n[[backend.routing_rules]]\nbackend = \"static\"\n".parse().unwrap();
        let new: toml::Value = toml::Value::Table("root = \"/b\"\nenable = true".parse().unwrap());
        set(&mut doc, &seg("backend/static_files"), Some(new)).unwrap();
        assert_eq!(
            get(&doc, &seg("backend/static_files/root"))
                .unwrap()
                .as_str(),
            Some("/b")
        );
        assert_eq!(
            get(&doc, &seg("backend/enable_hybrid")).unwrap().as_bool(),
            Some(true)
        );
        set(
            &mut doc,
            &seg("backend/routing_rules/0/backend"),
            Some("embedded".into()),
        )
        .unwrap();
        assert_eq!(
            get(&doc, &seg("backend/routing_rules/0/backend"))
                .unwrap()
                .as_str(),
            Some("embedded")
        );
        set(&mut doc, &seg("server/workers"), Some(2.into())).unwrap();
        assert_eq!(
            get(&doc, &seg("server/workers")).unwrap().as_integer(),
            Some(2)
        );
        set(&mut doc, &seg("backend/enable_hybrid"), None).unwrap();
        assert!(get(&doc, &seg("backend/enable_hybrid")).is_none());
        assert!(set(&mut doc, &seg("backend/enable_hybrid"), None).is_err());
        assert!(set(&mut doc, &seg("server/workers/x"), Some(1.into())).is_err());
        assert_eq!(
            seg("php/ini/opcache%2Eenable"),
            ["php", "ini", "opcache.enable"]
        );
    }

    #[test]
    fn json_null_is_refused_with_its_place() {
        let v: Json = serde_json::json!({"backend": {"default_backend": null}});
        let e = json_to_toml(&v, "").unwrap_err();
        assert!(e.starts_with("backend.default_backend is null"), "{e}");
    }

    #[test]
    fn the_write_replaces_the_file_and_keeps_its_mode() {
        let dir = std::env::temp_dir().join(format!("fephp-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.toml");
        std::fs::write(&f, "a = 1\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&f, b"a = 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "a = 2\n");
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
