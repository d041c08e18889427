//! The dashboard's pages: each reads what it shows from the store (and the sharing preview)
//! and renders it with [`super::html`]. A page is `(title, body markup)`; the frame is added
//! by the caller.
//!
//! Invariant: every value read here reaches the markup through [`escape`] (numbers and times
//! formatted here aside); links carry ids percent-encoded and then escaped.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rusqlite::params;

use super::chart;
use super::html::{self, age, attr, escape, table, time, Viewer};
use super::STALE_AFTER;
use crate::datadir::DataDir;
use crate::store::{Store, ORG};
use crate::CollectorError;

type Page = Result<Option<(String, String)>, CollectorError>;

/// How many hours the sightings timeline covers.
const TIMELINE_HOURS: usize = 7 * 24;
/// How many indicators the sightings page lists.
const TOP: usize = 50;

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

fn indicator_link(id: &str) -> String {
    format!(
        "<a href=\"{}\"><code>{}</code></a>",
        attr(&format!("/ui/indicator?id={}", html::query_value(id))),
        escape(id)
    )
}

fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"badge {class}\">{}</span>", escape(text))
}

fn counts(items: &[(&str, String)]) -> String {
    let mut out = String::from("<div class=\"counts\">");
    for (label, value) in items {
        out.push_str(&format!("<div><b>{}</b>{}</div>", escape(value), escape(label)));
    }
    out.push_str("</div>");
    out
}

/// The fleet: every enrolled agent, stale ones highlighted.
pub fn fleet(dir: &DataDir, store: &Store, now: i64) -> Page {
    let agents = store.agents()?;
    let current: HashMap<String, (u64, i64)> = store
        .current_sets()?
        .into_iter()
        .map(|(c, v, t)| (c, (v, t)))
        .collect();
    let mut alarms: HashMap<String, Vec<String>> = HashMap::new();
    for a in store.alarms(false)? {
        alarms.entry(a.agent).or_default().push(a.kind);
    }
    let mut rows = Vec::new();
    let (mut stale, mut revoked, mut behind) = (0, 0, 0);
    for a in &agents {
        let hb = a.last_heartbeat().and_then(Result::ok);
        let is_stale = a.revoked.is_none() && a.last_seen.is_none_or(|t| now - t > STALE_AFTER);
        stale += usize::from(is_stale);
        revoked += usize::from(a.revoked.is_some());
        let mut state = Vec::new();
        if let Some(t) = a.revoked {
            state.push(badge("bad", &format!("revoked {}", picket_proto::rfc3339(t))));
        } else if is_stale {
            state.push(badge("stale", "stale"));
        } else {
            state.push(badge("ok", "live"));
        }
        if a.clone_seen.is_some() {
            state.push(badge("bad", "clone suspected"));
        }
        for kind in alarms.get(&a.id).into_iter().flatten() {
            state.push(badge("stale", &format!("alarm: {kind}")));
        }
        let set = match (hb.as_ref().and_then(|h| h.set_version), current.get(&a.channel)) {
            (Some(v), Some((cur, _))) if v < *cur => {
                behind += 1;
                format!("v{v} <span class=\"badge stale\">current v{cur}</span>")
            }
            (Some(v), _) => format!("v{v}"),
            (None, _) => "none yet".into(),
        };
        let set_age = hb
            .as_ref()
            .and_then(|h| h.set_created)
            .map_or_else(|| "—".into(), |t| age(now - t));
        let cert = if a.cert_not_after < now {
            badge(
                "bad",
                &format!("expired {}", picket_proto::rfc3339(a.cert_not_after)),
            )
        } else {
            format!(
                "{} (in {})",
                time(Some(a.cert_not_after)),
                age(a.cert_not_after - now)
            )
        };
        let class = if a.revoked.is_some() {
            "revoked"
        } else if is_stale {
            "stale"
        } else {
            ""
        };
        rows.push((
            class,
            vec![
                format!("<code title=\"{}\">{}</code>", attr(&a.id), escape(&short(&a.id))),
                escape(&a.channel),
                hb.as_ref()
                    .map_or_else(|| "—".into(), |h| escape(&h.agent_version)),
                set,
                set_age,
                a.last_seen.map_or_else(
                    || "never".into(),
                    |t| format!("{} ago <small>{}</small>", age(now - t), time(Some(t))),
                ),
                hb.as_ref()
                    .map_or_else(|| "—".into(), |h| h.spool_depth.to_string()),
                cert,
                state.join(" "),
            ],
        ));
    }
    let mut body = String::from("<h1>Fleet</h1>");
    body.push_str(&counts(&[
        ("agents", agents.len().to_string()),
        ("live", (agents.len() - stale - revoked).to_string()),
        ("stale", stale.to_string()),
        ("behind the current set", behind.to_string()),
        ("revoked", revoked.to_string()),
    ]));
    let mut channels: Vec<String> = current
        .iter()
        .map(|(c, (v, t))| format!("{} v{v}, published {} ago", escape(c), age(now - t)))
        .collect();
    channels.sort();
    body.push_str(&format!(
        "<p>Current sets: {}. An agent is stale when nothing came from it for {}.</p>",
        if channels.is_empty() {
            "none published yet".into()
        } else {
            channels.join("; ")
        },
        age(STALE_AFTER)
    ));
    let headers = [
        "Agent",
        "Channel",
        "Version",
        "Set",
        "Set age",
        "Last seen",
        "Spool",
        "Certificate expires",
        "State",
    ];
    if rows.is_empty() {
        body.push_str(
            "<p class=\"empty\">No agent has enrolled yet: `token create`, then `picket-agent enroll`.</p>",
        );
    } else {
        // Rows with a class, so stale agents stand out.
        let mut t = String::from("<table class=\"fleet\"><thead><tr>");
        for h in headers {
            t.push_str(&format!("<th>{h}</th>"));
        }
        t.push_str("</tr></thead><tbody>");
        for (class, cells) in rows {
            t.push_str(&format!("<tr class=\"{class}\">"));
            for c in cells {
                t.push_str(&format!("<td>{c}</td>"));
            }
            t.push_str("</tr>");
        }
        t.push_str("</tbody></table>");
        body.push_str(&t);
    }
    let _ = dir;
    Ok(Some(("Fleet".into(), body)))
}

