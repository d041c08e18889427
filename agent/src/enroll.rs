//! `picket-agent enroll`: spend an enrolment token, and leave a state directory the daemon can
//! run from.
//!
//! The agent makes its own Ed25519 key here, proves it holds it, and receives a client
//! certificate for it. What enrolment writes into `DIR` (0700, every file 0600, each replaced
//! atomically):
//!
//! ```text
//! agent.key          the agent's private key (PKCS#8 PEM); it never leaves the host
//! agent.crt          its client certificate (PEM), renewed in place by the daemon
//! collector-ca.pem   the collector CA, the only root trusted for the channel from now on
//! trust.pub          a copy of the trust anchor that sets are verified against
//! machine-id         the machine id recorded at enrolment (its hash is in every hello)
//! agent.toml         a working configuration: state_dir, [scan] roots, [collector]
//! ```
//!
//! Then it connects once more, as the enrolled agent, and installs the collector's current set
//! (every check of an offline import applies, and those of the link: the set must be for the
//! channel enrolled in, and its index must fit under the memory limit of the configuration just
//! written): this proves the files it wrote work, and the daemon starts matching at once.
//!
//! Invariants: everything that can be checked locally (the anchor, the address, the roots, the
//! machine id, an earlier enrolment) is checked before the token is spent or anything is
//! written; an existing enrolment is replaced only with `force`; the token is never printed or
//! written anywhere.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use picket_proto::wire::{self, ClientMsg, ErrorCode, Fetch, ServerMsg};
use picket_proto::{EnrollToken, Limits, TrustAnchor};

use crate::config::Config;
use crate::link::{self, backoff, cert, tls, LinkError};
use crate::store::{write_atomically, Expected, Imported, StateDir};

/// Where the machine id is looked for when no file is named, in order.
pub const MACHINE_ID_FILES: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];
/// The agent's private key.
pub const KEY_FILE: &str = "agent.key";
/// The agent's client certificate.
pub const CERT_FILE: &str = "agent.crt";
/// The collector CA.
pub const CA_FILE: &str = "collector-ca.pem";
/// The copy of the trust anchor.
pub const TRUST_FILE: &str = "trust.pub";
/// The machine id recorded at enrolment.
pub const MACHINE_ID_FILE: &str = "machine-id";
/// The configuration written for `picket-agent run`.
pub const CONFIG_FILE: &str = "agent.toml";
/// How many times enrolment is retried when the collector asks the agent to wait.
const ENROL_RETRIES: u32 = 8;
/// The longest single wait between those retries.
const ENROL_MAX_WAIT: Duration = Duration::from_secs(30);

/// Whether a failed enrolment may succeed if tried again after the wait the collector asked for.
fn retryable(e: &LinkError) -> bool {
    matches!(e.code(), Some(ErrorCode::RateLimited) | Some(ErrorCode::Internal)) && e.retry_after().is_some()
}

/// The longest machine id accepted (a systemd id is 32 hex digits).
const MAX_MACHINE_ID: usize = 256;

/// Reads the machine id from `explicit`, or else from the first of [`MACHINE_ID_FILES`] that
/// exists. Returns the id (trimmed) and the file it came from.
pub fn read_machine_id(explicit: Option<&Path>) -> Result<(String, PathBuf), LinkError> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_owned()],
        None => MACHINE_ID_FILES.iter().map(PathBuf::from).collect(),
    };
    let mut last = None;
    for path in candidates {
        match tls::read_small(&path) {
            Ok(bytes) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| LinkError::file(&path)("the machine id is not text".into()))?;
                let id = text.trim();
                if id.is_empty() || id.len() > MAX_MACHINE_ID || id.chars().any(char::is_control) {
                    return Err(LinkError::file(&path)(format!(
                        "not a machine id (one line of at most {MAX_MACHINE_ID} characters)"
                    )));
                }
                return Ok((id.to_owned(), path));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| LinkError::Invalid("no machine id file".into())))
}

