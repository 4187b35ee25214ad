//! Loading PHP into the process: libphp from `[php] libphp_path` (dlopen, global
//! symbols), then the SAPI shim (`csrc/`, embedded in this library and loaded from a
//! memfd so that its PHP symbols resolve against that libphp), then PHP's module
//! startup. Once per process, before the host forks its workers.

use super::sapi::{fephp_sapi_callbacks, SapiShim};
use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
use once_cell::sync::OnceCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};

/// The SAPI shim, compiled by build.rs against PHP's headers.
static SHIM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libfephp_sapi.so"));

/// PHP's SAPI name. PHP 8.2's OPcache only switches on under names it knows, and
/// applications read PHP_SAPI: "fpm-fcgi" is both on that list and the truth about
/// what a script sees here — the same variables and functions (getallheaders,
/// fastcgi_finish_request) as under php-fpm behind nginx.
pub const SAPI_NAME: &str = "fpm-fcgi";

/// PHP, started in this process.
pub struct Runtime {
    pub shim: SapiShim,
    pub libphp_path: PathBuf,
    /// Read by tests and benchmarks (`Engine::php_version`).
    #[cfg_attr(not(feature = "internals"), allow(dead_code))]
    pub php_version: String,
    /// The `[php.ini]` lines PHP started with.
    pub ini: String,
    /// Keep libphp mapped for the life of the process.
    _libphp: Library,
    _shim_file: std::fs::File,
}

// SAFETY: the shim's function table is plain code pointers; PHP itself is only ever
// entered from one thread at a time (the executor), which the executor enforces.
unsafe impl Send for Runtime {}
unsafe impl Sync for Runtime {}

static RUNTIME: OnceCell<Runtime> = OnceCell::new();

/// A failure that leaves this process unable to start PHP at all (PHP's startup
/// ran and failed, or a refused library could not be unloaded).
static BROKEN: OnceCell<String> = OnceCell::new();

/// Why `load` failed, and whether another attempt in this process may succeed.
enum LoadError {
    /// Nothing of the library stays in the process: a later call may try again
    /// (e.g. with the right `libphp_path`).
    Retry(String),
    /// PHP's startup ran, or the library stays mapped: only a new process can
    /// start PHP.
    Final(String),
}

/// Starts PHP once per process; later calls return the same runtime. A failure
/// is remembered only when it leaves the process unable to start PHP; otherwise
/// the next call tries again (a host may fix `libphp_path` and call again).
pub fn start(
    libphp_path: &Path,
    ini: &BTreeMap<String, crate::config::IniValue>,
    callbacks: &fephp_sapi_callbacks,
) -> Result<&'static Runtime, String> {
    if let Some(why) = BROKEN.get() {
        return Err(why.clone());
    }
    let rt = RUNTIME.get_or_try_init(|| match load(libphp_path, ini, callbacks) {
        Ok(rt) => Ok(rt),
        Err(LoadError::Retry(why)) => Err(why),
        Err(LoadError::Final(why)) => {
            let why = format!(
                "{why}\n    PHP cannot be started in this process any more: start a new process."
            );
            let _ = BROKEN.set(why.clone());
            Err(why)
        }
    })?;
    match differs(rt, libphp_path, ini) {
        Some(why) => Err(why),
        None => Ok(rt),
    }
}

/// Why the PHP running in this process (if any) is not the one `libphp_path` and
/// `ini` describe.
pub fn conflict(
    libphp_path: &Path,
    ini: &BTreeMap<String, crate::config::IniValue>,
) -> Option<String> {
    differs(RUNTIME.get()?, libphp_path, ini)
}

fn differs(
    rt: &Runtime,
    libphp_path: &Path,
    ini: &BTreeMap<String, crate::config::IniValue>,
) -> Option<String> {
    if rt.libphp_path != libphp_path {
        return Some(format!(
            "PHP is already running from {} in this process; a different libphp_path ({}) needs a restart",
            rt.libphp_path.display(),
            libphp_path.display()
        ));
    }
    if rt.ini != ini_entries(ini) {
        return Some("[php.ini] differs from the settings PHP started with in this process: php.ini settings apply when PHP starts, so changing them needs a restart (not a reload).".to_owned());
    }
    None
}

