//! The library's log lines handed to the host: the library logs through `tracing`,
//! and a host that is not a Rust program (nginx, C, Go) has nothing that receives
//! those events. `fephp_log_set_callback` installs a process-wide subscriber
//! that turns each event into a `fephp_log_record` for the host's callback.

use super::boundary::{guard, set_last_error};
use super::types::{fephp_result, fephp_str};
use parking_lot::RwLock;
use std::ffi::c_void;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// Severity of a log record; a callback receives records up to the level it
/// asked for (`FEPHP_LOG_LEVEL_WARN` includes errors).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum fephp_log_level {
    /// Nothing: used to stop delivery.
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

/// One log line of the library, borrowed for the duration of the callback.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct fephp_log_record {
    pub level: fephp_log_level,
    /// What it is about: `php` (PHP's own messages and PHP-FPM's stderr), a
    /// backend (`embedded`, `fastcgi`, `proxy`, `static_files`) or another part
    /// of the library (`engine`, `config`, …).
    pub target: fephp_str,
    /// The message, with any further fields appended as ` key=value`.
    pub message: fephp_str,
    /// The request it belongs to (its target, e.g. `/index.php?a=1`); empty when
    /// it belongs to none.
    pub uri: fephp_str,
}

/// Receives one record. It runs on the thread that logged — a host thread in a
/// C ABI call, a worker's PHP thread, or the library's I/O thread — so it must be
/// thread-safe and must not call back into the engine; it should be quick.
pub type fephp_log_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, record: *const fephp_log_record)>;

struct Sink {
    callback: unsafe extern "C" fn(*mut c_void, *const fephp_log_record),
    /// The host's pointer, passed back untouched.
    userdata: usize,
}

/// The host's callback; read-locked while one runs, so replacing it waits for
/// the calls under way.
static SINK: RwLock<Option<Sink>> = RwLock::new(None);
/// Highest level delivered (`fephp_log_level` as a number); 0 = none.
static MAX_LEVEL: AtomicU32 = AtomicU32::new(0);
/// Whether the library's subscriber became the process's (decided at the first call).
static INSTALLED: OnceLock<bool> = OnceLock::new();

fn level_number(level: &Level) -> u32 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

fn record_level(n: u32) -> fephp_log_level {
    match n {
        1 => fephp_log_level::Error,
        2 => fephp_log_level::Warn,
        3 => fephp_log_level::Info,
        4 => fephp_log_level::Debug,
        _ => fephp_log_level::Trace,
    }
}

/// The subscriber layer that forwards events to the `SINK`.
struct CallbackLayer;

impl<S: Subscriber> Layer<S> for CallbackLayer {
    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        level_number(metadata.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let level = level_number(meta.level());
        if level > MAX_LEVEL.load(Ordering::Relaxed) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if fields.message.is_empty() {
            fields.message = fields.rest.trim_start().to_owned();
        }
        let sink = SINK.read();
        let Some(sink) = sink.as_ref() else {
            return;
        };
        let record = fephp_log_record {
            level: record_level(level),
            target: borrowed(short_target(meta.target())),
            message: borrowed(&fields.message),
            uri: borrowed(&fields.uri),
        };
        // SAFETY: the host registered this function for exactly this call; the
        // record and the strings it points to live until it returns.
        unsafe { (sink.callback)(sink.userdata as *mut c_void, &record) };
    }
}

/// `fe_php::backends::fastcgi::pool` → `fastcgi`, `fe_php::engine` → `engine`;
/// other targets (`php`) as they are.
fn short_target(target: &str) -> &str {
    let Some(path) = target.strip_prefix("fe_php::") else {
        return target;
    };
    let path = path.strip_prefix("backends::").unwrap_or(path);
    path.split("::").next().unwrap_or(path)
}

fn borrowed(s: &str) -> fephp_str {
    fephp_str {
        ptr: s.as_ptr().cast(),
        len: s.len(),
    }
}

/// An event's message, its `uri` field, and the other fields after the message.
#[derive(Default)]
struct Fields {
    message: String,
    uri: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "uri" => self.uri = value.to_owned(),
            "message" => self.message = value.to_owned(),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
        self.join();
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "uri" => self.uri = format!("{value:?}"),
            "message" => self.message = format!("{value:?}"),
            name => {
                let _ = write!(self.rest, " {name}={value:?}");
            }
        }
        self.join();
    }
}

impl Fields {
    /// Keeps `message` as the text the callback gets: the message, then the
    /// other fields (a field may be recorded before or after the message).
    fn join(&mut self) {
        if !self.rest.is_empty() && !self.message.is_empty() {
            self.message.push_str(&self.rest);
            self.rest.clear();
        }
    }
}

/// Sends every library log line up to `max_level` to `callback` (with
/// `userdata` passed back untouched), from now on and in every thread of the
/// process, including those started later. `callback` NULL (or `max_level`
/// `FEPHP_LOG_LEVEL_OFF`) stops delivery; once this returns, the previous
/// callback is not running and will not be called again, so its `userdata` may
/// be freed. Call it before `fephp_init` to also receive the configuration's
/// messages; after a fork the child keeps the setting.
///
/// The library installs a process-wide `tracing` subscriber on the first call:
/// a Rust host that installed its own gets `FEPHP_RESULT_INVALID_ARGUMENT` and
/// keeps receiving events through that one.
#[no_mangle]
pub unsafe extern "C" fn fephp_log_set_callback(
    callback: fephp_log_callback,
    userdata: *mut c_void,
    max_level: u32,
) -> fephp_result {
    guard(|| {
        if max_level > fephp_log_level::Trace as u32 {
            set_last_error(format!(
                "max_level {max_level} is not a fephp_log_level (0 = off … 5 = trace)"
            ));
            return fephp_result::InvalidArgument;
        }
        let installed = INSTALLED.get_or_init(|| {
            let subscriber = tracing_subscriber::registry().with(CallbackLayer);
            tracing::subscriber::set_global_default(subscriber).is_ok()
        });
        if !installed {
            set_last_error(
                "this process already has a tracing subscriber of its own: its events go there",
            );
            return fephp_result::InvalidArgument;
        }
        let mut sink = SINK.write();
        *sink = callback.map(|callback| Sink {
            callback,
            userdata: userdata as usize,
        });
        let level = if sink.is_some() { max_level } else { 0 };
        MAX_LEVEL.store(level, Ordering::Relaxed);
        // Callsites cache whether they are enabled: have them ask again.
        tracing::callsite::rebuild_interest_cache();
        fephp_result::Ok
    })
}
