//! The events use cases (filled below).
