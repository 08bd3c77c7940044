//! The versioned model file: one self-contained file per trained model.
//!
//! Layout (little-endian): magic `TEMPONET` (8 bytes), format version (u32), model kind code (u8), header length
//! (u64), JSON header (config, feature space with normalisation statistics, vocabularies/count tables, pair
//! tables, version counter), weights length (u64), weights (libtorch VarStore stream; empty for models without
//! a network), FNV-1a 64 checksum of everything before it (u64).
//!
//! Loading checks each part in order and names the file and what is wrong: not a model file, another format
//! version, unknown kind, truncated (which part, how many bytes expected and present), checksum mismatch
//! (corrupt), unreadable header or weights.
//!
//! Versions: 1 first release; 2 adds the silence mark (TempoNet and STAN silence heads, the silence threshold in
//! the feature space, session statistics in the pair tables and the arrival rate); 4 adds the feature space's
//! support (values and ranges the data showed, see [`super::support`]); 5 adds the exact ports above 1023 to the
//! support (how often each occurred, per protocol and direction) and TempoNet's port decoding.

use super::{DeviceChoice, Model, ModelError, ModelKind, independent, stan, temponet};
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"TEMPONET";
pub const FORMAT_VERSION: u32 = 5;

fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Serialises a model to bytes.
pub fn to_bytes(model: &Model) -> Result<Vec<u8>, ModelError> {
    let header = serde_json::to_vec(&model.0.header())
        .map_err(|e| ModelError::Invalid(format!("header: {e}")))?;
    let weights = model.0.weights()?;
    let mut v = Vec::with_capacity(header.len() + weights.len() + 64);
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    v.push(model.kind().code());
    v.extend_from_slice(&(header.len() as u64).to_le_bytes());
    v.extend_from_slice(&header);
    v.extend_from_slice(&(weights.len() as u64).to_le_bytes());
    v.extend_from_slice(&weights);
    let c = fnv64(&v);
    v.extend_from_slice(&c.to_le_bytes());
    Ok(v)
}

pub fn save(path: &Path, model: &Model) -> Result<(), ModelError> {
    let bytes = to_bytes(model)?;
    std::fs::write(path, bytes).map_err(|e| ModelError::File {
        file: path.display().to_string(),
        message: format!("cannot write: {e}"),
    })
}

pub fn load(path: &Path, device: DeviceChoice) -> Result<Model, ModelError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ModelError::File {
        file: name.clone(),
        message: format!("cannot read: {e}"),
    })?;
    from_bytes(&bytes, &name, device)
}

/// Parses a model file's bytes; `name` is used in errors.
pub fn from_bytes(bytes: &[u8], name: &str, device: DeviceChoice) -> Result<Model, ModelError> {
    let err = |m: String| ModelError::File {
        file: name.to_string(),
        message: m,
    };
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize, what: &str| -> Result<&[u8], ModelError> {
        if bytes.len() < *at + n {
            return Err(err(format!(
                "truncated model file: {what} needs {n} bytes at offset {at}, the file has {} bytes in all",
                bytes.len()
            )));
        }
        let s = &bytes[*at..*at + n];
        *at += n;
        Ok(s)
    };
    let magic = take(&mut at, 8, "the magic number")?;
    if magic != MAGIC {
        return Err(err(format!(
            "not a temponet model file (starts with {:?}, expected \"TEMPONET\")",
            String::from_utf8_lossy(magic)
        )));
    }
    let ver = u32::from_le_bytes(
        take(&mut at, 4, "the format version")?
            .try_into()
            .expect("4 bytes"),
    );
    if ver != FORMAT_VERSION {
        return Err(err(format!(
            "model file format version {ver}, this build reads version {FORMAT_VERSION}: retrain or use a matching build"
        )));
    }
    let code = take(&mut at, 1, "the model kind")?[0];
    let kind =
        ModelKind::from_code(code).ok_or_else(|| err(format!("unknown model kind code {code}")))?;
    let hlen = u64::from_le_bytes(
        take(&mut at, 8, "the header length")?
            .try_into()
            .expect("8 bytes"),
    ) as usize;
    let header = take(&mut at, hlen, "the JSON header")?.to_vec();
    let wlen = u64::from_le_bytes(
        take(&mut at, 8, "the weights length")?
            .try_into()
            .expect("8 bytes"),
    ) as usize;
    let weights = take(&mut at, wlen, "the weights")?.to_vec();
    let body_end = at;
    let sum = u64::from_le_bytes(
        take(&mut at, 8, "the checksum")?
            .try_into()
            .expect("8 bytes"),
    );
    if body_end + 8 != bytes.len() {
        return Err(err(format!(
            "{} unexpected bytes after the checksum",
            bytes.len() - body_end - 8
        )));
    }
    if fnv64(&bytes[..body_end]) != sum {
        return Err(err("corrupt model file: checksum mismatch".into()));
    }
    let bad_header = |e: serde_json::Error| err(format!("unreadable {kind} header: {e}"));
    Ok(Model(match kind {
        ModelKind::TempoNet => {
            let h: temponet::Header = serde_json::from_slice(&header).map_err(bad_header)?;
            let mut m = temponet::TempoNet::from_parts(h, device.device()?);
            m.load_weights(&weights)
                .map_err(|e| err(format!("unreadable weights: {e}")))?;
            Box::new(m)
        }
        ModelKind::Stan => {
            let h: stan::Header = serde_json::from_slice(&header).map_err(bad_header)?;
            let mut m = stan::Stan::from_parts(h, device.device()?);
            m.load_weights(&weights)
                .map_err(|e| err(format!("unreadable weights: {e}")))?;
            Box::new(m)
        }
        ModelKind::Independent => {
            let mut m: independent::Independent =
                serde_json::from_slice(&header).map_err(bad_header)?;
            m.rebuild_index();
            Box::new(m)
        }
    }))
}
