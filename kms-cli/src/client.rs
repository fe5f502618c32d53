//! The mutual-TLS gRPC channel, from `kms-client` (applications connect exactly as the CLI does).

pub use kms_client::connect::{ClientError, Connection, Target, TlsMode, connect, tls_config};