/// What `enroll` needs.
#[derive(Debug)]
pub struct EnrollOptions {
    /// The state directory to enrol into.
    pub state: PathBuf,
    /// The collector's agent channel, `HOST:PORT`.
    pub collector: String,
    /// The name the collector's certificate must carry (default: HOST).
    pub server_name: Option<String>,
    /// The enrolment token.
    pub token: EnrollToken,
    /// The trust anchor file (`root.pub`).
    pub trust: PathBuf,
    /// The collector CA file, if the operator has it (its key must match the token's pin).
    pub ca: Option<PathBuf>,
    /// Scan roots for the configuration.
    pub roots: Vec<PathBuf>,
    /// The channel to follow.
    pub channel: String,
    /// Where to read the machine id (default: the system's).
    pub machine_id_file: Option<PathBuf>,
    /// Replace an existing enrolment.
    pub force: bool,
}

/// What enrolment produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrolledAgent {
    /// The agent id the collector chose.
    pub agent: String,
    /// The configuration file written.
    pub config: PathBuf,
    /// When the client certificate expires (unix seconds).
    pub not_after: i64,
    /// The first set, fetched with the new identity: what installing it did (`None`: the
    /// collector has published nothing newer than what is installed), or why it failed. A
    /// failure here does not undo the enrolment; the daemon keeps asking.
    pub first_set: Result<Option<Imported>, String>,
}

fn absolute(what: &str, p: &Path) -> Result<PathBuf, LinkError> {
    std::path::absolute(p).map_err(|e| LinkError::Invalid(format!("{what} {}: {e}", p.display())))
}

fn toml_str(what: &str, p: &Path) -> Result<String, LinkError> {
    let s = p.to_str().ok_or_else(|| {
        LinkError::Invalid(format!(
            "{what} {} is not UTF-8, which agent.toml needs",
            p.display()
        ))
    })?;
    Ok(toml::Value::String(s.to_owned()).to_string())
}