/// Sightings: the timeline and the indicators seen most widely.
pub fn sightings(store: &Store, now: i64) -> Page {
    let all = store.sightings()?;
    let buckets = chart::per_hour(
        all.iter().map(|s| (s.first_seen, s.last_seen)),
        now,
        TIMELINE_HOURS,
    );
    let mut by = store.sightings_by_indicator()?;
    by.sort_by(|a, b| {
        b.hosts
            .cmp(&a.hosts)
            .then(b.count.cmp(&a.count))
            .then(b.last_seen.cmp(&a.last_seen))
    });
    let fps: BTreeSet<String> = store
        .false_positives()?
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    let mut rows = Vec::new();
    for s in by.iter().take(TOP) {
        let stored = store.indicator(&s.indicator)?;
        let orgs = store.inbound_organisations(&s.indicator)?;
        let mut what = stored.as_ref().map_or_else(
            || escape(&s.what.join(", ")),
            |i| format!("{} <code>{}</code>", escape(&i.kind), escape(&i.value)),
        );
        if fps.contains(&s.indicator) {
            what.push(' ');
            what.push_str(&badge("fp", "false positive"));
        }
        rows.push(vec![
            indicator_link(&s.indicator),
            what,
            s.hosts.to_string(),
            s.count.to_string(),
            time(Some(s.first_seen)),
            time(Some(s.last_seen)),
            orgs.to_string(),
        ]);
    }
    let hosts: BTreeSet<&str> = all.iter().map(|s| s.agent.as_str()).collect();
    let mut body = String::from("<h1>Sightings</h1>");
    body.push_str(&counts(&[
        ("indicators sighted", by.len().to_string()),
        ("hosts with sightings", hosts.len().to_string()),
        ("false positives marked", fps.len().to_string()),
    ]));
    body.push_str("<h2>Sightings per hour, last 7 days</h2>");
    body.push_str(&chart::timeline(&buckets, now));
    body.push_str(&format!("<h2>Top indicators (by hosts, at most {TOP})</h2>"));
    body.push_str(&table(
        &[
            "Indicator",
            "What",
            "Hosts",
            "Count",
            "First seen",
            "Last seen",
            "Other organisations",
        ],
        &rows,
        "No sightings yet.",
    ));
    Ok(Some(("Sightings".into(), body)))
}

