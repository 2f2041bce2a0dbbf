//! `homeroom-relay admin …`: the command-line face of `homeroom_relay::admin`.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use homeroom_client::{Invite, InviteRole, RelayTarget};
use homeroom_core::invite::MAX_RELAYS;
use homeroom_core::roster::RosterIndex;
use homeroom_core::{ClassId, DeviceId, FamilyId, MemberId};
use homeroom_relay::RelaySettings;
use homeroom_relay::admin::school::School;
use homeroom_relay::admin::{self, Inspector};
use homeroom_relay::files::CERTIFICATE_FILE;
use homeroom_transport::fingerprint_of;
use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

/// How long an admin command waits for the relay to acknowledge its changes.
const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Subcommand)]
pub(crate) enum AdminCommand {
    /// Create the school's admin identity (a device key under <data-dir>/admin/). Once.
    Init {
        /// The school's name.
        #[arg(long)]
        school: String,
        /// The admin's display name (shown as the founding member of each class).
        #[arg(long)]
        admin_name: String,
    },
    /// Found a class, add its teacher, print the teacher's invite (text and QR code) and sync
    /// it all to the running relay.
    CreateClass {
        /// The class's name, e.g. "Class 3B".
        name: String,
        /// The teacher's display name.
        #[arg(long)]
        teacher: String,
        /// Days the teacher's invite stays valid.
        #[arg(long, default_value_t = 7)]
        valid_days: u32,
        #[command(flatten)]
        relay: RelayArgs,
    },
    /// Create an invite (printed as text and QR code) and sync it to the running relay.
    Invite {
        /// The class.
        #[arg(long)]
        class: ClassId,
        /// Another device (e.g. a second phone) for this existing member.
        #[arg(long, conflicts_with_all = ["family", "co_teacher"])]
        member: Option<MemberId>,
        /// A new guardian of this family.
        #[arg(long, conflicts_with = "co_teacher")]
        family: Option<FamilyId>,
        /// With --family: the guardian also joins the parent committee.
        #[arg(long, requires = "family")]
        committee: bool,
        /// A new co-teacher (subject teacher).
        #[arg(long)]
        co_teacher: bool,
        /// Days the invite stays valid.
        #[arg(long, default_value_t = 7)]
        valid_days: u32,
        #[command(flatten)]
        relay: RelayArgs,
    },
    /// Remove a member (custody change, left the class) and sync it to the running relay.
    RemoveMember {
        /// The class.
        #[arg(long)]
        class: ClassId,
        /// The member (see list-devices).
        #[arg(long)]
        member: MemberId,
        #[command(flatten)]
        relay: RelayArgs,
    },
    /// List the relay's classes (reads the store; the relay may be running).
    ListClasses {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List enrolled devices, of one class or all (reads the store).
    ListDevices {
        /// Only this class.
        #[arg(long)]
        class: Option<ClassId>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a device (lost phone) and sync the revocation to the running relay.
    Revoke {
        /// The class.
        #[arg(long)]
        class: ClassId,
        /// The device key (see list-devices).
        #[arg(long)]
        device: DeviceId,
        #[command(flatten)]
        relay: RelayArgs,
    },
    /// Export a class: entries with every family's signature status, and contact statistics.
    Export {
        /// The class.
        #[arg(long)]
        class: ClassId,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Online backup of the data folder (store, certificate, key) into a new folder.
    Backup {
        /// The backup folder to create (must not exist or be empty).
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore a backup folder into a fresh data folder (--data-dir); the relay must be stopped.
    Restore {
        /// The backup folder (made by `admin backup`).
        #[arg(long)]
        from: PathBuf,
    },
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// One JSON document.
    Json,
    /// CSV: one row per entry and family, then one row per family's contact statistics.
    Csv,
}

/// Where the admin device reaches the relay.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RelayArgs {
    /// The relay's address as devices reach it (also written into invites) [default: the
    /// listen address, with 0.0.0.0 replaced by 127.0.0.1]. Repeat it for every address phones
    /// may use (e.g. the LAN address and the public one, at most 4): invites list them all in
    /// this order and a phone tries the next when one does not connect; this command connects
    /// to the first.
    #[arg(long = "relay", value_name = "ADDR")]
    relays: Vec<SocketAddr>,
}

pub(crate) fn run(cmd: AdminCommand, settings: &RelaySettings) -> anyhow::Result<()> {
    let data_dir = &settings.data_dir;
    match cmd {
        AdminCommand::Init { school, admin_name } => {
            let s = School::init(data_dir, &school, &admin_name)?;
            println!(
                "school {:?} created; admin device {} in {}",
                s.info().school,
                s.device().device_id(),
                s.dir().display()
            );
            println!(
                "its key is what your classes trust: `admin backup` includes it; keep backups"
            );
        }
        AdminCommand::CreateClass {
            name,
            teacher,
            valid_days,
            relay,
        } => {
            let school = School::open(data_dir)?;
            let target = relay_target(settings, &relay)?;
            warn_if_loopback(&target);
            let (class, member) = school.create_class(&name, &teacher)?;
            let invite = with_relay(&school, target, None, |s| {
                Ok(s.device().create_invite_with_relays(
                    class,
                    InviteRole::AnotherDevice { member },
                    days(valid_days),
                    &relay.relays,
                )?)
            })?;
            println!("class {name:?} created: {class}");
            println!("teacher {teacher:?}: member {member}");
            print_invite(&format!("{teacher}'s invite"), &invite)?;
        }
        AdminCommand::Invite {
            class,
            member,
            family,
            committee,
            co_teacher,
            valid_days,
            relay,
        } => {
            let role = match (member, family, co_teacher) {
                (Some(member), None, false) => InviteRole::AnotherDevice { member },
                (None, Some(family), false) if committee => InviteRole::Committee { family },
                (None, Some(family), false) => InviteRole::Guardian { family },
                (None, None, true) => InviteRole::CoTeacher,
                _ => bail!("say who the invite is for: --member, --family or --co-teacher"),
            };
            let school = School::open(data_dir)?;
            let target = relay_target(settings, &relay)?;
            warn_if_loopback(&target);
            let known = move |r: &RosterIndex| match role {
                InviteRole::AnotherDevice { member } => r.members.contains_key(&member),
                InviteRole::Guardian { family } | InviteRole::Committee { family } => {
                    r.families.contains_key(&family)
                }
                _ => true,
            };
            let invite = with_relay(&school, target, Some((class, &known)), |s| {
                Ok(s.device().create_invite_with_relays(
                    class,
                    role,
                    days(valid_days),
                    &relay.relays,
                )?)
            })?;
            print_invite("invite", &invite)?;
        }
        AdminCommand::RemoveMember {
            class,
            member,
            relay,
        } => {
            let school = School::open(data_dir)?;
            let target = relay_target(settings, &relay)?;
            let known = |r: &RosterIndex| r.members.contains_key(&member);
            with_relay(&school, target, Some((class, &known)), |s| {
                Ok(s.remove_member(class, member)?)
            })?;
            println!("member {member} removed from class {class}");
        }
        AdminCommand::ListClasses { json } => {
            let classes = Inspector::open(data_dir)?.classes();
            if json {
                println!("{}", serde_json::to_string_pretty(&classes)?);
            } else {
                println!(
                    "{:<34} {:>7} {:>8} {:>7} {:>8}  name",
                    "class", "members", "families", "devices", "archived"
                );
                for c in classes {
                    println!(
                        "{:<34} {:>7} {:>8} {:>7} {:>8}  {}",
                        c.id, c.members, c.families, c.devices, c.archived, c.name
                    );
                }
            }
        }
        AdminCommand::ListDevices { class, json } => {
            let devices = Inspector::open(data_dir)?.devices(class)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&devices)?);
            } else {
                println!(
                    "{:<64} {:<8} {:<16} {:<20} roles / family",
                    "device", "state", "member id", "member"
                );
                for d in devices {
                    let state = if d.revoked_at.is_some() {
                        "revoked"
                    } else if d.member_removed_at.is_some() {
                        "removed"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<64} {:<8} {:<16} {:<20} {}{}",
                        d.device,
                        state,
                        d.member,
                        d.name,
                        d.roles.join(","),
                        d.family.map(|f| format!(" / {f}")).unwrap_or_default()
                    );
                }
            }
        }
        AdminCommand::Revoke {
            class,
            device,
            relay,
        } => {
            let school = School::open(data_dir)?;
            let target = relay_target(settings, &relay)?;
            let known = |r: &RosterIndex| r.devices.contains_key(&device);
            with_relay(&school, target, Some((class, &known)), |s| {
                Ok(s.revoke_device(class, device)?)
            })?;
            println!("device {device} revoked in class {class}");
        }
        AdminCommand::Export { class, format, out } => {
            let export = Inspector::open(data_dir)?.export(class, now_ms())?;
            let text = match format {
                Format::Json => export.to_json()?,
                Format::Csv => export.to_csv(),
            };
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "exported {} entries and {} families to {}",
                        export.entries.len(),
                        export.families.len(),
                        path.display()
                    );
                }
                None => {
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(text.as_bytes())?;
                    stdout.flush()?;
                }
            }
        }
        AdminCommand::Backup { to } => {
            let s = admin::backup(data_dir, &to)?;
            println!(
                "backup written to {}: {} documents, {} bytes{}",
                to.display(),
                s.documents,
                s.bytes,
                if s.certificate {
                    ", certificate and key included"
                } else {
                    " (no certificate found: devices will need new invites after a restore)"
                }
            );
        }
        AdminCommand::Restore { from } => {
            let s = admin::restore(&from, data_dir)?;
            println!(
                "restored {} documents ({} bytes) into {}; start the relay on it",
                s.documents,
                s.bytes,
                data_dir.display()
            );
        }
    }
    Ok(())
}

