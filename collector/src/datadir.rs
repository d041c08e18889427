//! The data directory: its layout, `init`, and opening it again.
//!
//! ```text
//! DIR/picket.toml        configuration (see config.rs)
//! DIR/picket.db          SQLite store
//! DIR/root.pub           trust anchor for agents (no secret)
//! DIR/keys/              online keys, 0700; each file 0600: <role>-<key id>.key, and one
//!                        secret per community, community-<name>.key (32 random bytes), from
//!                        which the ids of what is shared with it are derived
//! DIR/tls/               the agent channel's CA and server certificate (see pki.rs)
//! ```
//!
//! Architecture invariant: the root private key is never written inside DIR. `init` writes it
//! to a path apart from DIR and says so; [`DataDir::readable_root_keys`] finds any root key
//! `serve` could read, so that it can refuse to start.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use picket_proto::{verify_root_chain, PublicKey, Role, Root, SigningKey, TrustAnchor, Verified};

use crate::config::Config;
use crate::pki::{self, Pki};
use crate::store::Store;
use crate::{rootdoc, CollectorError};

/// The configuration file's name.
pub const CONFIG: &str = "picket.toml";
/// The database file's name.
pub const DB: &str = "picket.db";
/// The trust anchor's name.
pub const ANCHOR: &str = "root.pub";
/// The online keys' folder.
pub const KEYS: &str = "keys";

/// How a community secret's file name starts, in `keys/`.
pub const COMMUNITY_KEY_PREFIX: &str = "community-";

/// Root envelopes by version, oldest first.
pub type RootChain = Vec<(u64, Vec<u8>)>;

/// An opened data directory.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    config: Config,
}

/// What `init` made.
#[derive(Debug)]
pub struct Initialised {
    /// The data directory.
    pub data: PathBuf,
    /// Where the root private key went.
    pub root_key: PathBuf,
    /// The trust anchor.
    pub anchor: PathBuf,
    /// The root key's public half.
    pub root_public: PublicKey,
}

/// Writes a new file that must not exist yet, with `mode`, and fsyncs it.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CollectorError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(CollectorError::io(path))?;
    f.write_all(bytes).map_err(CollectorError::io(path))?;
    f.sync_all().map_err(CollectorError::io(path))
}

/// Replaces a file through a temporary one and a rename.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CollectorError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, bytes, mode)?;
    fs::rename(&tmp, path).map_err(CollectorError::io(path))
}

/// The default place for the root private key: beside DIR, never inside it.
pub fn default_root_key_path(data: &Path) -> PathBuf {
    let abs = std::path::absolute(data).unwrap_or_else(|_| data.to_owned());
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "picket".into());
    abs.with_file_name(format!("{name}.root-OFFLINE.key"))
}

/// Whether `path` would be inside `dir`. `path` may not exist yet: its components are resolved
/// one at a time, links through the filesystem for the part that exists and `..` by hand for
/// the rest, and either reading saying "inside" counts.
fn inside(dir: &Path, path: &Path) -> bool {
    use std::path::Component;
    let Ok(dir) = fs::canonicalize(dir) else {
        return false;
    };
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut resolved = PathBuf::from("/");
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(part) => {
                resolved.push(part);
                if let Ok(real) = fs::canonicalize(&resolved) {
                    resolved = real;
                }
            }
            _ => {}
        }
    }
    resolved.starts_with(&dir)
}

impl DataDir {
    /// Creates a data directory: configuration, online keys, database with root version 1, and
    /// the trust anchor. The root private key goes to `root_key` (outside `data`).
    pub fn init(
        data: &Path,
        org: &str,
        root_key: Option<&Path>,
        now: i64,
    ) -> Result<Initialised, CollectorError> {
        DataDir::init_with_names(data, org, root_key, &[], now)
    }