/// One indicator: what it is, where it came from, who saw it, and its false-positive mark.
pub fn indicator(
    dir: &DataDir,
    store: &Store,
    id: &str,
    viewer: &Viewer,
    pseudonym: &dyn Fn(&str) -> String,
) -> Page {
    let stored = store.indicator(id)?;
    let seen: Vec<_> = store
        .sightings()?
        .into_iter()
        .filter(|s| s.indicator == id)
        .collect();
    if stored.is_none() && seen.is_empty() {
        return Ok(None);
    }
    let mut body = format!("<h1>Indicator <code>{}</code></h1>", escape(id));
    let mut facts: Vec<(&str, String)> = Vec::new();
    if let Some(s) = &stored {
        facts.push(("Kind", escape(&s.kind)));
        facts.push(("Value", format!("<code>{}</code>", escape(&s.value))));
        facts.push(("TLP", escape(&s.tlp.to_string())));
        facts.push((
            "Sources",
            s.sources
                .iter()
                .map(|x| escape(x))
                .collect::<Vec<_>>()
                .join("<br>"),
        ));
        if let Some(c) = &s.created_by {
            facts.push(("Created by", escape(c)));
        }
        facts.push(("Valid until", time(s.valid_until)));
        if s.revoked {
            facts.push(("Revoked", "by its source".into()));
        }
        facts.push(("First ingested", time(Some(s.first_seen))));
        facts.push(("Last ingested", time(Some(s.last_seen))));
    } else {
        facts.push(("Stored", "no longer: only its sightings remain".into()));
    }
    facts.push((
        "Other organisations that saw it",
        store.inbound_organisations(id)?.to_string(),
    ));
    body.push_str("<dl>");
    for (k, v) in facts {
        body.push_str(&format!("<dt>{k}</dt><dd>{v}</dd>"));
    }
    body.push_str("</dl>");
    body.push_str("<h2>False positive</h2>");
    let token = html::csrf_field(viewer);
    let id_field = format!("<input type=\"hidden\" name=\"id\" value=\"{}\">", attr(id));
    match store.false_positive(id)? {
        Some((reason, at)) => body.push_str(&format!(
            "<p class=\"notice\" id=\"fp-status\">Marked a false positive {}: {}. It is left out of every set \
             published from now on, and shared as such once it clears a community's k.</p>\
             <form method=\"post\" action=\"/ui/fp\" class=\"inline\">{token}{id_field}\
             <input type=\"hidden\" name=\"action\" value=\"undo\">\
             <button type=\"submit\" id=\"fp-undo\">Undo the mark</button></form>",
            time(Some(at)),
            escape(&reason)
        )),
        None => body.push_str(&format!(
            "<p id=\"fp-status\">Not marked.</p>\
             <form method=\"post\" action=\"/ui/fp\" class=\"inline\">{token}{id_field}\
             <input type=\"hidden\" name=\"action\" value=\"mark\">\
             <input name=\"reason\" id=\"fp-reason\" maxlength=\"500\" required placeholder=\"why it is a false positive\">\
             <button type=\"submit\" id=\"fp-mark\">Mark false positive</button></form>"
        )),
    }
    body.push_str("<h2>Sightings by host</h2>");
    let rows: Vec<Vec<String>> = seen
        .iter()
        .map(|s| {
            vec![
                format!("<code>{}</code>", escape(&pseudonym(&s.agent))),
                escape(&s.observed),
                escape(&s.what),
                s.location
                    .as_deref()
                    .map_or_else(|| "—".into(), |l| format!("<code>{}</code>", escape(l))),
                time(Some(s.first_seen)),
                time(Some(s.last_seen)),
                s.count.to_string(),
            ]
        })
        .collect();
    body.push_str(&table(
        &[
            "Host",
            "Seen on",
            "Matched",
            "Location (redacted)",
            "First seen",
            "Last seen",
            "Count",
        ],
        &rows,
        "No agent has seen it.",
    ));
    body.push_str(
        "<p>Hosts are shown by a pseudonym (a keyed hash of the agent, changed when the collector \
         restarts); the fleet page has the agents.</p>",
    );
    let _ = dir;
    Ok(Some((format!("Indicator {id}"), body)))
}

