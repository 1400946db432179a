//! Host tests: placeholder, filled below.