/// Enrols with the collector and writes the state directory (module doc). Blocks: runs the
/// exchange on a runtime of its own.
pub fn enroll(opts: &EnrollOptions) -> Result<EnrolledAgent, LinkError> {
    // Everything local first: nothing is spent or written when one of these fails.
    let anchor_bytes = tls::read_small(&opts.trust)?;
    let anchor_text =
        String::from_utf8(anchor_bytes).map_err(|_| LinkError::file(&opts.trust)("not UTF-8 text".into()))?;
    let anchor = TrustAnchor::parse(&anchor_text).map_err(|e| LinkError::file(&opts.trust)(e.to_string()))?;
    let (host, _) = link::split_host_port(&opts.collector).ok_or_else(|| {
        LinkError::Invalid(format!(
            "--collector {:?} is not HOST:PORT (an IPv6 address goes in brackets: [::1]:4433)",
            opts.collector
        ))
    })?;
    let server_name = opts.server_name.clone().unwrap_or_else(|| host.to_owned());
    tls::server_name(&server_name)?;
    if opts.channel.is_empty() || opts.channel.len() > 64 {
        return Err(LinkError::Invalid(format!(
            "--channel {:?} is not a channel name (1 to 64 bytes)",
            opts.channel
        )));
    }
    let state = absolute("the state directory", &opts.state)?;
    let roots = opts
        .roots
        .iter()
        .map(|r| absolute("the scan root", r))
        .collect::<Result<Vec<_>, _>>()?;
    if !opts.force {
        for name in [KEY_FILE, CERT_FILE, CONFIG_FILE] {
            if state.join(name).exists() {
                return Err(LinkError::Invalid(format!(
                    "{} already holds an enrolment ({name}); pass --force to enrol again and replace it",
                    state.display()
                )));
            }
        }
    }
    let (machine_id, machine_id_path) = read_machine_id(opts.machine_id_file.as_deref())?;
    let machine_id_path = absolute("the machine id file", &machine_id_path)?;
    let ca_der = match &opts.ca {
        Some(p) => {
            let der = tls::read_cert_file(p)?;
            let pin = cert::spki_sha256(&der).map_err(LinkError::file(p))?;
            if pin != opts.token.ca_pin {
                return Err(LinkError::file(p)(format!(
                    "this CA's public key (sha256:{}) is not the one the token pins (sha256:{}): the token and the CA file are from different collectors",
                    hex::encode(pin),
                    hex::encode(opts.token.ca_pin)
                )));
            }
            Some(der)
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LinkError::Invalid(format!("starting the network runtime: {e}")))?;
    // A collector pacing enrolments (many hosts of one site behind one address, a rollout wave
    // starting at once) answers RateLimited or Internal with a wait: honour it, with jitter, a
    // few times before giving up. Any other refusal is final.
    let mut attempt = 0;
    let got = loop {
        let result = runtime.block_on(link::enroll(
            &opts.collector,
            &server_name,
            &opts.token,
            ca_der.as_ref().map(|d| d.as_ref()),
            &machine_id,
            &opts.channel,
        ));
        match result {
            Err(e) if attempt < ENROL_RETRIES && retryable(&e) => {
                let asked = e
                    .retry_after()
                    .unwrap_or(Duration::from_secs(1))
                    .min(ENROL_MAX_WAIT);
                let wait = asked + backoff::full_jitter(asked, backoff::random_u64());
                eprintln!(
                    "picket-agent: the collector asks to wait ({e}); retrying in {:.1}s",
                    wait.as_secs_f64()
                );
                std::thread::sleep(wait);
                attempt += 1;
            }
            other => break other?,
        }
    };

    // The token is spent: write everything, the configuration last.
    fs::create_dir_all(&state).map_err(|e| LinkError::file(&state)(e.to_string()))?;
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700))
        .map_err(|e| LinkError::file(&state)(e.to_string()))?;
    let write = |name: &str, bytes: &[u8]| {
        write_atomically(&state, name, bytes).map_err(|e| LinkError::file(state.join(name))(e.to_string()))
    };
    write(KEY_FILE, cert::pem("PRIVATE KEY", &got.key_pkcs8).as_bytes())?;
    write(CERT_FILE, cert::pem("CERTIFICATE", &got.certificate).as_bytes())?;
    write(CA_FILE, cert::pem("CERTIFICATE", &got.ca).as_bytes())?;
    write(TRUST_FILE, anchor_text.as_bytes())?;
    write(MACHINE_ID_FILE, format!("{machine_id}\n").as_bytes())?;
    let p = |name: &str| toml_str("the state directory", &state.join(name));
    let roots_toml = roots
        .iter()
        .map(|r| toml_str("the scan root", r))
        .collect::<Result<Vec<_>, _>>()?
        .join(", ");
    let text = format!(
        "# Written by `picket-agent enroll` for agent {agent} of collector {addr}.\n\
         # Every key is documented in the agent's configuration reference; unknown keys are refused.\n\
         state_dir = {state}\n\
         \n\
         [scan]\n\
         roots = [{roots_toml}]\n\
         \n\
         [collector]\n\
         address = {address}\n\
         server_name = {server_name}\n\
         ca = {ca}\n\
         key = {key}\n\
         cert = {cert}\n\
         trust = {trust}\n\
         channel = {channel}\n\
         machine_id_file = {machine_id_file}\n\
         heartbeat_interval = \"60s\"\n\
         poll_interval = \"5m\"\n",
        agent = got.agent.replace('\n', " "),
        addr = opts.collector,
        state = toml_str("the state directory", &state)?,
        address = toml::Value::String(opts.collector.clone()),
        server_name = toml::Value::String(server_name.clone()),
        ca = p(CA_FILE)?,
        key = p(KEY_FILE)?,
        cert = p(CERT_FILE)?,
        trust = p(TRUST_FILE)?,
        channel = toml::Value::String(opts.channel.clone()),
        machine_id_file = toml_str("the machine id file", &machine_id_path)?,
    );
    let config_path = state.join(CONFIG_FILE);
    // What is written must be what `run` accepts.
    let written = Config::parse(&text, &config_path.display().to_string())
        .map_err(|e| LinkError::Invalid(format!("the configuration enrolment made does not parse: {e}")))?;
    let max_set_bytes = written
        .collector
        .as_ref()
        .ok_or_else(|| LinkError::Invalid("the configuration enrolment made has no [collector]".into()))?
        .max_set_bytes;
    write(CONFIG_FILE, text.as_bytes())?;
    let first_set = runtime
        .block_on(fetch_current(
            &opts.collector,
            &server_name,
            &state,
            &opts.channel,
            wire::machine_hash(&got.public_key, &machine_id),
            link::session::frame_cap(max_set_bytes),
        ))
        .map_err(|e| e.to_string())
        .and_then(|file| match file {
            None => Ok(None),
            Some((version, bytes)) => {
                let origin =
                    PathBuf::from(format!("set version {version} from collector {}", opts.collector));
                let expected = Expected {
                    channel: &opts.channel,
                    memory_limit: written.memory_limit,
                };
                StateDir::open(&state)
                    .and_then(|dir| {
                        dir.import_expected(
                            &anchor,
                            &origin,
                            &bytes,
                            unix_now(),
                            &Limits::default(),
                            &expected,
                        )
                    })
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
        });
    Ok(EnrolledAgent {
        agent: got.agent,
        config: config_path,
        not_after: got.not_after,
        first_set,
    })
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Connects once as the newly enrolled agent (the files just written: this proves they work)
/// and asks for the current set of `channel`, accepting frames of at most `max_frame` bytes.
/// Returns the set file when the collector sent one.
async fn fetch_current(
    addr: &str,
    server_name: &str,
    state: &Path,
    channel: &str,
    machine: [u8; 32],
    max_frame: usize,
) -> Result<Option<(u64, Vec<u8>)>, LinkError> {
    let config = tls::agent_config(
        &state.join(CA_FILE),
        &state.join(CERT_FILE),
        &state.join(KEY_FILE),
    )?;
    let mut session = link::connect(addr, server_name, config, machine).await?;
    session.set_max_frame(max_frame);
    let (have, have_timestamp) = match crate::store::load_set(state, &Limits::default()) {
        Ok(Some(t)) => (Some(t.manifest().version), Some(t.timestamp().version)),
        _ => (None, None),
    };
    session
        .send(&ClientMsg::Fetch(Fetch {
            channel: channel.to_owned(),
            have,
            have_timestamp,
        }))
        .await?;
    // An announcement may come first; the answer follows.
    for _ in 0..8 {
        match session.recv().await? {
            ServerMsg::Set { version, file } => return Ok(Some((version, file))),
            ServerMsg::UpToDate { version, file } if !file.is_empty() => return Ok(Some((version, file))),
            ServerMsg::UpToDate { .. } => return Ok(None),
            ServerMsg::Error(error) => {
                return Err(LinkError::Refused {
                    addr: addr.to_owned(),
                    error,
                })
            }
            ServerMsg::NewVersion { .. } => {}
            other => return Err(link::client::unexpected(addr, "an answer to the fetch", &other)),
        }
    }
    Err(LinkError::Protocol {
        addr: addr.to_owned(),
        message: "no answer to the fetch among the collector's messages".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_id_is_one_trimmed_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("machine-id");
        fs::write(&f, "0123456789abcdef0123456789abcdef\n").unwrap();
        let (id, from) = read_machine_id(Some(&f)).unwrap();
        assert_eq!(id, "0123456789abcdef0123456789abcdef");
        assert_eq!(from, f);
        fs::write(&f, "\n").unwrap();
        let err = read_machine_id(Some(&f)).unwrap_err().to_string();
        assert!(err.contains("not a machine id"), "{err}");
        let err = read_machine_id(Some(&dir.path().join("missing")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
