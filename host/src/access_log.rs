//! Access log in the combined log format, buffered and flushed twice a second
//! (and at shutdown). Each write is whole lines, so workers appending to one file
//! do not interleave within a line.

use hyper::HeaderMap;
use parking_lot::Mutex;
use std::io::Write;
use std::net::SocketAddr;

pub struct AccessLog {
    out: Option<Mutex<Stamped>>,
}

struct Stamped {
    writer: std::io::BufWriter<Box<dyn Write + Send>>,
    /// The `[10/Oct/2000:13:55:36 -0700]` text for `second`.
    second: i64,
    stamp: String,
}

impl AccessLog {
    /// `target`: "-" (stdout), "off", or a file path (appended to).
    pub fn open(target: &str) -> std::io::Result<AccessLog> {
        let sink: Box<dyn Write + Send> = match target {
            "off" | "" => return Ok(AccessLog { out: None }),
            "-" => Box::new(std::io::stdout()),
            path => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        Ok(AccessLog {
            out: Some(Mutex::new(Stamped {
                writer: std::io::BufWriter::with_capacity(32 * 1024, sink),
                second: -1,
                stamp: String::new(),
            })),
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn log(
        &self,
        peer: &SocketAddr,
        method: &hyper::Method,
        target: &str,
        protocol: &str,
        status: u16,
        bytes: Option<u64>,
        headers: &HeaderMap,
    ) {
        let Some(out) = &self.out else { return };
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| escape(v.as_bytes()))
                .unwrap_or_else(|| "-".to_owned())
        };
        let mut st = out.lock();
        let now = unsafe { libc::time(std::ptr::null_mut()) } as i64;
        if now != st.second {
            st.second = now;
            st.stamp = local_time(now);
        }
        let line = format!(
            "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\"\n",
            peer.ip().to_canonical(),
            st.stamp,
            method,
            escape(target.as_bytes()),
            protocol,
            status,
            bytes.unwrap_or(0),
            header("referer"),
            header("user-agent"),
        );
        let _ = st.writer.write_all(line.as_bytes());
    }

    pub fn flush(&self) {
        if let Some(out) = &self.out {
            let _ = out.lock().writer.flush();
        }
    }
}

/// Escapes quotes, backslashes and control bytes as `\xHH`, like nginx.
fn escape(v: &[u8]) -> String {
    let mut s = String::with_capacity(v.len());
    for &b in v {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            s.push_str(&format!("\\x{b:02X}"));
        } else {
            s.push(b as char);
        }
    }
    s
}

/// `10/Oct/2000:13:55:36 -0700` in the local time zone.
fn local_time(t: i64) -> String {
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let mut buf = [0u8; 64];
    // SAFETY: valid pointers to a time_t, a tm and a buffer of the stated size;
    // the format is NUL-terminated.
    let n = unsafe {
        let tt = t as libc::time_t;
        libc::localtime_r(&tt, &mut tm);
        libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            c"%d/%b/%Y:%H:%M:%S %z".as_ptr(),
            &tm,
        )
    };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
