//! From a request target to a backend: normalize the path (`path`), find the
//! best rule (`router`), and for a split rule pick the arm of this request
//! (`split`). Pure: no I/O, no backend.

pub mod path;
pub mod router;
pub mod split;
