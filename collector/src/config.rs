//! The collector's configuration file, `DIR/picket.toml`.
//!
//! Every field is documented here because this is the operator's reference. Unknown keys stop
//! start-up with a message naming the file and the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// The agent channel's TLS certificate (see [`TlsConfig`]).
    #[serde(default)]
    pub tls: TlsConfig,
    /// Enrolment of agents: token and client certificate lifetimes.
    #[serde(default)]
    pub enrolment: EnrolmentConfig,
    /// The agent channel: where `serve` listens, its timeouts, limits and alarms (see
    /// [`AgentChannelConfig`]).
    #[serde(default)]
    pub channel: AgentChannelConfig,
    /// `[[community]]`: the communities sightings are shared with, each with its own policy
    /// (see [`CommunityConfig`]). None by default: nothing is shared.
    #[serde(default, rename = "community", skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<CommunityConfig>,
    /// `[taxii]`: the TAXII 2.1 server `serve --http` runs, and the members who may read it
    /// (see [`TaxiiConfig`]).
    #[serde(default, skip_serializing_if = "TaxiiConfig::is_empty")]
    pub taxii: TaxiiConfig,
}

/// `[taxii]`: who may read the TAXII 2.1 server (`serve --http ADDR:PORT`). Each community is
/// one API root, named by the community, holding one read-only collection of its sightings.
/// With no member, every request is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxiiConfig {
    /// `[[taxii.member]]`: the accounts, each with the communities it may read.
    #[serde(default, rename = "member", skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<TaxiiMember>,
}

impl TaxiiConfig {
    fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// `[[taxii.member]]`: one account of the TAXII server (HTTP Basic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaxiiMember {
    /// The user name it authenticates with (no `:`).
    pub name: String,
    /// Its password, salted and stretched: `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`,
    /// as `crate::taxii_server::hash_password` writes it. The password itself is never stored.
    pub password_hash: String,
    /// The communities (API roots) whose `sightings` collection it may read.
    #[serde(default)]
    pub communities: Vec<String>,
    /// The communities whose `contributions` collection it may post sightings and indicators
    /// to. What it posts counts as one organisation, this account, towards a community's k.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contribute: Vec<String>,
    /// The member organisation's sector (for example `financial-services`). A community with
    /// `disclosure = "sector"` names its sector only when at least k of its members (this
    /// organisation included) are in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector: Option<String>,
}

/// `[[community]]`: one community sightings may be shared with, and the policy that decides
/// what reaches it. Whatever is configured here, TLP:RED and TLP:AMBER+STRICT never leave, and
/// nothing about an indicator leaves before `k` distinct organisations have seen it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommunityConfig {
    /// The community's name (letters, digits, `-` and `_`): it names the community's secret,
    /// `DIR/keys/community-<name>.key`, from which its sighting ids are derived.
    pub name: String,
    /// The most restricted TLP the community may receive (`clear`, `green`, `amber`; default
    /// `amber`). A sighting of an indicator above it is not shared; a shared sighting carries
    /// the stricter of its indicator's TLP and this.
    #[serde(default = "default_community_tlp")]
    pub tlp_ceiling: String,
    /// Who the community learns saw it: `none` (no one is named), `sector` (an identity for
    /// `sector`, the sector alone), or `organisation` (this organisation, by its `org` name).
    #[serde(default = "default_disclosure")]
    pub disclosure: String,
    /// The sector named when `disclosure = "sector"` (for example `financial-services`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector: Option<String>,
    /// How many distinct organisations must have seen an indicator before anything about it
    /// (sightings, false-positive marks) is shared (at least 2; default 3). This organisation
    /// counts once however many of its agents saw it.
    #[serde(default = "default_k")]
    pub k: u32,
    /// Shared times are coarsened onto boundaries of this length (`1h`): first seen rounded
    /// down, last seen up.
    #[serde(default = "default_time_bucket")]
    pub time_bucket: String,
    /// Counts are shared as the lower bound of the band they fall in (`[1, 10, 100, 1000]`:
    /// 37 sightings are shared as 10), so a count never tells the size of the fleet.
    #[serde(default = "default_count_bands")]
    pub count_bands: Vec<u64>,
    /// Nothing sighted later than this long ago is shared yet (`0s`).
    #[serde(default = "default_delay")]
    pub delay: String,
    /// The TLP marking definitions used: `2.0` (default) or `1.0`, for members whose tools
    /// know only TLP 1.0.
    #[serde(default = "default_marking")]
    pub marking: String,
    /// `[[community.upstream]]`: TAXII 2.1 collections of the community elsewhere (an ISAC's
    /// server) that what it may receive is pushed to, and whose sightings may be pulled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream: Vec<UpstreamConfig>,
}

