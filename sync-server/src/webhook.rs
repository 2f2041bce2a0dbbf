//! The notification hook: a POST per recipient when something new arrives for them.
//!
//! **What triggers it.** The hub calls [`Notifier::document_changed`] when a device's changes
//! were applied to a class's notebook (new or edited entries, events, decided bookings) or to a
//! family's private lane or mailbox (messages, replies, signatures). The recipients are the
//! roster's active members with an active device who may read that document, minus the member
//! who sent the change:
//!
//! - notebook (`event: "notebook"`): every member of the class; but a change that only
//!   decided booking requests or duty claims (`decisions/…`, read from the newest change by
//!   `events::decisions_in_newest_change`) pings only the guardians of the families decided;
//! - a family's lane (`"lane"`): staff and that family's guardians;
//! - a family's mailbox (`"mailbox"`): the school's admins (the principal) and that family's
//!   guardians; class teachers do not read the mailbox and are not pinged.
//!
//! Rosters, boards, the committee board and ballots notify nobody.
//!
//! **What is sent.** One JSON object per recipient, with **no content** — the relay does not
//! put entry text into a third party's push service; the phone syncs to see what is new:
//!
//! ```json
//! {"event":"notebook","class":"…","doc":"…","member":"…","member_name":"Ms Li",
//!  "devices":["…"],"urgent":false,"at":1764045000000}
//! ```
//!
//! `event` is `notebook`, `lane` or `mailbox`; `urgent` is true when the notebook change
//! posted, edited or re-flagged a red entry (the "urgent" override).
//!
//! **Quiet hours are per recipient and set by the admin** in the relay config, school-local
//! time given by `utc_offset_minutes`: the school's window (`[webhook] quiet_hours`) applies
//! to every recipient without an override; `[webhook.member_quiet_hours]` gives one member
//! (by member id) their own window, or `""` for none. A non-urgent notification that arrives
//! inside *its recipient's* window is held until that window ends, while the same change is
//! sent at once to a recipient whose window does not cover now; an urgent one is sent at once.
//! Members cannot set their own quiet hours from the app yet: a member-written preferences
//! record would need a roster or document change and is not implemented, so the admin edits
//! the config and restarts the relay.
//!
//! **Never blocking sync.** The hub only calls `try_send` on a bounded queue
//! (`[webhook] queue`): when it is full the notification is dropped and counted
//! (`homeroom_webhook_deliveries_total{outcome="dropped"}`). Deliveries run on their own task:
//! one POST at a time, `timeout_secs` each, retried with backoff (1 s doubling to 5 min) up to
//! `max_attempts`. While a notification for the same recipient and document is still waiting,
//! a new one is merged into it (urgent wins), so a burst of edits yields one POST.
//! Held and pending notifications live in memory: a relay restart forgets them (the data
//! itself is synced regardless; only a ping is lost).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use homeroom_core::automerge::Automerge;
use homeroom_core::entries::{Urgency, entries_in_newest_change, read_entry};
use homeroom_core::events::decisions_in_newest_change;
use homeroom_core::roster::RosterIndex;
use homeroom_core::{DeviceId, DocId, DocKind, MemberId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::WebhookSettings;
use crate::metrics::{self, WebhookOutcome};

/// First delay before retrying a failed POST.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest delay between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Largest response head read from the webhook (only the status line matters).
const MAX_RESPONSE: usize = 16 * 1024;

/// One notification for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// `notebook`, `lane` or `mailbox`.
    pub event: &'static str,
    /// The document that changed.
    pub doc: DocId,
    /// The recipient.
    pub member: MemberId,
    /// The recipient's display name.
    pub member_name: String,
    /// The recipient's active devices.
    pub devices: Vec<DeviceId>,
    /// Whether it overrides quiet hours.
    pub urgent: bool,
    /// When it was raised (ms since the Unix epoch).
    pub at: i64,
}

impl Notification {
    /// The JSON body POSTed.
    pub fn to_json(&self) -> String {
        let mut devices = String::new();
        for (i, d) in self.devices.iter().enumerate() {
            if i > 0 {
                devices.push(',');
            }
            let _ = write!(devices, "\"{d}\"");
        }
        format!(
            "{{\"event\":\"{}\",\"class\":\"{}\",\"doc\":\"{}\",\"member\":\"{}\",\
             \"member_name\":{},\"devices\":[{devices}],\"urgent\":{},\"at\":{}}}",
            self.event,
            self.doc.class,
            self.doc,
            self.member,
            json_string(&self.member_name),
            self.urgent,
            self.at
        )
    }
}

/// The hub's end of the hook: queues notifications without ever waiting.
#[derive(Debug, Clone)]
pub struct Notifier {
    queue: mpsc::Sender<Notification>,
}

impl Notifier {
    /// Start the delivery task for `settings`. Must be called inside a tokio runtime; the
    /// task ends when every `Notifier` clone is dropped and nothing is left to send now.
    pub fn spawn(settings: WebhookSettings) -> Notifier {
        let (queue, rx) = mpsc::channel(settings.queue);
        tokio::spawn(deliver(settings, rx));
        Notifier { queue }
    }

