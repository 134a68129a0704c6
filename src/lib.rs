//! serin