/// `[[community.upstream]]`: one TAXII 2.1 collection a community's shared objects are pushed
/// to (the same bundle `share preview` shows, each object version once), and optionally pulled
/// from: sightings pulled from it count as one organisation, `upstream:<name>`, towards k.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// A name for it (letters, digits, `-`, `_`), unique within the community.
    pub name: String,
    /// The API root's URL (`https://taxii.example.org/isac/`; `http://` only to loopback).
    pub api_root: String,
    /// The collection's id.
    pub collection: String,
    /// The HTTP Basic user name, if the server wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file (relative to the data directory, or absolute) whose first line is the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// A PEM file of the CA certificates trusted for the server (needed for `https://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Push the community's shared objects there (default true).
    #[serde(default = "default_true")]
    pub push: bool,
    /// Pull other organisations' sightings from there (default false).
    #[serde(default)]
    pub pull: bool,
}

fn default_true() -> bool {
    true
}

fn default_community_tlp() -> String {
    "amber".into()
}
fn default_disclosure() -> String {
    "none".into()
}
fn default_k() -> u32 {
    3
}
fn default_time_bucket() -> String {
    "1h".into()
}
fn default_count_bands() -> Vec<u64> {
    vec![1, 10, 100, 1000]
}
fn default_delay() -> String {
    "0s".into()
}
fn default_marking() -> String {
    "2.0".into()
}

/// `[channel]`: the agent channel `serve` runs (every limit is enforced by the collector).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentChannelConfig {
    /// Address and port to listen on (`0.0.0.0:7443`); `serve --listen` overrides it.
    pub listen: String,
    /// How long a new connection has to finish its TLS handshake and send its hello, counted
    /// from accept (`10s`). An enrolling connection (no client certificate) has this long, from
    /// accept, for everything: handshake, hello, its request and the answer.
    pub hello_timeout: String,
    /// How long the body of a frame may take to arrive once its length was read, and how long
    /// the agent may take to read what is sent to it (`30s`).
    pub read_timeout: String,
    /// A session with no frame for this long is closed (`15m`; agents heartbeat every minute).
    pub idle_timeout: String,
    /// The most sessions at once; connections over it are closed at accept.
    pub max_sessions: u32,
    /// The most connections at once still in their TLS handshake; connections over it are
    /// closed at accept. A connection gives its place back the moment its handshake completes,
    /// so connections that finished theirs (enrolling, or agents saying hello) never keep an
    /// agent from reconnecting.
    pub max_handshakes: u32,
    /// The most connections at once that have not authenticated, from one source address (an
    /// IPv6 address counts by its /64): from accept until an enrolled agent is welcomed, or
    /// for the whole of an enrolment. Connections over it are closed at accept. Everything
    /// behind one NAT or proxy shares it: raise it for a large site behind one address.
    pub max_handshakes_per_ip: u32,
    /// The most connections at once without a client certificate (enrolling), past their TLS
    /// handshake. They have their own pool, so enrolments cannot take the places enrolled
    /// agents need; a connection over it is told to try again later and closed.
    pub max_enrolling: u32,
    /// Live sessions one agent may hold at once. When a new session of the agent would pass
    /// it, the agent's oldest session is closed (and told that another replaced it), so a
    /// restarted agent whose old session lingers is never locked out, and one agent's key
    /// cannot take every session.
    pub max_sessions_per_agent: u32,
    /// Enrolment attempts per second from one source address, sustained (an IPv6 address
    /// counts by its /64). An attempt over it is answered `RateLimited` and closed.
    pub enrolments_per_second: u32,
    /// Enrolment attempts one source address may make in a burst.
    pub enrolment_burst: u32,
    /// Sightings (one per agent, indicator, observed kind and location) the collector keeps
    /// for one agent. Past it, a batch that would add new ones is refused and raises a
    /// `sightings-cap` alarm; the agent's existing sightings keep updating.
    pub max_sightings_per_agent: u64,
    /// Messages per second each agent may send, sustained (all its sessions together).
    pub messages_per_second: u32,
    /// Messages an agent may send in a burst.
    pub message_burst: u32,
    /// Bytes per second each agent may send, sustained.
    pub bytes_per_second: u64,
    /// Bytes an agent may send in a burst.
    pub byte_burst: u64,
    /// A session that sends this many frames in a row over its rate limit, without waiting as
    /// told, is closed.
    pub flood_strikes: u32,
    /// An agent not heard from for this long raises a `quiet` alarm (`10m`).
    pub quiet_after: String,
    /// An agent whose set version stays below the current one for this long raises a `lagging`
    /// alarm (`10m`).
    pub lag_after: String,
}