/// Sharing: per community, what would leave now, what left, and what came in.
pub fn sharing(dir: &DataDir, store: &Store, now: i64) -> Page {
    let cfg = dir.config();
    let mut body = String::from("<h1>Sharing</h1>");
    if cfg.communities.is_empty() {
        body.push_str("<p class=\"empty\">No community is configured ([[community]] in picket.toml).</p>");
    }
    for c in &cfg.communities {
        let name = &c.name;
        body.push_str(&format!(
            "<section class=\"community\" id=\"community-{}\"><h2>Community {}</h2>",
            attr(name),
            escape(name)
        ));
        body.push_str(&format!(
            "<p>k = {}, TLP ceiling {}, disclosure {}, time bucket {}, delay {}.</p>",
            c.k,
            escape(&c.tlp_ceiling),
            escape(&c.disclosure),
            escape(&c.time_bucket),
            escape(&c.delay)
        ));
        body.push_str("<h3>What would leave now</h3>");
        match crate::share::preview(dir, name, now) {
            Ok(p) => {
                body.push_str(&format!(
                    "<p><b class=\"shared-count\">{}</b> indicator(s) shared, {} held back.</p>",
                    p.shared,
                    p.held.len()
                ));
                if let Some(w) = &p.sector_withheld {
                    body.push_str(&format!("<p class=\"notice\">{}</p>", escape(&w.to_string())));
                }
                let held: Vec<Vec<String>> = p
                    .held
                    .iter()
                    .map(|(id, why)| vec![indicator_link(id), escape(&why.to_string())])
                    .collect();
                body.push_str(&table(&["Held back", "Why"], &held, "Nothing is held back."));
                let pretty = serde_json::to_string_pretty(&p.bundle).unwrap_or_default();
                body.push_str(&format!(
                    "<p>The bundle, exactly as it would leave:</p><pre class=\"bundle\">{}</pre>",
                    escape(&pretty)
                ));
            }
            Err(e) => body.push_str(&format!(
                "<p class=\"error\">The preview failed: {}</p>",
                escape(&e.to_string())
            )),
        }
        body.push_str("<h3>What left</h3>");
        let (objects, versions, last) = store.served_summary(name)?;
        body.push_str(&format!(
            "<p>Served over TAXII: {objects} object(s), {versions} version(s); last new version {}.</p>",
            time(last.map(|ms| ms / 1000))
        ));
        let pushed = store.pushed_summary(name)?;
        let rows: Vec<Vec<String>> = c
            .upstream
            .iter()
            .map(|u| {
                let (n, last) = pushed.get(&u.name).copied().unwrap_or((0, None));
                vec![
                    escape(&u.name),
                    escape(&u.api_root),
                    if u.push { "yes" } else { "no" }.into(),
                    n.to_string(),
                    time(last.map(|ms| ms / 1000)),
                ]
            })
            .collect();
        body.push_str(&table(
            &["Upstream", "API root", "Push", "Versions pushed", "Last push"],
            &rows,
            "No upstream collection is configured.",
        ));
        body.push_str("<h3>What came in: the reciprocity ledger</h3>");
        body.push_str(&ledger(dir, store, name, objects)?);
        body.push_str("</section>");
    }
    Ok(Some(("Sharing".into(), body)))
}

