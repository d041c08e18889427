//! The collector's configuration file, `DIR/picket.toml`.
//!
//! Every field is documented here because this is the operator's reference. Unknown keys stop
//! start-up with a message naming the file and the key.

use std::collections::BTreeMap;
use std::path::Path;

use picket_proto::Tlp;
use serde::{Deserialize, Serialize};

use crate::{parse_duration, CollectorError};

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The organisation's name, as it appears in the root document.
    pub org: String,
    /// Where `init` wrote the root private key. Kept so `serve` can refuse to run while that
    /// file is readable; the key itself belongs offline.
    #[serde(default)]
    pub offline_root_key: Option<String>,
    /// Defaults for ingested indicators.
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Channels by name. Each needs a matching channel in the root document.
    pub channels: BTreeMap<String, ChannelConfig>,
}

/// Defaults applied to indicators from sources that do not say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// TLP given to indicators from plain lists (`clear`, `green`, `amber`, `amber+strict`,
    /// `red`).
    pub default_tlp: String,
    /// Confidence (0 to 100) given to indicators from plain lists.
    pub default_confidence: u8,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            default_tlp: "green".into(),
            default_confidence: 50,
        }
    }
}

/// One channel's publishing settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// How long a published set version stays valid (`30d`, `12h`, ...). Must be within the
    /// root's cap for the publisher role.
    pub manifest_lifetime: String,
    /// How long a freshness timestamp stays valid. Short, so that a withheld update is noticed;
    /// `serve` re-signs it on a schedule. Must be within the root's cap for the timestamp role.
    pub timestamp_lifetime: String,
    /// The highest TLP that may go into this channel's sets. TLP:RED never does by default.
    pub tlp_ceiling: String,
}

/// A channel's settings, converted to typed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// Manifest lifetime in seconds.
    pub manifest_lifetime: u64,
    /// Timestamp lifetime in seconds.
    pub timestamp_lifetime: u64,
    /// TLP ceiling.
    pub tlp_ceiling: Tlp,
}

impl Config {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Config, CollectorError> {
        let text = std::fs::read_to_string(path).map_err(CollectorError::io(path))?;
        let cfg: Config = toml::from_str(&text).map_err(|e| CollectorError::Config {
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
        for name in cfg.channels.keys() {
            cfg.channel(name, path)?;
        }
        cfg.default_tlp(path)?;
        Ok(cfg)
    }

    /// The typed settings of channel `name`.
    pub fn channel(&self, name: &str, path: &Path) -> Result<Channel, CollectorError> {
        let bad = |key: &str, problem: String| CollectorError::Config {
            path: path.to_owned(),
            problem: format!("channels.{name}.{key}: {problem}"),
        };
        let c = self
            .channels
            .get(name)
            .ok_or_else(|| bad("", "no such channel in the configuration".into()))?;
        let dur = |key: &str, v: &str| {
            parse_duration(v)
                .ok_or_else(|| bad(key, format!("{v:?} is not a duration such as 90s, 15m, 12h, 30d")))
        };
        Ok(Channel {
            manifest_lifetime: dur("manifest_lifetime", &c.manifest_lifetime)?,
            timestamp_lifetime: dur("timestamp_lifetime", &c.timestamp_lifetime)?,
            tlp_ceiling: Tlp::parse(&c.tlp_ceiling)
                .ok_or_else(|| bad("tlp_ceiling", format!("{:?} is not a TLP level", c.tlp_ceiling)))?,
        })
    }

    /// The typed default TLP for ingested lists.
    pub fn default_tlp(&self, path: &Path) -> Result<Tlp, CollectorError> {
        Tlp::parse(&self.ingest.default_tlp).ok_or_else(|| CollectorError::Config {
            path: path.to_owned(),
            problem: format!(
                "ingest.default_tlp: {:?} is not a TLP level",
                self.ingest.default_tlp
            ),
        })
    }

    /// The configuration `init` writes.
    pub fn initial(org: &str, offline_root_key: &Path) -> Config {
        let mut channels = BTreeMap::new();
        channels.insert(
            "default".to_owned(),
            ChannelConfig {
                manifest_lifetime: "30d".into(),
                timestamp_lifetime: "1d".into(),
                tlp_ceiling: "amber".into(),
            },
        );
        Config {
            org: org.to_owned(),
            offline_root_key: Some(offline_root_key.display().to_string()),
            ingest: IngestConfig::default(),
            channels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("picket.toml");
        let mut text = toml::to_string(&Config::initial("Org", Path::new("/x"))).unwrap();
        text.push_str("\nbogus = 1\n");
        std::fs::write(&p, text).unwrap();
        let err = Config::load(&p).unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
        assert!(err.contains("picket.toml"), "{err}");
    }

    #[test]
    fn bad_duration_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("picket.toml");
        let mut cfg = Config::initial("Org", Path::new("/x"));
        cfg.channels.get_mut("default").unwrap().timestamp_lifetime = "soon".into();
        std::fs::write(&p, toml::to_string(&cfg).unwrap()).unwrap();
        let err = Config::load(&p).unwrap_err().to_string();
        assert!(err.contains("channels.default.timestamp_lifetime"), "{err}");
    }
}
