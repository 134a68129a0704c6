//! serin core