impl Default for AgentChannelConfig {
    fn default() -> Self {
        AgentChannelConfig {
            listen: "0.0.0.0:7443".into(),
            hello_timeout: "10s".into(),
            read_timeout: "30s".into(),
            idle_timeout: "15m".into(),
            max_sessions: 10_000,
            max_handshakes: 256,
            max_handshakes_per_ip: 32,
            max_enrolling: 64,
            max_sessions_per_agent: 2,
            enrolments_per_second: 10,
            enrolment_burst: 20,
            max_sightings_per_agent: 100_000,
            messages_per_second: 50,
            message_burst: 200,
            bytes_per_second: 4 << 20,
            byte_burst: 8 << 20,
            flood_strikes: 20,
            quiet_after: "10m".into(),
            lag_after: "10m".into(),
        }
    }
}

/// `[tls]`: the certificate the agent channel presents.
///
/// By default it is `DIR/tls/server.pem`, made by `init` and signed by the collector's own CA
/// (`DIR/tls/ca.pem`). An operator may supply one instead by setting all three of `cert`, `key`
/// and `ca`; enrolment tokens then pin that `ca`, so tokens made before the change no longer
/// work. Client certificates are always issued by the collector's own CA.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The names (DNS names or IP addresses) `init --tls-name` put into `DIR/tls/server.pem`,
    /// beside localhost, 127.0.0.1 and ::1. A record: editing it does not reissue the
    /// certificate.
    #[serde(default)]
    pub names: Vec<String>,
    /// An operator-supplied server certificate chain (PEM, the server certificate first).
    /// Relative paths are relative to the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// Its private key (PEM; not readable by other users).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The CA certificate (PEM) that issued `cert`: agents pin its public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// The operator-supplied certificate files of `[tls]`, resolved against the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA that issued it.
    pub ca: PathBuf,
}

/// `[enrolment]`: how agents join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentConfig {
    /// How long a client certificate is valid (`7d`); agents renew it at half-life, so an agent
    /// offline for longer than this must enrol again. At most 365d.
    #[serde(default = "default_cert_lifetime")]
    pub cert_lifetime: String,
    /// How long a token from `token create` stays valid when `--expires` is not given (`24h`).
    #[serde(default = "default_token_expiry")]
    pub default_token_expiry: String,
}

fn default_cert_lifetime() -> String {
    "7d".into()
}

fn default_token_expiry() -> String {
    "24h".into()
}

impl Default for EnrolmentConfig {
    fn default() -> Self {
        EnrolmentConfig {
            cert_lifetime: default_cert_lifetime(),
            default_token_expiry: default_token_expiry(),
        }
    }
}