/// The relay as the admin device reaches it: `--relay` or the listen address, and the
/// fingerprint of the kept certificate.
fn relay_target(settings: &RelaySettings, args: &RelayArgs) -> anyhow::Result<RelayTarget> {
    if args.relays.len() > MAX_RELAYS {
        bail!("at most {MAX_RELAYS} --relay addresses fit in an invite");
    }
    let addr = match args.relays.first() {
        Some(a) => *a,
        None => {
            let mut a = settings.listen;
            if a.ip().is_unspecified() {
                a.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
            }
            if a.port() == 0 {
                bail!("the listen port is 0 (any): pass the relay's address with --relay");
            }
            a
        }
    };
    Ok(RelayTarget {
        addr,
        fingerprint: read_fingerprint(&settings.data_dir)?,
    })
}

/// Invites carry the relay address: say so when phones could not reach it.
fn warn_if_loopback(target: &RelayTarget) {
    if target.addr.ip().is_loopback() {
        eprintln!(
            "warning: the invite points at {} (this machine only): phones cannot reach it; pass \
             the address phones use with --relay",
            target.addr
        );
    }
}

fn read_fingerprint(data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    let path = data_dir.join(CERTIFICATE_FILE);
    let der = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the relay certificate {}: start the relay once on this data folder",
            path.display()
        )
    })?;
    Ok(fingerprint_of(&der))
}

