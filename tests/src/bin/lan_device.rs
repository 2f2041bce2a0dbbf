//! A Homeroom device as a separate process, driven line by line on stdin by the LAN and
//! TCP-fallback tests (`tests/tests/lan.rs`, `tests/tests/tcp_fallback.rs`).
//!
//! `lan_device <data-dir>` prints `READY <device-id-hex>`, then answers each command line with
//! one line `OK <result>` or `ERR <error>`:
//!
//! | command | result |
//! |---|---|
//! | `create_class <name>` | class id |
//! | `add_family <class> <name>` | family id |
//! | `add_guardian <class> <family> <device>` | member id |
//! | `post <class> <title>` | entry id (the entry, posted as staff) |
//! | `forge <class> <title>` | entry id: a guardian signs a teacher entry it may not write |
//! | `reply <class> <entry> <text>` | reply id (private: the family's lane) |
//! | `titles <class>` | the notebook's entry titles, `\|`-separated, sorted |
//! | `replies <class>` | texts of the private replies this device sees, `\|`-separated, sorted |
//! | `raw_entry <class> <entry>` | `present` or `absent`: the entry in the notebook document itself, whoever wrote it (the view shows only staff entries) |
//! | `delivery <item>` | `Delivered`, `SavedLocally` or `NotLocal` |
//! | `lan_start <instance> [mdns]` | the UDP port (injected discovery unless `mdns`) |
//! | `lan_peer <instance> <addr>` | – (injected discovery: report a peer) |
//! | `lan_stop` | – |
//! | `relay <quic-addr> <fingerprint> [<tcp-addr> <quic-timeout-ms> <quic-retry-ms>]` | – |
//! | `relay_stop` | – |
//! | `status` | `connected=<bool> over_tcp=<bool> pending=<n> lan_peers=<n>` |
//! | `quit` | – (then the process exits) |
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use homeroom_client::core::entries::{self, Audience, EntryKind, NewEntry, Urgency};
use homeroom_client::core::roster::Role;
use homeroom_client::core::{Actor, ClassId, DeviceId, DocId, DocKind, FamilyId, ItemId};
use homeroom_client::{
    Backoff, Device, LanOptions, MdnsDiscovery, RelayTarget, StaticDiscovery, TcpFallback,
};

fn entry<'a>(title: &'a str) -> NewEntry<'a> {
    NewEntry {
        kind: EntryKind::Homework,
        urgency: Urgency::Green,
        audience: Audience::WholeClass,
        title,
        text: "from the LAN test",
        signature_requested: false,
        consent: None,
    }
}

struct State {
    rt: tokio::runtime::Runtime,
    device: Device,
    discovery: Option<Arc<StaticDiscovery>>,
}

fn arg<'a>(parts: &[&'a str], i: usize) -> Result<&'a str> {
    parts
        .get(i)
        .copied()
        .ok_or_else(|| anyhow!("missing argument {i}"))
}

fn class(parts: &[&str], i: usize) -> Result<ClassId> {
    arg(parts, i)?
        .parse()
        .map_err(|e| anyhow!("class id: {e:?}"))
}

