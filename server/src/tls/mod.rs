//! Transport security: who is on the other end of a connection.
//!
//! Today this holds only the names of a verified certificate ([`names`]); the listeners, the
//! outgoing channels and the certificate tools build on it.

pub mod names;