/// What must hold in a class's roster before an admin command acts on it.
type Ready<'a> = dyn Fn(&RosterIndex) -> bool + 'a;

/// Connect the admin device to the relay; when `ready` is given, wait until the class's
/// roster as received from the relay satisfies it (what `f` acts on must be known here);
/// run `f`, and wait until the relay acknowledged every change (`f`'s and any left from an
/// earlier command).
fn with_relay<T>(
    school: &School,
    target: RelayTarget,
    ready: Option<(ClassId, &Ready<'_>)>,
    f: impl FnOnce(&School) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        school.connect(target)?;
        if let Some((class, ready)) = ready {
            let start = std::time::Instant::now();
            while !school.device().roster(class).is_ok_and(|r| ready(&r)) {
                if start.elapsed() > SYNC_TIMEOUT {
                    school.device().stop_sync().await;
                    bail!(
                        "class {class} as synced from the relay within {SYNC_TIMEOUT:?} does \
                         not hold what was named (check the ids with list-devices, and that \
                         the relay runs at the --relay address)"
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let out = f(school);
        let synced = school.finish(SYNC_TIMEOUT).await;
        let out = out?;
        synced?;
        Ok(out)
    })
}

fn days(n: u32) -> Duration {
    Duration::from_secs(u64::from(n.max(1)) * 86_400)
}

/// Print an invite: the code, its short code, when it expires, and a QR code of the code for
/// a phone's camera.
fn print_invite(title: &str, invite: &Invite) -> anyhow::Result<()> {
    let qr = QrCode::with_error_correction_level(invite.qr_payload.as_bytes(), EcLevel::M)
        .context("cannot encode the invite as a QR code")?;
    // Light modules drawn as blocks: reads on dark terminals; the quiet zone is included.
    let image = qr
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    println!("{title} (expires {} UTC):", utc_date(invite.expires_at));
    println!("invite code: {}", invite.code);
    println!(
        "short code:  {}  (to type on a phone that already syncs with this relay)",
        invite.short_code
    );
    println!("{image}");
    Ok(())
}

/// `YYYY-MM-DD HH:MM` (UTC) of `ms` since the Unix epoch.
fn utc_date(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::utc_date;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00");
        assert_eq!(utc_date(1_764_045_000_000), "2025-11-25 04:30");
        assert_eq!(utc_date(951_782_400_000), "2000-02-29 00:00");
    }
}
