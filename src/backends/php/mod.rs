//! What both PHP backends (embedded and FastCGI) share: which script a path runs
//! and the CGI variables it gets (`cgi`).

pub mod cgi;