/// Per account of community `name` (each TAXII member listed for it, each upstream, and any
/// account something came from): what it gave and what it was given.
fn ledger(dir: &DataDir, store: &Store, name: &str, served: u64) -> Result<String, CollectorError> {
    let cfg = dir.config();
    let inbound = store.inbound_summary(name)?;
    let contributed = store.contributions_summary(name)?;
    let pushed = store.pushed_summary(name)?;
    // account → (kind, what we gave)
    let mut accounts: BTreeMap<String, (String, String)> = BTreeMap::new();
    for m in &cfg.taxii.members {
        let reads = m.communities.iter().any(|c| c == name);
        let writes = m.contribute.iter().any(|c| c == name);
        if reads || writes {
            let kind = match (reads, writes) {
                (true, true) => "member (reads, contributes)",
                (true, false) => "member (reads)",
                _ => "member (contributes)",
            };
            let gave = if reads {
                format!("{served} (served to the community)")
            } else {
                "0".into()
            };
            accounts.insert(m.name.clone(), (kind.into(), gave));
        }
    }
    if let Some(c) = cfg.communities.iter().find(|c| c.name == name) {
        for u in &c.upstream {
            let n = pushed.get(&u.name).map_or(0, |p| p.0);
            accounts.insert(
                format!("upstream:{}", u.name),
                ("upstream".into(), format!("{n} (pushed)")),
            );
        }
    }
    for a in inbound.keys().chain(contributed.keys()) {
        accounts
            .entry(a.clone())
            .or_insert_with(|| ("no longer configured".into(), "—".into()));
    }
    let rows: Vec<Vec<String>> = accounts
        .iter()
        .map(|(account, (kind, gave))| {
            let (objects, last_obj) = contributed.get(account).copied().unwrap_or((0, None));
            let inb = inbound.get(account).copied().unwrap_or_default();
            vec![
                escape(account),
                escape(kind),
                objects.to_string(),
                inb.sightings.to_string(),
                inb.false_positives.to_string(),
                time(inb.last.or(last_obj.map(|ms| ms / 1000))),
                escape(gave),
            ]
        })
        .collect();
    Ok(table(
        &[
            "Account",
            "Kind",
            "Objects posted",
            "Sightings received",
            "False-positive verdicts",
            "Last received",
            "Objects we gave",
        ],
        &rows,
        "No member or upstream is configured for this community.",
    ))
}

/// Sources: what each registered source is, when it was last pulled, and how that went.
pub fn sources(store: &Store, now: i64) -> Page {
    let counts = store.indicators_by_source()?;
    let list = store.sources()?;
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let due = s.last_pull.map(|t| t + s.schedule as i64);
            vec![
                escape(&s.name),
                escape(&s.kind),
                format!("<code>{}</code>", escape(&s.location)),
                format!(
                    "{}{}",
                    escape(&s.tlp.to_string()),
                    if s.trusted { " · trusted" } else { "" }
                ),
                s.last_pull.map_or_else(
                    || "never".into(),
                    |t| format!("{} ago <small>{}</small>", age(now - t), time(Some(t))),
                ),
                due.map_or_else(|| "at the next start".into(), |t| time(Some(t))),
                counts.get(&s.name).copied().unwrap_or(0).to_string(),
                match &s.last_error {
                    Some(e) => format!("<span class=\"error\">{}</span>", escape(e)),
                    None if s.last_pull.is_some() => badge("ok", "ok"),
                    None => "—".into(),
                },
            ]
        })
        .collect();
    let mut body = String::from("<h1>Sources</h1>");
    body.push_str(&table(
        &[
            "Source",
            "Kind",
            "Location",
            "TLP",
            "Last pull",
            "Next pull",
            "Indicators",
            "Last error",
        ],
        &rows,
        "No source is registered (`source add`); files given to `ingest` are listed below.",
    ));
    let registered: BTreeSet<&str> = list.iter().map(|s| s.name.as_str()).collect();
    let ingested: Vec<Vec<String>> = counts
        .iter()
        .filter(|(n, _)| !registered.contains(n.as_str()))
        .map(|(n, c)| vec![escape(n), c.to_string()])
        .collect();
    body.push_str("<h2>Ingested by hand</h2>");
    body.push_str(&table(
        &["Source", "Indicators"],
        &ingested,
        "Nothing was ingested by hand.",
    ));
    Ok(Some(("Sources".into(), body)))
}

