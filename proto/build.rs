//! Compiles every `kms/v1/*.proto` into Rust without `protoc`: protox parses the files into a
//! `FileDescriptorSet`, which is both written to `OUT_DIR` (for server reflection) and handed to
//! tonic-prost-build's `compile_fds`.

use std::error::Error;
use std::path::PathBuf;
use std::{env, fs};

use prost::Message as _;

/// Where `src/lib.rs` finds the encoded descriptor set.
const DESCRIPTOR_FILE: &str = "kms_v1_descriptor.bin";

/// Keep in step with `src/redact.rs`, which implements `Debug` for each of these.
const SECRET_MESSAGES: &[&str] = &[
    "EncryptRequest",
    "DecryptRequest",
    "DecryptResponse",
    "ReEncryptRequest",
    "GenerateDataKeyRequest",
    "GenerateDataKeyResponse",
    "SignRequest",
    "VerifyRequest",
    "AsymmetricDecryptResponse",
    "GenerateMacRequest",
    "VerifyMacRequest",
    "GenerateRandomResponse",
    "InitResponse",
    "UnsealRequest",
    "RestoreChunk",
    "HashPasswordRequest",
    "HashPasswordResponse",
    "VerifyPasswordRequest",
    "VerifyPasswordResponse",
    "TokenizeRequest",
    "DetokenizeRequest",
    "TokenResult",
    "SignedRequest",
];

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // File names relative to the include root, so imports read `import "kms/v1/common.proto";`.
    let mut files = Vec::new();
    for entry in fs::read_dir(root.join("kms/v1"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "proto") {
            files.push(path.strip_prefix(&root)?.to_path_buf());
        }
    }
    files.sort();
    if files.is_empty() {
        return Err("no .proto files under proto/kms/v1".into());
    }

    // Any change under kms/ (a new file too) reruns this script; nothing else does.
    println!("cargo:rerun-if-changed=kms");
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile(&files, [&root])?;
    fs::write(out_dir.join(DESCRIPTOR_FILE), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        // Clients are built over our own rustls channel, so the `connect` helpers are not needed.
        .build_transport(false)
        // Messages that carry plaintext, key bytes, shares or personal context get a hand-written
        // Debug in src/redact.rs that prints lengths only.
        .skip_debug(SECRET_MESSAGES.iter().map(|m| format!(".kms.v1.{m}")))
        // Malformed messages are INVALID_ARGUMENT, not prost's INTERNAL (src/codec.rs).
        .codec_path("crate::codec::KmsCodec")
        .compile_fds(fds)?;
    Ok(())
}
