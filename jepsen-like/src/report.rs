//! HTML rendering of histories and violations.