/// What came in from one account of a community.
#[derive(Debug, Clone, Copy, Default)]
struct Inbound {
    sightings: u64,
    false_positives: u64,
    last: Option<i64>,
}

impl Store {
    /// The newest set of each channel: (channel, version, created).
    fn current_sets(&self) -> Result<Vec<(String, u64, i64)>, CollectorError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT channel, version, created FROM sets s WHERE org = ?1
                 AND version = (SELECT MAX(version) FROM sets t WHERE t.org = s.org AND t.channel = s.channel)
                 ORDER BY channel",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64, r.get(2)?))
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// What the TAXII server served community `name`: distinct objects, versions, and when
    /// the newest version was first served (ms).
    fn served_summary(&self, name: &str) -> Result<(u64, u64, Option<i64>), CollectorError> {
        self.conn()
            .query_row(
                "SELECT COUNT(DISTINCT object_id), COUNT(*), MAX(added_ms) FROM taxii_served
                 WHERE org = ?1 AND community = ?2",
                params![ORG, name],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?.max(0) as u64,
                        r.get::<_, i64>(1)?.max(0) as u64,
                        r.get(2)?,
                    ))
                },
            )
            .map_err(self.err())
    }

    /// Object versions pushed to each upstream of community `name`, and the last push (ms).
    fn pushed_summary(&self, name: &str) -> Result<HashMap<String, (u64, Option<i64>)>, CollectorError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT upstream, COUNT(*), MAX(pushed_ms) FROM pushed WHERE org = ?1 AND community = ?2
                 GROUP BY upstream",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG, name], |r| {
                Ok((r.get(0)?, (r.get::<_, i64>(1)?.max(0) as u64, r.get(2)?)))
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Other organisations' sightings received through community `name`, per account.
    fn inbound_summary(&self, name: &str) -> Result<HashMap<String, Inbound>, CollectorError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT account, SUM(CASE WHEN false_positive = 0 THEN 1 ELSE 0 END),
                        SUM(CASE WHEN false_positive = 0 THEN 0 ELSE 1 END), MAX(received)
                 FROM community_sightings WHERE org = ?1 AND community = ?2 GROUP BY account",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG, name], |r| {
                Ok((
                    r.get(0)?,
                    Inbound {
                        sightings: r.get::<_, i64>(1)?.max(0) as u64,
                        false_positives: r.get::<_, i64>(2)?.max(0) as u64,
                        last: r.get(3)?,
                    },
                ))
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Object versions each account posted to community `name`, and the last (ms).
    fn contributions_summary(
        &self,
        name: &str,
    ) -> Result<HashMap<String, (u64, Option<i64>)>, CollectorError> {
        let mut stmt = self
            .conn()
            .prepare(
                "SELECT account, COUNT(*), MAX(added_ms) FROM contributions WHERE org = ?1 AND community = ?2
                 GROUP BY account",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG, name], |r| {
                Ok((r.get(0)?, (r.get::<_, i64>(1)?.max(0) as u64, r.get(2)?)))
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// Stored indicators per source name.
    fn indicators_by_source(&self) -> Result<BTreeMap<String, u64>, CollectorError> {
        let mut stmt = self
            .conn()
            .prepare("SELECT source, COUNT(*) FROM indicator_sources WHERE org = ?1 GROUP BY source")
            .map_err(self.err())?;
        let rows = stmt
            .query_map(params![ORG], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
}
