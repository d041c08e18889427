//! Signing benchmark sets: a whole collector with fixed keys (root v1, one channel), writing
//! the trust anchor and set files that the real `picket-agent import-set` verifies. The same
//! construction as `SetSigner` in `tests/lib.rs`, for generated sets of any size.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use picket_proto::{
    sha256, sign_document, ChannelSpec, Content, Manifest, PayloadKind, Role, RoleSpec, Root, SetFile,
    SigningKey, Snapshot, Timestamp, Tlp, TrustAnchor,
};

/// A signer writing into one directory.
#[derive(Debug)]
pub struct Signer {
    publisher: SigningKey,
    stamper: SigningKey,
    root_bytes: Vec<u8>,
    anchor: PathBuf,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Signer {
    /// Makes the keys and the root, and writes the trust anchor `dir/root.pub`.
    pub fn new(dir: &Path) -> Result<Signer> {
        let root_key = SigningKey::from_seed([11; 32], Role::Root)?;
        let publisher = SigningKey::from_seed([12; 32], Role::Publisher)?;
        let stamper = SigningKey::from_seed([13; 32], Role::Timestamp)?;
        let now = unix_now();
        let root = Root {
            version: 1,
            created: now - 60,
            expires: now + 86_400,
            org: "Bench Org".into(),
            root: RoleSpec::new(vec![root_key.public()], 1, 400 * 86_400),
            channels: vec![ChannelSpec {
                name: "default".into(),
                publisher: RoleSpec::new(vec![publisher.public()], 1, 30 * 86_400),
                timestamp: RoleSpec::new(vec![stamper.public()], 1, 30 * 86_400),
                max_tlp: Tlp::Amber,
            }],
            tls_ca_pin: None,
        };
        let root_bytes = sign_document(&root, PayloadKind::Root, &[&root_key]);
        let anchor = TrustAnchor {
            org: "Bench Org".into(),
            root_version: 1,
            threshold: 1,
            keys: vec![root_key.public()],
        };
        let path = dir.join("root.pub");
        std::fs::write(&path, anchor.to_text()).with_context(|| format!("writing {}", path.display()))?;
        Ok(Signer {
            publisher,
            stamper,
            root_bytes,
            anchor: path,
        })
    }

    /// The trust anchor's path.
    pub fn anchor(&self) -> &Path {
        &self.anchor
    }

    /// Signs `snapshot` (its version becomes the manifest's and the timestamp's) as a full set
    /// file and writes it to `path`. Returns the snapshot's encoded length.
    pub fn write(&self, path: &Path, snapshot: &Snapshot) -> Result<usize> {
        let bytes = snapshot.encode();
        let now = unix_now();
        let manifest = Manifest {
            channel: snapshot.channel.clone(),
            version: snapshot.version,
            created: now - 1,
            expires: now + 86_400,
            sha256: sha256(&bytes),
            length: bytes.len() as u64,
            max_tlp: Tlp::Green,
            deltas: Vec::new(),
        };
        let manifest = sign_document(&manifest, PayloadKind::Manifest, &[&self.publisher]);
        let ts = Timestamp {
            channel: snapshot.channel.clone(),
            version: snapshot.version,
            created: now - 1,
            expires: now + 86_400,
            manifest_version: snapshot.version,
            manifest_sha256: sha256(&manifest),
            manifest_length: manifest.len() as u64,
        };
        let ts = sign_document(&ts, PayloadKind::Timestamp, &[&self.stamper]);
        let file = SetFile {
            channel: &snapshot.channel,
            roots: vec![(1, &self.root_bytes)],
            timestamp: &ts,
            manifest: &manifest,
            content: Content::Full(&bytes),
        };
        std::fs::write(path, file.encode()).with_context(|| format!("writing {}", path.display()))?;
        Ok(bytes.len())
    }
}