    /// Queue `n`; drops (and counts) it if the queue is full.
    pub fn notify(&self, n: Notification) {
        if self.queue.try_send(n).is_err() {
            metrics::global().webhook(WebhookOutcome::Dropped);
        }
    }

    /// Changes sent by `sender` were applied to `doc`, whose content is `content` (when
    /// loaded) and whose class roster is `roster`: notify every recipient.
    pub fn document_changed(
        &self,
        roster: &RosterIndex,
        doc: DocId,
        content: Option<&Automerge>,
        sender: Option<DeviceId>,
        now_ms: i64,
    ) {
        let event = match doc.kind {
            DocKind::Notebook => "notebook",
            DocKind::Lane(_) => "lane",
            DocKind::Mailbox(_) => "mailbox",
            _ => return,
        };
        let notebook = content.filter(|_| doc.kind == DocKind::Notebook);
        // The entries the newest change wrote: only what that change touched, so the hub's
        // cost does not grow with the notebook; read once (the common case is a posted entry).
        let entries = notebook.map(entries_in_newest_change).unwrap_or_default();
        let urgent = notebook.is_some_and(|c| {
            entries
                .iter()
                .any(|id| read_entry(c, *id).is_ok_and(|e| e.urgency == Urgency::Red))
        });
        let sender_member = sender.and_then(|d| roster.member_of(&d)).map(|m| m.id);
        // A notebook change that only decided bookings (or duty claims) is news for the
        // families that asked, not for the whole class. A change that wrote entries is not one.
        let only_families = match notebook {
            Some(c) if entries.is_empty() => {
                let decided = decisions_in_newest_change(c);
                decided.only_decisions.then_some(decided.families)
            }
            _ => None,
        };
        for n in recipients(roster, &doc.kind, sender_member) {
            if let Some(families) = &only_families {
                let member = roster.members.get(&n.0);
                if !member.is_some_and(|m| families.iter().any(|f| m.is_guardian_of(f))) {
                    continue;
                }
            }
            self.notify(Notification {
                event,
                doc,
                member: n.0,
                member_name: n.1,
                devices: n.2,
                urgent,
                at: now_ms,
            });
        }
    }
}

/// Active members (but `except`) with an active device that may read `kind`: id, name,
/// those devices.
fn recipients(
    roster: &RosterIndex,
    kind: &DocKind,
    except: Option<MemberId>,
) -> Vec<(MemberId, String, Vec<DeviceId>)> {
    let mut out: Vec<(MemberId, String, Vec<DeviceId>)> = Vec::new();
    for member in roster.members.values() {
        if Some(member.id) == except || member.removed_at.is_some() {
            continue;
        }
        let mut devices: Vec<DeviceId> = roster
            .devices
            .values()
            .filter(|d| d.member == member.id && roster.can_read(&d.id, kind))
            .map(|d| d.id)
            .collect();
        if devices.is_empty() {
            continue;
        }
        devices.sort_by_key(|d| d.to_string());
        out.push((member.id, member.name.clone(), devices));
    }
    out
}

/// A queued notification and its schedule.
struct Pending {
    n: Notification,
    attempts: u32,
    not_before: Instant,
}

async fn deliver(settings: WebhookSettings, mut rx: mpsc::Receiver<Notification>) {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    loop {
        // Take everything queued, merging duplicates (same recipient and document).
        while let Ok(n) = rx.try_recv() {
            enqueue(&settings, &mut pending, n);
        }
        let now = Instant::now();
        let due = pending.iter().position(|p| p.not_before <= now);
        if let Some(i) = due {
            let Some(mut p) = pending.remove(i) else {
                continue;
            };
            p.attempts += 1;
            match post(&settings, &p.n).await {
                Ok(()) => {
                    metrics::global().webhook(WebhookOutcome::Sent);
                    tracing::debug!(member = %p.n.member, doc = %p.n.doc, "webhook delivered");
                }
                Err(e) if p.attempts >= settings.max_attempts => {
                    metrics::global().webhook(WebhookOutcome::Failed);
                    tracing::warn!(
                        url = %settings.url, member = %p.n.member, attempts = p.attempts,
                        error = %e, "webhook delivery failed; giving up"
                    );
                }
                Err(e) => {
                    let delay = FIRST_BACKOFF
                        .saturating_mul(1 << (p.attempts - 1).min(16))
                        .min(MAX_BACKOFF);
                    tracing::info!(
                        url = %settings.url, attempt = p.attempts, retry_in_s = delay.as_secs(),
                        error = %e, "webhook delivery failed; retrying"
                    );
                    p.not_before = Instant::now() + delay;
                    pending.push_back(p);
                }
            }
            continue;
        }
        if !open && pending.is_empty() {
            return;
        }
        let next = pending.iter().map(|p| p.not_before).min();
        tokio::select! {
            n = rx.recv(), if open => match n {
                Some(n) => enqueue(&settings, &mut pending, n),
                None => {
                    open = false;
                    // Held notifications cannot outlive the relay: send nothing more that
                    // is not due now.
                    pending.retain(|p| p.not_before <= Instant::now());
                }
            },
            () = sleep_until(next) => {}
        }
    }
}

