//! The sans-I/O core of Kafka security: SASL authentication, principals and ACL decisions,
//! computed the way Apache Kafka computes them. No sockets, no glommio, no clock: the
//! connection feeds bytes in and gets bytes and decisions out.
//!
//! ```text
//!  SaslAuthenticate auth_bytes ─▶ scram::ScramServer / plain::authenticate ─▶ user name
//!  mTLS peer certificate ──────▶ principal::subject_dn_from_certificate ──▶ "CN=..,O=.."
//!                                         │ KafkaPrincipal "User:<name>"
//!  request (op, resource) ─────▶ authorizer::Authorizer::authorize ─▶ allow / deny
//! ```
//!
//! - `scram` (+ `scram_messages`): SCRAM-SHA-256/512 server exchange and stored credentials.
//! - `plain`: SASL/PLAIN, checked against the same SCRAM credentials.
//! - `jaas`: the login and the PLAIN users of a Kafka JAAS line.
//! - `principal`: `KafkaPrincipal` and the RFC 2253 name of a certificate subject.
//! - `acl`: ACL bindings and filters with Kafka's wire codes and validation.
//! - `authorizer`: the ACL set and StandardAuthorizer's allow/deny rules.

pub(crate) mod acl;
pub(crate) mod authorizer;
pub mod client;
pub(crate) mod jaas;
pub(crate) mod plain;
pub(crate) mod principal;
pub(crate) mod scram;
mod scram_messages;
