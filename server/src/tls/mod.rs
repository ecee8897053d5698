//! Transport security: who is on the other end of a connection.
//!
//! - [`names`]: the names of a verified certificate (SAN DNS, SAN IP, CN).
//! - [`config`]: the TLS files loaded once into every listener's and channel's configuration.
//! - [`peers`]: the peer list every Raft RPC is checked against.
//! - [`admin`]: TLS for the admin HTTP listener (tonic does the gRPC ports).
//! - [`certs`]: `ringkv-server certs`, a CA and certificates for a cluster.

pub mod admin;
pub mod certs;
pub mod config;
pub mod names;
pub mod peers;