    /// [`DataDir::init`], with extra names (DNS names or IP addresses) for the agent channel's
    /// server certificate beside localhost, 127.0.0.1 and ::1. The collector CA and that
    /// certificate go to `DIR/tls/`, and root version 1 pins the CA's public key.
    pub fn init_with_names(
        data: &Path,
        org: &str,
        root_key: Option<&Path>,
        tls_names: &[String],
        now: i64,
    ) -> Result<Initialised, CollectorError> {
        if data.join(CONFIG).exists() {
            return Err(CollectorError::DataDir {
                path: data.to_owned(),
                problem: "already initialised (picket.toml exists); nothing was changed".into(),
            });
        }
        let root_key_path = root_key.map_or_else(|| default_root_key_path(data), Path::to_owned);
        fs::create_dir_all(data).map_err(CollectorError::io(data))?;
        fs::set_permissions(data, fs::Permissions::from_mode(0o700)).map_err(CollectorError::io(data))?;
        if inside(data, &root_key_path) {
            return Err(CollectorError::Refused(format!(
                "{}: the root private key must not be written inside the data directory",
                root_key_path.display()
            )));
        }
        if root_key_path.exists() {
            return Err(CollectorError::Refused(format!(
                "{}: a file is already there; choose another --root-key path",
                root_key_path.display()
            )));
        }
        // The TLS names are checked before anything else is written.
        let tls_dir = data.join(pki::TLS_DIR);
        Pki::create(&tls_dir, org, tls_names, now)?;
        let keys_dir = data.join(KEYS);
        fs::create_dir_all(&keys_dir).map_err(CollectorError::io(&keys_dir))?;
        fs::set_permissions(&keys_dir, fs::Permissions::from_mode(0o700))
            .map_err(CollectorError::io(&keys_dir))?;

        let root =
            SigningKey::generate(Role::Root).map_err(CollectorError::proto("generating the root key"))?;
        let publisher = SigningKey::generate(Role::Publisher)
            .map_err(CollectorError::proto("generating the publisher key"))?;
        let stamper = SigningKey::generate(Role::Timestamp)
            .map_err(CollectorError::proto("generating the timestamp key"))?;
        for k in [&publisher, &stamper] {
            write_key(&keys_dir, k)?;
        }
        let mut doc = rootdoc::initial(org, now, &[root.public()], publisher.public(), stamper.public());
        doc.tls_ca_pin = Some(Pki::own_ca_pin(&tls_dir)?);
        let envelope = rootdoc::sign(&doc, &[&root]);
        let mut store = Store::open(&data.join(DB))?;
        store.insert_root(doc.version, &envelope)?;
        let anchor = anchor_for(&doc);
        let anchor_path = data.join(ANCHOR);
        replace(&anchor_path, anchor.to_text().as_bytes(), 0o644)?;
        if let Some(parent) = root_key_path.parent() {
            fs::create_dir_all(parent).map_err(CollectorError::io(parent))?;
        }
        write_new(&root_key_path, root.to_file_text().as_bytes(), 0o600)?;
        let mut config = Config::initial(
            org,
            &std::path::absolute(&root_key_path).unwrap_or(root_key_path.clone()),
        );
        config.tls.names = tls_names.to_vec();
        let text = format!(
            "# Picket collector configuration. Every key is documented in collector/src/config.rs.\n{}",
            toml::to_string(&config).map_err(|e| CollectorError::Refused(e.to_string()))?
        );
        write_new(&data.join(CONFIG), text.as_bytes(), 0o600)?;
        Ok(Initialised {
            data: data.to_owned(),
            root_key: root_key_path,
            anchor: anchor_path,
            root_public: root.public(),
        })
    }