/// `[php.ini]` as PHP's ini_entries text: "key=value\n" lines.
fn ini_entries(ini: &BTreeMap<String, crate::config::IniValue>) -> String {
    ini.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// The first "API<8 digits>,NTS" / ",TS" (plus ",debug" if present) in a binary.
fn find_build_id(image: &[u8]) -> Option<String> {
    let at = image.windows(12).position(|w| {
        w.starts_with(b"API") && w[3..11].iter().all(u8::is_ascii_digit) && w[11] == b','
    })?;
    let rest = &image[at..];
    let end = rest
        .iter()
        .position(|&b| b == 0 || !(b.is_ascii_alphanumeric() || b == b','))
        .unwrap_or(rest.len());
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

fn load(
    libphp_path: &Path,
    ini: &BTreeMap<String, crate::config::IniValue>,
    callbacks: &fephp_sapi_callbacks,
) -> Result<Runtime, LoadError> {
    // SAFETY: loading a library runs its initializers; libphp's are PHP's own.
    let libphp = unsafe { Library::open(Some(libphp_path), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| LoadError::Retry(format!("cannot load libphp from {}: {e}\n    Check [php] libphp_path (apt-get install libphp8.2-embed provides /usr/lib/libphp.so).", libphp_path.display())))?;
    match load_shim(libphp_path, &libphp) {
        Ok((shim, shim_file, built_php)) => {
            start_php(libphp_path, ini, callbacks, &shim).map_err(LoadError::Final)?;
            Ok(Runtime {
                shim,
                libphp_path: libphp_path.to_owned(),
                php_version: built_php,
                ini: ini_entries(ini),
                _libphp: libphp,
                _shim_file: shim_file,
            })
        }
        Err(why) => {
            drop(libphp);
            // Its symbols are global: if the refused library stays mapped, a later
            // libphp's shim could bind to them. Retry only when it is gone.
            match still_loaded(libphp_path) {
                false => Err(LoadError::Retry(why)),
                true => Err(LoadError::Final(why)),
            }
        }
    }
}

/// Whether the library at `path` is still mapped in this process.
fn still_loaded(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: RTLD_NOLOAD only looks the library up; a handle it returns holds a
    // reference, released at once.
    unsafe {
        let handle = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return false;
        }
        libc::dlclose(handle);
        true
    }
}

/// Loads the SAPI shim against the libphp just loaded and checks that this
/// libphp is the PHP API and thread safety the shim was built for. Gives the
/// shim, its memfd and the PHP version it was built against.
fn load_shim(
    libphp_path: &Path,
    _libphp: &Library,
) -> Result<(SapiShim, std::fs::File, String), String> {
    let shown = libphp_path.display();

    let shim_file = shim_memfd()?;
    let shim_path = format!("/proc/self/fd/{}", shim_file.as_raw_fd());
    // SAFETY: the shim is our own C code; its undefined symbols resolve against the
    // libphp loaded above with RTLD_GLOBAL.
    let shim = unsafe { SapiShim::new(&shim_path) }.map_err(|e| {
        format!("cannot load fe-php's PHP SAPI into {shown}: {e}\n    The libphp there does not export what fe-php was built against; install the PHP version whose headers fe-php was built with.")
    })?;
    // SAFETY: both return pointers to static strings.
    let (built_php, built_id) = unsafe {
        (
            CStr::from_ptr(shim.fephp_sapi_php_version())
                .to_string_lossy()
                .into_owned(),
            CStr::from_ptr(shim.fephp_sapi_build_id())
                .to_string_lossy()
                .into_owned(),
        )
    };
    // libphp carries its ZEND_MODULE_BUILD_ID ("API20220829,NTS") as a string: the
    // module API and thread safety must both be what the shim was compiled for,
    // checked before any of PHP's code runs.
    let image = std::fs::read(libphp_path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if !contains(&image, built_id.as_bytes()) {
        let found = find_build_id(&image).unwrap_or_else(|| "an unknown build".to_owned());
        return Err(format!(
            "libphp at {shown} is {found}, but fe-php was built against the headers of PHP {built_php} ({built_id}).\n    Point [php] libphp_path at a libphp of that PHP version and thread safety, or rebuild fe-php with the matching php-dev installed."
        ));
    }
    Ok((shim, shim_file, built_php))
}

/// Runs PHP's module startup through the shim, with `[php.ini]`.
fn start_php(
    libphp_path: &Path,
    ini: &BTreeMap<String, crate::config::IniValue>,
    callbacks: &fephp_sapi_callbacks,
    shim: &SapiShim,
) -> Result<(), String> {
    let entries = ini_entries(ini);
    let name = CString::new(SAPI_NAME).expect("no NUL");
    // Both strings must outlive PHP: the shim copies the ini text; the name is leaked.
    let name = Box::leak(name.into_boxed_c_str());
    let entries = CString::new(entries)
        .map_err(|_| "[php.ini] values must not contain NUL bytes".to_owned())?;
    let mut err = [0 as c_char; 512];
    // SAFETY: valid callbacks table and strings; called once per process.
    let rc = unsafe {
        shim.fephp_sapi_startup(
            callbacks,
            name.as_ptr(),
            entries.as_ptr(),
            err.as_mut_ptr(),
            err.len(),
        )
    };
    if rc != 0 {
        let msg = unsafe { CStr::from_ptr(err.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        return Err(format!(
            "PHP did not start from {}: {msg}",
            libphp_path.display()
        ));
    }
    Ok(())
}

/// The shim as an anonymous in-memory file (so nothing is written to disk).
fn shim_memfd() -> Result<std::fs::File, String> {
    // SAFETY: memfd_create with a static name; a non-negative result is a new fd we own.
    let fd = unsafe { libc::memfd_create(c"fephp_sapi".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "memfd_create failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(SHIM)
        .map_err(|e| format!("writing the SAPI shim: {e}"))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    #[test]
    fn build_ids() {
        assert_eq!(
            super::find_build_id(b"xx\0API20220829,NTS\0yy"),
            Some("API20220829,NTS".to_owned())
        );
        assert_eq!(
            super::find_build_id(b"API20230831,TS,debug\0"),
            Some("API20230831,TS,debug".to_owned())
        );
        assert_eq!(super::find_build_id(b"APIxx"), None);
        assert!(super::contains(b"abcAPI1", b"API1"));
    }
}
