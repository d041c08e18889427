//! The real `picket-agent` binary as a child process: finding it, importing a set, writing a
//! configuration, running `picket-agent run`, following its output, and reading its memory and
//! CPU time from `/proc`.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// The `picket-agent` binary built next to this one (`target/release/picket-agent`).
pub fn agent_bin() -> Result<PathBuf> {
    crate::built_bin("picket-agent")
}

/// Runs `picket-agent import-set` of `set` into the state directory `state`, and checks that it
/// installed version 1 with `indicators` indicators.
pub fn import_set(state: &Path, anchor: &Path, set: &Path, indicators: usize) -> Result<()> {
    let out = Command::new(agent_bin()?)
        .arg("import-set")
        .arg("--state")
        .arg(state)
        .arg("--trust")
        .arg(anchor)
        .arg(set)
        .output()
        .context("running picket-agent import-set")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "picket-agent import-set failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let want = format!("installed set version 1, {indicators} indicators");
    ensure!(
        stdout.contains(&want),
        "import-set said {stdout:?}, expected {want:?}"
    );
    Ok(())
}

/// A path as a TOML basic string.
fn toml_path(p: &Path) -> Result<String> {
    let s = p
        .to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))?;
    Ok(format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
}

/// Writes `dir/agent.toml`: the state directory, the scan roots (without file events, so that
/// only scanning is measured), no process or connection polling, and the extra `[limits]`
/// lines given. Returns its path.
pub fn write_config(dir: &Path, state: &Path, roots: &[&Path], limits: &str) -> Result<PathBuf> {
    let roots = roots.iter().map(|r| toml_path(r)).collect::<Result<Vec<_>>>()?;
    let text = format!(
        "state_dir = {}\n\n[scan]\nroots = [{}]\nwatch = false\n\n[processes]\nenabled = false\n\n\
         [connections]\nenabled = false\n\n[limits]\n{limits}\n",
        toml_path(state)?,
        roots.join(", ")
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A line the daemon wrote.
#[derive(Debug, Clone)]
pub enum Line {
    /// On stdout: a sighting, one JSON object.
    Out(String),
    /// On stderr: a log line.
    Err(String),
}

/// A running `picket-agent run`, killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    lines: Receiver<Line>,
    /// Everything read so far, for error messages and checks.
    pub seen: Vec<Line>,
}

fn forward(pipe: impl Read + Send + 'static, tx: std::sync::mpsc::Sender<Line>, wrap: fn(String) -> Line) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(wrap(line)).is_err() {
                break;
            }
        }
    });
}

impl Daemon {
    /// Starts `picket-agent run --config CONFIG`.
    pub fn start(config: &Path) -> Result<Daemon> {
        let mut child = Command::new(agent_bin()?)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting picket-agent run")?;
        let (tx, lines) = channel();
        let out = child.stdout.take().context("the child's stdout")?;
        let err = child.stderr.take().context("the child's stderr")?;
        forward(out, tx.clone(), Line::Out);
        forward(err, tx, Line::Err);
        Ok(Daemon {
            child,
            lines,
            seen: Vec::new(),
        })
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for a stderr line containing `needle`, and returns it.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Line::Err(text) = line {
                        if text.contains(needle) {
                            return Ok(text);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "picket-agent did not print {needle:?} within {timeout:?}; it said:\n{}",
                        self.log()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    bail!(
                        "picket-agent exited ({status:?}) before printing {needle:?}; it said:\n{}",
                        self.log()
                    )
                }
            }
        }
    }

    /// Collects whatever the daemon has written so far without waiting.
    pub fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
    }

    /// Whether a stderr line containing `needle` has been seen (after [`Daemon::drain`]).
    pub fn has_said(&self, needle: &str) -> bool {
        self.seen
            .iter()
            .any(|l| matches!(l, Line::Err(t) if t.contains(needle)))
    }

    /// The stdout lines (sightings) seen so far.
    pub fn sightings(&self) -> impl Iterator<Item = &str> {
        self.seen.iter().filter_map(|l| match l {
            Line::Out(t) => Some(t.as_str()),
            Line::Err(_) => None,
        })
    }

    fn log(&self) -> String {
        self.seen
            .iter()
            .map(|l| match l {
                Line::Out(t) => format!("stdout: {t}"),
                Line::Err(t) => format!("stderr: {t}"),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes.
    pub fn status_bytes(&self, field: &str) -> Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let line = text
            .lines()
            .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
            .with_context(|| format!("no {field} in {path}"))?;
        let kb: u64 = line[field.len() + 1..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .with_context(|| format!("{path}: {line:?}"))?;
        Ok(kb * 1024)
    }

    /// The CPU time the whole process has used (user + system, all threads), in clock ticks,
    /// from fields 14 and 15 of `/proc/PID/stat`.
    pub fn cpu_ticks(&self) -> Result<u64> {
        let path = format!("/proc/{}/stat", self.pid());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_stat_cpu(&text).with_context(|| format!("unexpected {path}: {text:?}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime from a `/proc/PID/stat` line. The command name (field 2) is in parentheses
/// and may hold spaces and parentheses, so fields are counted from the last `)`: field 3 is
/// the first after it, so utime (14) and stime (15) are the 12th and 13th.
fn parse_stat_cpu(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second (`getconf CLK_TCK`), the unit of `/proc/PID/stat` times.
pub fn clock_ticks() -> Result<u64> {
    let out = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    ensure!(out.status.success(), "getconf CLK_TCK failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let ticks: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("getconf CLK_TCK said {text:?}"))?;
    ensure!(ticks > 0, "getconf CLK_TCK said 0");
    Ok(ticks)
}

/// The value of `key=` in a log line such as `set version=1 indicators=10 index_bytes=400`.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_counts_from_the_last_parenthesis() {
        let line = "42 (a) b) (c) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 39 19 2 0 99 0 0";
        assert_eq!(parse_stat_cpu(line), Some(12));
        assert_eq!(parse_stat_cpu("42 (x) S 1"), None);
    }

    #[test]
    fn fields() {
        let l = "picket-agent: set version=3 channel=default indicators=10 index_bytes=400";
        assert_eq!(field(l, "indicators"), Some("10"));
        assert_eq!(field(l, "version"), Some("3"));
        assert_eq!(field(l, "missing"), None);
    }
}
