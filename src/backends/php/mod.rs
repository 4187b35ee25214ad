//! What both PHP backends (embedded and FastCGI) share: which script a path runs
//! (`resolve`) and the CGI variables it gets (`cgi`). Depends on nothing above the
//! backends: the document root (`docroot`) and HTTP types only.

pub mod cgi;
pub mod resolve;