fn run(st: &mut State, line: &str) -> Result<String> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    let d = &st.device;
    match arg(&parts, 0)? {
        "create_class" => Ok(d.create_class(arg(&parts, 1)?, "Teacher")?.to_hex()),
        "add_family" => Ok(d.add_family(class(&parts, 1)?, arg(&parts, 2)?)?.to_hex()),
        "add_guardian" => {
            let fam: FamilyId = arg(&parts, 2)?
                .parse()
                .map_err(|e| anyhow!("family: {e:?}"))?;
            let dev: DeviceId = arg(&parts, 3)?
                .parse()
                .map_err(|e| anyhow!("device: {e:?}"))?;
            let m = d.add_member(
                class(&parts, 1)?,
                "Guardian",
                &[Role::Guardian],
                Some(fam),
                Some(dev),
            )?;
            Ok(m.to_hex())
        }
        "post" => Ok(d
            .post_entry(class(&parts, 1)?, &entry(arg(&parts, 2)?))?
            .entry
            .to_hex()),
        "forge" => {
            // A guardian's device writes a teacher entry: it pretends to itself that it is
            // staff, so the local check passes; every receiver must refuse the change.
            let c = class(&parts, 1)?;
            let title = arg(&parts, 2)?.to_string();
            let me = d.device_id();
            let (posted, _) =
                d.edit_unchecked(DocId::new(c, DocKind::Notebook), move |tx, actor, ids| {
                    let mut fake = actor.roster.clone();
                    let member = fake.member_of(&me).map(|m| m.id);
                    if let Some(m) = member.and_then(|id| fake.members.get_mut(&id)) {
                        m.roles.insert(Role::HeadTeacher);
                    }
                    let pretend = Actor::new(&fake, me, actor.now);
                    let mut ids = ids;
                    entries::post_entry(tx, &pretend, &mut ids, &entry(&title))
                })?;
            Ok(posted.entry.to_hex())
        }
        "reply" => {
            let e: ItemId = arg(&parts, 2)?
                .parse()
                .map_err(|e| anyhow!("entry: {e:?}"))?;
            Ok(d.reply(class(&parts, 1)?, e, arg(&parts, 3)?, false)?
                .to_hex())
        }
        "titles" => {
            let view = d.notebook(class(&parts, 1)?)?;
            let mut t: Vec<String> = view
                .entries
                .iter()
                .map(|e| e.latest.title.clone())
                .collect();
            t.sort();
            Ok(t.join("|"))
        }
        "replies" => {
            let view = d.notebook(class(&parts, 1)?)?;
            let mut t: Vec<String> = view
                .entries
                .iter()
                .flat_map(|e| e.private_replies.iter().filter_map(|r| r.text.clone()))
                .collect();
            t.sort();
            Ok(t.join("|"))
        }
        "raw_entry" => {
            let e: ItemId = arg(&parts, 2)?
                .parse()
                .map_err(|e| anyhow!("entry: {e:?}"))?;
            let present = d.read(DocId::new(class(&parts, 1)?, DocKind::Notebook), |am, _| {
                Ok(entries::read_entry(am, e).is_ok())
            })?;
            Ok(if present { "present" } else { "absent" }.to_string())
        }
        "delivery" => {
            let item: ItemId = arg(&parts, 1)?
                .parse()
                .map_err(|e| anyhow!("item: {e:?}"))?;
            Ok(format!("{:?}", d.delivery_state(item)?))
        }
        "lan_start" => {
            let instance = arg(&parts, 1)?.to_string();
            let mut options = if parts.get(2) == Some(&"mdns") {
                LanOptions::with_discovery(Arc::new(MdnsDiscovery::new()))
            } else {
                let disc = Arc::new(StaticDiscovery::new(Vec::new()));
                st.discovery = Some(disc.clone());
                LanOptions::with_discovery(disc)
            };
            options.bind = SocketAddr::from(([127, 0, 0, 1], 0));
            if parts.get(2) == Some(&"mdns") {
                options.bind = SocketAddr::from(([0, 0, 0, 0], 0));
            }
            options.instance = Some(instance);
            let advert = d.start_lan_sync(st.rt.handle(), options)?;
            Ok(advert.port.to_string())
        }
        "lan_peer" => {
            let disc = st
                .discovery
                .as_ref()
                .ok_or_else(|| anyhow!("LAN sync with injected discovery is not running"))?;
            let addr: SocketAddr = arg(&parts, 2)?.parse()?;
            disc.add(arg(&parts, 1)?, addr);
            Ok(String::new())
        }
        "lan_stop" => {
            st.rt.block_on(d.stop_lan_sync());
            st.discovery = None;
            Ok(String::new())
        }
        "relay" => {
            let addr: SocketAddr = arg(&parts, 1)?.parse()?;
            let fingerprint = homeroom_transport::parse_fingerprint(arg(&parts, 2)?)?;
            let target = RelayTarget { addr, fingerprint };
            let backoff = Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(1),
            };
            let fallback = match parts.get(3) {
                Some(tcp) => Some(TcpFallback {
                    addr: tcp.parse()?,
                    quic_timeout: Duration::from_millis(arg(&parts, 4)?.parse()?),
                    quic_retry: Duration::from_millis(arg(&parts, 5)?.parse()?),
                }),
                None => None,
            };
            d.start_sync_with_fallback(st.rt.handle(), target, backoff, fallback)?;
            Ok(String::new())
        }
        "relay_stop" => {
            st.rt.block_on(d.stop_sync());
            Ok(String::new())
        }
        "status" => {
            let s = d.sync_status();
            Ok(format!(
                "connected={} over_tcp={} pending={} lan_peers={}",
                s.connected,
                s.over_tcp,
                s.pending,
                s.lan_peers.len()
            ))
        }
        other => Err(anyhow!("unknown command {other:?}")),
    }
}

fn main() -> Result<()> {
    let dir: PathBuf = std::env::args()
        .nth(1)
        .context("usage: lan_device <data-dir>")?
        .into();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let device = Device::open(&dir)?;
    let mut st = State {
        rt,
        device,
        discovery: None,
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "READY {}", st.device.device_id())?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim() == "quit" {
            break;
        }
        match run(&mut st, &line) {
            Ok(r) => writeln!(out, "OK {r}")?,
            Err(e) => writeln!(out, "ERR {}", format!("{e:#}").replace('\n', " "))?,
        }
        out.flush()?;
    }
    let State { rt, device, .. } = st;
    rt.block_on(async {
        device.stop_lan_sync().await;
        device.stop_sync().await;
    });
    Ok(())
}