/// The `[enrolment]` settings, converted to typed values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enrolment {
    /// Client certificate lifetime in seconds.
    pub cert_lifetime: u64,
    /// Default token expiry in seconds.
    pub default_token_expiry: u64,
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
        Config::parse(&text, path)
    }

    /// Parses and checks the text of a configuration file without touching the file system;
    /// `path` only names the file in errors. [`Config::load`] is this after reading the file.
    pub fn parse(text: &str, path: &Path) -> Result<Config, CollectorError> {
        let cfg: Config = toml::from_str(text).map_err(|e| CollectorError::Config {
            path: path.to_owned(),
            problem: e.to_string(),
        })?;
        for name in cfg.channels.keys() {
            cfg.channel(name, path)?;
        }
        cfg.default_tlp(path)?;
        cfg.enrolment(path)?;
        cfg.tls_files(Path::new("."), path)?;
        crate::channel::Settings::from_config(&cfg, path)?;
        for c in &cfg.communities {
            crate::share::Community::from_config(c, path)?;
        }
        let mut names = std::collections::BTreeSet::new();
        if let Some(c) = cfg.communities.iter().find(|c| !names.insert(c.name.as_str())) {
            return Err(CollectorError::Config {
                path: path.to_owned(),
                problem: format!("community {:?} is configured twice", c.name),
            });
        }
        Ok(cfg)
    }

    /// The typed `[enrolment]` settings.
    pub fn enrolment(&self, path: &Path) -> Result<Enrolment, CollectorError> {
        let dur = |key: &str, v: &str, max: u64| {
            let bad = |problem: String| CollectorError::Config {
                path: path.to_owned(),
                problem: format!("enrolment.{key}: {problem}"),
            };
            let secs = parse_duration(v)
                .ok_or_else(|| bad(format!("{v:?} is not a duration such as 90s, 15m, 12h, 30d")))?;
            if secs == 0 || secs > max {
                return Err(bad(format!(
                    "{v:?} must be more than 0s and at most {}d",
                    max / 86_400
                )));
            }
            Ok(secs)
        };
        Ok(Enrolment {
            cert_lifetime: dur("cert_lifetime", &self.enrolment.cert_lifetime, 365 * 86_400)?,
            default_token_expiry: dur(
                "default_token_expiry",
                &self.enrolment.default_token_expiry,
                3_650 * 86_400,
            )?,
        })
    }

    /// The operator-supplied certificate files, or `None` when the channel uses the certificate
    /// `init` made. `cert`, `key` and `ca` go together; relative paths are taken from `data`.
    pub fn tls_files(&self, data: &Path, path: &Path) -> Result<Option<TlsFiles>, CollectorError> {
        let t = &self.tls;
        match (&t.cert, &t.key, &t.ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
                cert: data.join(cert),
                key: data.join(key),
                ca: data.join(ca),
            })),
            _ => Err(CollectorError::Config {
                path: path.to_owned(),
                problem: "tls: cert, key and ca go together (the server chain, its key, and the CA that issued it); set all three or none".into(),
            }),
        }
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
            tls: TlsConfig::default(),
            enrolment: EnrolmentConfig::default(),
            channel: AgentChannelConfig::default(),
            communities: Vec::new(),
            taxii: TaxiiConfig::default(),
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
    fn communities_take_defaults_and_refuse_unknown_keys_and_small_k() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("picket.toml");
        let base = toml::to_string(&Config::initial("Org", Path::new("/x"))).unwrap();
        std::fs::write(&p, format!("{base}\n[[community]]\nname = \"isac\"\n")).unwrap();
        let c = &Config::load(&p).unwrap().communities[0];
        assert_eq!(
            (
                c.tlp_ceiling.as_str(),
                c.disclosure.as_str(),
                c.k,
                c.time_bucket.as_str()
            ),
            ("amber", "none", 3, "1h")
        );
        assert_eq!(
            (c.count_bands.clone(), c.delay.as_str(), c.marking.as_str()),
            (vec![1, 10, 100, 1000], "0s", "2.0")
        );
        for (extra, expected) in [
            ("name = \"isac\"\nsecret = 1", "secret"),
            ("name = \"isac\"\nk = 1", "community \"isac\": k: 1 is below 2"),
            (
                "name = \"isac\"\n[[community]]\nname = \"isac\"",
                "configured twice",
            ),
        ] {
            std::fs::write(&p, format!("{base}\n[[community]]\n{extra}\n")).unwrap();
            let err = Config::load(&p).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains("picket.toml"), "{err}");
        }
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

    #[test]
    fn the_channel_limits_default_and_refuse_zero_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("picket.toml");
        let cfg = Config::initial("Org", Path::new("/x"));
        let text = toml::to_string(&cfg).unwrap();
        std::fs::write(&p, &text).unwrap();
        let settings = crate::channel::Settings::from_config(&Config::load(&p).unwrap(), &p).unwrap();
        assert_eq!(
            (
                settings.max_handshakes_per_ip,
                settings.max_enrolling,
                settings.max_sessions_per_agent,
                settings.intake.max_sightings_per_agent
            ),
            (32, 64, 2, 100_000)
        );
        assert_eq!(
            (
                settings.enrolment_rate.messages_per_second,
                settings.enrolment_rate.message_burst
            ),
            (10.0, 20.0)
        );
        // A file written before these keys existed gets the defaults.
        let old: String = text
            .lines()
            .filter(|l| !l.starts_with("max_sessions_per_agent") && !l.starts_with("max_enrolling"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&p, old).unwrap();
        assert_eq!(Config::load(&p).unwrap().channel.max_sessions_per_agent, 2);
        for key in [
            "max_handshakes_per_ip",
            "max_enrolling",
            "max_sessions_per_agent",
            "enrolments_per_second",
            "enrolment_burst",
            "max_sightings_per_agent",
        ] {
            let zeroed: String = text
                .lines()
                .map(|l| {
                    if l.starts_with(&format!("{key} = ")) {
                        format!("{key} = 0\n")
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            std::fs::write(&p, zeroed).unwrap();
            let err = Config::load(&p).unwrap_err().to_string();
            assert!(
                err.contains(&format!("channel.{key}: must be more than 0")),
                "{err}"
            );
        }
    }

    #[test]
    fn tls_files_go_together_and_enrolment_durations_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("picket.toml");
        let load = |cfg: &Config| {
            std::fs::write(&p, toml::to_string(cfg).unwrap()).unwrap();
            Config::load(&p)
        };
        let mut cfg = Config::initial("Org", Path::new("/x"));
        let typed = load(&cfg).unwrap().enrolment(&p).unwrap();
        assert_eq!(
            (typed.cert_lifetime, typed.default_token_expiry),
            (7 * 86_400, 86_400)
        );
        cfg.tls.cert = Some("server.pem".into());
        let err = load(&cfg).unwrap_err().to_string();
        assert!(err.contains("tls: cert, key and ca go together"), "{err}");
        cfg.tls.key = Some("/etc/picket/server.key".into());
        cfg.tls.ca = Some("ca.pem".into());
        let files = load(&cfg)
            .unwrap()
            .tls_files(Path::new("/data"), &p)
            .unwrap()
            .unwrap();
        assert_eq!(files.cert, Path::new("/data/server.pem"));
        assert_eq!(files.key, Path::new("/etc/picket/server.key"));
        cfg.enrolment.cert_lifetime = "400d".into();
        let err = load(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("enrolment.cert_lifetime") && err.contains("at most 365d"),
            "{err}"
        );
        cfg.enrolment.cert_lifetime = "7d".into();
        cfg.enrolment.default_token_expiry = "tomorrow".into();
        let err = load(&cfg).unwrap_err().to_string();
        assert!(err.contains("enrolment.default_token_expiry"), "{err}");
    }
}