fn enqueue(settings: &WebhookSettings, pending: &mut VecDeque<Pending>, n: Notification) {
    if let Some(p) = pending
        .iter_mut()
        .find(|p| p.n.member == n.member && p.n.doc == n.doc && p.attempts == 0)
    {
        p.n.urgent |= n.urgent;
        p.n.at = n.at;
        if p.n.urgent {
            p.not_before = p.not_before.min(Instant::now());
        }
        return;
    }
    if pending.len() >= settings.queue {
        metrics::global().webhook(WebhookOutcome::Dropped);
        return;
    }
    let hold = if n.urgent {
        Duration::ZERO
    } else {
        let window = settings
            .member_quiet_hours
            .get(&n.member)
            .copied()
            .unwrap_or(settings.quiet_hours);
        quiet_wait(window, settings.utc_offset_minutes, unix_ms())
    };
    if !hold.is_zero() {
        metrics::global().webhook(WebhookOutcome::Deferred);
        tracing::debug!(member = %n.member, hold_s = hold.as_secs(), "webhook held for quiet hours");
    }
    pending.push_back(Pending {
        n,
        attempts: 0,
        not_before: Instant::now() + hold,
    });
}

/// How long until the quiet-hours window `(start, end)` (minutes after local midnight) ends,
/// at `now_ms` (UTC); zero outside the window.
pub fn quiet_wait(window: Option<(u16, u16)>, utc_offset_minutes: i32, now_ms: i64) -> Duration {
    let Some((start, end)) = window else {
        return Duration::ZERO;
    };
    let local_ms = now_ms + i64::from(utc_offset_minutes) * 60_000;
    let day_ms = local_ms.rem_euclid(86_400_000);
    let (start, end) = (i64::from(start) * 60_000, i64::from(end) * 60_000);
    let inside = if start < end {
        (start..end).contains(&day_ms)
    } else {
        day_ms >= start || day_ms < end
    };
    if !inside {
        return Duration::ZERO;
    }
    let wait = (end - day_ms).rem_euclid(86_400_000);
    Duration::from_millis(u64::try_from(wait).unwrap_or(0))
}

/// Why one POST failed.
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("cannot connect or send: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within the timeout")]
    Timeout,
    #[error("answered {0}")]
    Status(String),
}

async fn post(settings: &WebhookSettings, n: &Notification) -> Result<(), PostError> {
    tokio::time::timeout(settings.timeout, post_inner(settings, n))
        .await
        .map_err(|_| PostError::Timeout)?
}

async fn post_inner(settings: &WebhookSettings, n: &Notification) -> Result<(), PostError> {
    let body = n.to_json();
    let mut stream = TcpStream::connect((settings.host.as_str(), settings.port)).await?;
    let host = if settings.host.contains(':') {
        format!("[{}]:{}", settings.host, settings.port)
    } else {
        format!("{}:{}", settings.host, settings.port)
    };
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: homeroom-relay/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        settings.path,
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    if let Some(token) = &settings.bearer_token {
        let _ = write!(req, "Authorization: Bearer {token}\r\n");
    }
    req.push_str("\r\n");
    req.push_str(&body);
    stream.write_all(req.as_bytes()).await?;
    stream.flush().await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !head.contains(&b'\n') && head.len() < MAX_RESPONSE {
        let k = stream.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        head.extend_from_slice(&buf[..k]);
    }
    let line = String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or_default())
        .trim()
        .to_string();
    let status = line.split(' ').nth(1).unwrap_or_default();
    if line.starts_with("HTTP/1.") && status.starts_with('2') && status.len() == 3 {
        Ok(())
    } else if line.is_empty() {
        Err(PostError::Status("nothing (connection closed)".into()))
    } else {
        Err(PostError::Status(line))
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000;

    #[test]
    fn quiet_hours_span_midnight_and_honour_the_offset() {
        let w = Some((21 * 60, 7 * 60));
        // 22:00 UTC, offset 0: inside, 9 h left.
        assert_eq!(
            quiet_wait(w, 0, 22 * H),
            Duration::from_millis(9 * H as u64)
        );
        // 06:30: 30 min left.
        assert_eq!(quiet_wait(w, 0, 6 * H + H / 2), Duration::from_secs(1800));
        // 12:00: outside.
        assert_eq!(quiet_wait(w, 0, 12 * H), Duration::ZERO);
        // 20:30 UTC is 21:30 at UTC+1: inside.
        assert!(!quiet_wait(w, 60, 20 * H + H / 2).is_zero());
        // A same-day window.
        assert!(!quiet_wait(Some((60, 120)), 0, H + 1).is_zero());
        assert!(quiet_wait(Some((60, 120)), 0, 3 * H).is_zero());
        assert!(quiet_wait(None, 0, 22 * H).is_zero());
    }

    #[test]
    fn json_escapes_names() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
