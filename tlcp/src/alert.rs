//! Alert descriptions (GB/T 38636-2020 §6.3.4.3; the TLS 1.x codes plus TLCP's own 200-205).

pub(crate) const CLOSE_NOTIFY: u8 = 0;
pub(crate) const UNEXPECTED_MESSAGE: u8 = 10;
pub(crate) const BAD_RECORD_MAC: u8 = 20;
pub(crate) const RECORD_OVERFLOW: u8 = 22;
pub(crate) const HANDSHAKE_FAILURE: u8 = 40;
pub(crate) const BAD_CERTIFICATE: u8 = 42;
pub(crate) const UNSUPPORTED_CERTIFICATE: u8 = 43;
pub(crate) const CERTIFICATE_EXPIRED: u8 = 45;
pub(crate) const UNKNOWN_CA: u8 = 48;
pub(crate) const DECODE_ERROR: u8 = 50;
pub(crate) const DECRYPT_ERROR: u8 = 51;
pub(crate) const PROTOCOL_VERSION: u8 = 70;
pub(crate) const INTERNAL_ERROR: u8 = 80;

/// Alert level byte.
pub(crate) const LEVEL_WARNING: u8 = 1;
pub(crate) const LEVEL_FATAL: u8 = 2;

/// The name of an alert description, for errors and logs.
pub(crate) fn name(code: u8) -> &'static str {
    match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        21 => "decryption_failed",
        22 => "record_overflow",
        30 => "decompression_failure",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        90 => "user_canceled",
        100 => "no_renegotiation",
        110 => "unsupported_extension",
        200 => "unsupported_site2site",
        201 => "no_area",
        202 => "unsupported_areatype",
        203 => "bad_ibcparam",
        204 => "unsupported_ibcparam",
        205 => "identity_need",
        _ => "unknown",
    }
}