    /// Opens an initialised data directory.
    pub fn open(data: &Path) -> Result<DataDir, CollectorError> {
        let cfg_path = data.join(CONFIG);
        if !cfg_path.exists() {
            return Err(CollectorError::DataDir {
                path: data.to_owned(),
                problem: "not a Picket data directory (no picket.toml); run `picket-collector init` first"
                    .into(),
            });
        }
        Ok(DataDir {
            path: data.to_owned(),
            config: Config::load(&cfg_path)?,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration file's path.
    pub fn config_path(&self) -> PathBuf {
        self.path.join(CONFIG)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Opens the store.
    pub fn store(&self) -> Result<Store, CollectorError> {
        Store::open(&self.path.join(DB))
    }

    /// The trust anchor.
    pub fn anchor(&self) -> Result<TrustAnchor, CollectorError> {
        let p = self.path.join(ANCHOR);
        let text = fs::read_to_string(&p).map_err(CollectorError::io(&p))?;
        TrustAnchor::parse(&text).map_err(CollectorError::proto(p.display().to_string()))
    }

    /// The root in force, verified from the anchor along the stored chain, with the chain.
    pub fn current_root(&self, store: &Store) -> Result<(Verified<Root>, RootChain), CollectorError> {
        let chain = store.roots()?;
        let borrowed: Vec<(u64, &[u8])> = chain.iter().map(|(v, b)| (*v, b.as_slice())).collect();
        let root = verify_root_chain(&self.anchor()?, &borrowed)
            .map_err(CollectorError::proto("the stored root chain"))?;
        Ok((root, chain))
    }

    /// The online key in `keys/` that `root` allows for `role` on `channel`.
    pub fn signing_key(&self, role: Role, root: &Root, channel: &str) -> Result<SigningKey, CollectorError> {
        let spec = root
            .role(role, channel)
            .map_err(CollectorError::proto(format!("root version {}", root.version)))?;
        let dir = self.path.join(KEYS);
        for entry in fs::read_dir(&dir).map_err(CollectorError::io(&dir))? {
            let path = entry.map_err(CollectorError::io(&dir))?.path();
            // Community secrets (`community-<name>.key`) are raw bytes, not signing keys.
            let community = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(COMMUNITY_KEY_PREFIX));
            if path.extension().is_none_or(|e| e != "key") || community {
                continue;
            }
            let text = fs::read_to_string(&path).map_err(CollectorError::io(&path))?;
            let key = SigningKey::from_file_text(&text)
                .map_err(CollectorError::proto(path.display().to_string()))?;
            if key.role() == role && spec.allows(&key.public()) {
                return Ok(key);
            }
        }
        Err(CollectorError::DataDir {
            path: dir,
            problem: format!(
                "no {role} key here is allowed by root version {} for channel {channel:?}",
                root.version
            ),
        })
    }

    /// Generates a new online key for `role` in `keys/`, to be named in the next root.
    pub fn new_online_key(&self, role: Role) -> Result<(PathBuf, PublicKey), CollectorError> {
        if role == Role::Root {
            return Err(CollectorError::Refused(
                "root keys are made offline with `picket-collector root keygen`".into(),
            ));
        }
        let key = SigningKey::generate(role).map_err(CollectorError::proto("generating a key"))?;
        let path = write_key(&self.path.join(KEYS), &key)?;
        Ok((path, key.public()))
    }

    /// Installs a root version made offline, after checking that it chains from the one in
    /// force (signed by the old threshold and the new), and points the anchor at it.
    pub fn install_root(&self, store: &mut Store, envelope: &[u8]) -> Result<Verified<Root>, CollectorError> {
        let (current, mut chain) = self.current_root(store)?;
        let next_version = current.version + 1;
        chain.push((next_version, envelope.to_vec()));
        let borrowed: Vec<(u64, &[u8])> = chain.iter().map(|(v, b)| (*v, b.as_slice())).collect();
        let root = verify_root_chain(&self.anchor()?, &borrowed)
            .map_err(CollectorError::proto(format!("root version {next_version}")))?;
        store.insert_root(root.version, envelope)?;
        replace(
            &self.path.join(ANCHOR),
            anchor_for(&root).to_text().as_bytes(),
            0o644,
        )?;
        Ok(root)
    }

    /// The community's secret, `DIR/keys/community-<name>.key`: 32 random bytes, made (0600)
    /// the first time it is asked for. Ids of what is shared with a community are derived
    /// from it, so two communities cannot link what they received; losing it only changes the
    /// ids of future versions. `name` must already have been checked by the configuration.
    pub fn community_key(&self, name: &str) -> Result<[u8; 32], CollectorError> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(CollectorError::Refused(format!(
                "community {name:?}: a name is letters, digits, - and _"
            )));
        }
        let dir = self.path.join(KEYS);
        let path = dir.join(format!("{COMMUNITY_KEY_PREFIX}{name}.key"));
        let read = |path: &Path| -> Result<[u8; 32], CollectorError> {
            let bytes = fs::read(path).map_err(CollectorError::io(path))?;
            bytes.as_slice().try_into().map_err(|_| CollectorError::DataDir {
                path: path.to_owned(),
                problem: format!("a community secret is 32 bytes, this file holds {}", bytes.len()),
            })
        };
        match fs::symlink_metadata(&path) {
            Ok(_) => read(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                    .map_err(|_| CollectorError::Refused("the system random generator failed".into()))?;
                fs::create_dir_all(&dir).map_err(CollectorError::io(&dir))?;
                match write_new(&path, &key, 0o600) {
                    Ok(()) => Ok(key),
                    // Another process made it first: use theirs.
                    Err(CollectorError::Io { error, .. })
                        if error.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        read(&path)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(CollectorError::io(&path)(e)),
        }
    }

    /// Root private keys that a process running here could read: any key file in DIR or its
    /// `keys/` folder with role root, and the path `init` wrote the root key to, if readable.
    pub fn readable_root_keys(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for dir in [self.path.clone(), self.path.join(KEYS)] {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let p = e.path();
                if is_root_key_file(&p) {
                    found.push(p);
                }
            }
        }
        if let Some(p) = &self.config.offline_root_key {
            let p = PathBuf::from(p);
            if is_root_key_file(&p) && !found.contains(&p) {
                found.push(p);
            }
        }
        found
    }
}

/// Whether `path` is a readable root private key file. Only small regular files are read (a key
/// file is a few hundred bytes): never the database, a FIFO, or through a link.
fn is_root_key_file(path: &Path) -> bool {
    use std::io::Read;
    let small_file = fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() <= 4096);
    if !small_file {
        return false;
    }
    let mut text = String::new();
    fs::File::open(path)
        .and_then(|f| f.take(4096).read_to_string(&mut text))
        .is_ok()
        && SigningKey::text_is_root_key(&text)
}

fn write_key(dir: &Path, key: &SigningKey) -> Result<PathBuf, CollectorError> {
    let path = dir.join(format!("{}-{}.key", key.role(), key.public().id()));
    write_new(&path, key.to_file_text().as_bytes(), 0o600)?;
    Ok(path)
}

/// The trust anchor that pins `root`.
pub fn anchor_for(root: &Root) -> TrustAnchor {
    TrustAnchor {
        org: root.org.clone(),
        root_version: root.version,
        threshold: root.root.threshold,
        keys: root.root.keys.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_keeps_the_root_key_out_of_the_data_dir_and_is_not_repeatable() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let made = DataDir::init(&data, "Org", None, 1_000).unwrap();
        assert!(!made.root_key.starts_with(&data));
        let mode = fs::metadata(&made.root_key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir = DataDir::open(&data).unwrap();
        // init recorded where the root key went, and it is readable from here: serve must refuse.
        assert_eq!(dir.readable_root_keys(), vec![made.root_key.clone()]);
        fs::remove_file(&made.root_key).unwrap();
        assert!(dir.readable_root_keys().is_empty());
        // A root key dropped into the data directory is found too.
        fs::write(
            data.join("stray.key"),
            SigningKey::generate(Role::Root).unwrap().to_file_text(),
        )
        .unwrap();
        assert_eq!(dir.readable_root_keys(), vec![data.join("stray.key")]);
        assert!(DataDir::init(&data, "Org", None, 1_000).is_err());
    }

    #[test]
    fn a_community_secret_is_made_once_private_and_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        DataDir::init(&data, "Org", Some(&tmp.path().join("root.key")), 1_000).unwrap();
        let dir = DataDir::open(&data).unwrap();
        let a = dir.community_key("isac-1").unwrap();
        assert_eq!(dir.community_key("isac-1").unwrap(), a);
        assert_ne!(dir.community_key("other").unwrap(), a);
        let path = data.join("keys/community-isac-1.key");
        assert_eq!(fs::read(&path).unwrap(), a);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(dir.community_key("../x").is_err());
        fs::write(&path, b"short").unwrap();
        assert!(dir
            .community_key("isac-1")
            .unwrap_err()
            .to_string()
            .contains("32 bytes"));
    }

    #[test]
    fn root_key_inside_the_data_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        for inside in [
            data.join("root.key"),
            data.join("sub/deeper/root.key"),
            data.join("x/../root.key"),
        ] {
            let err = DataDir::init(&data, "Org", Some(&inside), 1).unwrap_err();
            assert!(
                err.to_string().contains("must not be written inside"),
                "{}: {err}",
                inside.display()
            );
        }
        assert!(!data.join("sub").exists());
    }
}
