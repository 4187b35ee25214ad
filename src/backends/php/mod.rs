//! What both PHP backends (embedded and FastCGI) share: which script a path runs
//! (`resolve`), the CGI variables it gets (`cgi`), and the backend shape both
//! share: resolution in front of a runner (`site`), and the files a script may send
//! instead of its body (`sendfile`). Depends on nothing above the
//! backends: the document root (`docroot`) and HTTP types only.

pub mod cgi;
pub mod resolve;
pub mod sendfile;
pub mod site;

pub use site::{Php, Runner, Site};
