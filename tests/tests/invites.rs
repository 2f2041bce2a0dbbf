//! Invites, joining and removal end to end: a real relay process, real devices (their own
//! SQLite stores and keys), real QUIC on loopback. See docs/invites.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use homeroom_client::core::entries::{Audience, EntryKind, NewEntry, Urgency};
use homeroom_client::core::invite::{InviteCode, ShortCode};
use homeroom_client::core::roster::Role;
use homeroom_client::core::{ClassId, DocId, DocKind, FamilyId, MemberId};
use homeroom_client::{
    ClientError, Device, DeviceEvent, DeviceObserver, InviteError, InviteRole, JoinFailure,
    Membership, RelayTarget,
};
use homeroom_e2e::{RelayProcess, wait_for};

const T: Duration = Duration::from_secs(60);

fn entry<'a>(title: &'a str) -> NewEntry<'a> {
    NewEntry {
        kind: EntryKind::Announcement,
        urgency: Urgency::Green,
        audience: Audience::WholeClass,
        title,
        text: "text",
        signature_requested: false,
        consent: None,
    }
}

fn target(relay: &RelayProcess) -> RelayTarget {
    RelayTarget {
        addr: relay.addr,
        fingerprint: relay.fingerprint,
    }
}

/// Records every event a device reports.
#[derive(Default)]
struct Events(Mutex<Vec<DeviceEvent>>);

impl DeviceObserver for Events {
    fn on_event(&self, event: DeviceEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Events {
    fn has(&self, f: impl Fn(&DeviceEvent) -> bool) -> bool {
        self.0.lock().unwrap().iter().any(f)
    }
}

/// A fresh device that joins with `code` and syncs with the relay the code names.
struct Joiner {
    device: Device,
    events: Arc<Events>,
}

async fn join(
    dir: &std::path::Path,
    name: &str,
    code: &str,
    rt: &tokio::runtime::Handle,
) -> Result<Joiner> {
    let device = Device::open(&dir.join(name))?;
    let events = Arc::new(Events::default());
    device.set_observer(events.clone());
    let class = device.join(code, name)?;
    // Recorded, not yet done: the call never waits for the network.
    let listed = device.classes();
    assert!(
        listed
            .iter()
            .any(|c| c.id == class && c.membership == Membership::Joining),
        "{listed:?}"
    );
    let target = device
        .relay_target()
        .expect("the code's relay is remembered");
    device.start_sync(rt, target)?;
    Ok(Joiner { device, events })
}

async fn joined(j: &Joiner, class: ClassId) -> Result<()> {
    if let Err(e) = wait_for("Joined event", T, || {
        j.events.has(|e| *e == DeviceEvent::Joined { class })
    })
    .await
    {
        eprintln!("events: {:#?}", j.events.0.lock().unwrap());
        eprintln!("classes: {:#?}", j.device.classes());
        return Err(e);
    }
    let c = j.device.classes();
    assert!(
        c.iter()
            .any(|c| c.id == class && c.membership == Membership::Member),
        "{c:?}"
    );
    Ok(())
}

fn member_of(d: &Device, class: ClassId) -> MemberId {
    let r = d.roster(class).unwrap();
    r.member_of(&d.device_id()).unwrap().id
}

fn entries(d: &Device, class: ClassId) -> usize {
    d.notebook(class).map(|v| v.entries.len()).unwrap_or(0)
}

struct School {
    relay: RelayProcess,
    teacher: Device,
    class: ClassId,
    family: FamilyId,
}

async fn school(dir: &std::path::Path, rt: &tokio::runtime::Handle) -> Result<School> {
    let relay = RelayProcess::start(&dir.join("relay"), "127.0.0.1:0")?;
    let teacher = Device::open(&dir.join("teacher"))?;
    let class = teacher.create_class("Class 3B", "Ms Li")?;
    let family = teacher.add_family(class, "Wang")?;
    // No relay known yet: an invite cannot say where to go.
    assert!(matches!(
        teacher.create_invite(
            class,
            InviteRole::Guardian { family },
            Duration::from_secs(60)
        ),
        Err(ClientError::NoRelayKnown)
    ));
    teacher.start_sync(rt, target(&relay))?;
    teacher.post_entry(class, &entry("Welcome"))?;
    wait_for("teacher connected", T, || teacher.sync_status().connected).await?;
    Ok(School {
        relay,
        teacher,
        class,
        family,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardians_second_phones_and_typed_invite_errors() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Handle::current();
    let s = school(dir.path(), &rt).await?;
    let (teacher, class, family) = (&s.teacher, s.class, s.family);
    let hour = Duration::from_secs(3600);

    // Parent A joins by code and receives the notebook.
    let inv_a = teacher.create_invite(class, InviteRole::Guardian { family }, hour)?;
    assert_eq!(inv_a.code, inv_a.qr_payload);
    assert!(
        inv_a
            .code
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    );
    let a = join(dir.path(), "Parent A", &inv_a.code, &rt).await?;
    joined(&a, class).await?;
    wait_for("A receives the notebook", T, || {
        entries(&a.device, class) == 1
    })
    .await?;
    let member_a = member_of(&a.device, class);

    // A second guardian of the same family.
    let inv_b = teacher.create_invite(class, InviteRole::Guardian { family }, hour)?;
    let b = join(dir.path(), "Parent B", &inv_b.code, &rt).await?;
    joined(&b, class).await?;
    wait_for("B receives the notebook", T, || {
        entries(&b.device, class) == 1
    })
    .await?;

    // A's second phone, with an "another device" invite: same member, no new member.
    let inv_a2 =
        teacher.create_invite(class, InviteRole::AnotherDevice { member: member_a }, hour)?;
    let a2 = join(dir.path(), "Parent A phone 2", &inv_a2.code, &rt).await?;
    joined(&a2, class).await?;
    assert_eq!(member_of(&a2.device, class), member_a);
    wait_for("A's phone 2 receives the notebook", T, || {
        entries(&a2.device, class) == 1
    })
    .await?;
    wait_for(
        "the teacher sees both guardians and three parent devices",
        T,
        || {
            teacher.roster(class).is_ok_and(|r| {
                r.members
                    .values()
                    .filter(|m| m.is_guardian_of(&family))
                    .count()
                    == 2
                    && r.devices.len() == 4
            })
        },
    )
    .await?;
    // The new guardians can act: B replies, the teacher sees it.
    let posted = teacher.post_entry(class, &entry("Trip"))?;
    wait_for("B receives the trip", T, || entries(&b.device, class) == 2).await?;
    b.device.reply(class, posted.entry, "We will come", true)?;
    wait_for("teacher sees B's reply", T, || {
        teacher.notebook(class).is_ok_and(|v| {
            v.entries
                .iter()
                .any(|e| e.id == posted.entry && e.public_replies.len() == 1)
        })
    })
    .await?;

    // Parent A invites a third phone herself (no teacher needed)…
    let inv_a3 =
        a.device
            .create_invite(class, InviteRole::AnotherDevice { member: member_a }, hour)?;
    let a3 = join(dir.path(), "Parent A phone 3", &inv_a3.code, &rt).await?;
    joined(&a3, class).await?;
    assert_eq!(member_of(&a3.device, class), member_a);
    // …but cannot invite anyone else.
    assert!(
        a.device
            .create_invite(class, InviteRole::Guardian { family }, hour)
            .is_err()
    );
    // A co-teacher joins as staff.
    let inv_t = teacher.create_invite(class, InviteRole::CoTeacher, hour)?;
    let t2 = join(dir.path(), "Mr Chen", &inv_t.code, &rt).await?;
    joined(&t2, class).await?;
    assert!(t2.device.roster(class)?.is_staff(&t2.device.device_id()));
    wait_for("the co-teacher receives the notebook", T, || {
        entries(&t2.device, class) == 2
    })
    .await?;

    // A used invite: the code is still well-formed, the relay says "already used".
    let x = join(dir.path(), "Intruder", &inv_a.code, &rt).await?;
    wait_for("JoinFailed AlreadyUsed", T, || {
        x.events.has(|e| {
            *e == DeviceEvent::JoinFailed {
                class,
                reason: JoinFailure::AlreadyUsed,
            }
        })
    })
    .await?;
    assert!(
        x.device
            .classes()
            .iter()
            .any(|c| c.id == class
                && c.membership == Membership::JoinFailed(JoinFailure::AlreadyUsed))
    );
    assert!(x.device.roster(class).is_err() || entries(&x.device, class) == 0);

    // Expired before it is entered: an immediate typed error, nothing recorded.
    let stale = teacher.create_invite(class, InviteRole::Guardian { family }, Duration::ZERO)?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let y = Device::open(&dir.path().join("late parent"))?;
    match y.join(&stale.code, "Late") {
        Err(ClientError::Invite(InviteError::Expired { .. })) => {}
        other => bail!("expected an expired-invite error, got {other:?}"),
    }
    assert!(y.classes().is_empty());
    // Expired by the time the relay sees it: the relay's typed refusal.
    let short = teacher.create_invite(
        class,
        InviteRole::Guardian { family },
        Duration::from_secs(2),
    )?;
    let z = Device::open(&dir.path().join("slow parent"))?;
    let z_events = Arc::new(Events::default());
    z.set_observer(z_events.clone());
    z.join(&short.code, "Slow")?;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    z.start_sync(&rt, z.relay_target().unwrap())?;
    wait_for("JoinFailed Expired", T, || {
        z_events.has(|e| {
            *e == DeviceEvent::JoinFailed {
                class,
                reason: JoinFailure::Expired,
            }
        })
    })
    .await?;
    // A typo: a checksum error, not a network round trip.
    let mut typo: Vec<char> = inv_b.code.chars().collect();
    typo[30] = if typo[30] == 'A' { 'B' } else { 'A' };
    let typo: String = typo.into_iter().collect();
    assert!(matches!(
        y.join(&typo, "Typo"),
        Err(ClientError::Invite(InviteError::BadChecksum))
    ));
    for d in [
        &a.device, &b.device, &a2.device, &a3.device, &t2.device, &x.device, &z,
    ] {
        d.stop_sync().await;
    }
    teacher.stop_sync().await;
    drop(s.relay);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_disconnects_refuses_and_audits() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Handle::current();
    let mut s = school(dir.path(), &rt).await?;
    let (teacher, class, family) = (&s.teacher, s.class, s.family);
    let hour = Duration::from_secs(3600);

    let a = join(
        dir.path(),
        "Parent A",
        &teacher
            .create_invite(class, InviteRole::Guardian { family }, hour)?
            .code,
        &rt,
    )
    .await?;
    joined(&a, class).await?;
    let member_a = member_of(&a.device, class);
    let a2 = join(
        dir.path(),
        "Parent A phone 2",
        &teacher
            .create_invite(class, InviteRole::AnotherDevice { member: member_a }, hour)?
            .code,
        &rt,
    )
    .await?;
    joined(&a2, class).await?;
    let b = join(
        dir.path(),
        "Parent B",
        &teacher
            .create_invite(class, InviteRole::Guardian { family }, hour)?
            .code,
        &rt,
    )
    .await?;
    joined(&b, class).await?;
    let member_b = member_of(&b.device, class);
    let b2 = join(
        dir.path(),
        "Parent B phone 2",
        &teacher
            .create_invite(class, InviteRole::AnotherDevice { member: member_b }, hour)?
            .code,
        &rt,
    )
    .await?;
    joined(&b2, class).await?;
    let posted = teacher.post_entry(class, &entry("Trip"))?;
    for d in [&a.device, &b.device, &b2.device] {
        wait_for("everyone has the trip", T, || entries(d, class) == 2).await?;
    }

    // A lost phone: revoking it closes its open connection.
    a2.device.set_observer(a2.events.clone());
    teacher.revoke_device(class, a2.device.device_id())?;
    wait_for("the revoked phone is disconnected", T, || {
        a2.events
            .has(|e| *e == DeviceEvent::Connection { connected: false })
    })
    .await?;
    wait_for("the revoked phone learns it was removed", T, || {
        a2.events.has(|e| *e == DeviceEvent::Removed { class })
    })
    .await?;

    // Custody change: B is removed while B's phone 2 is offline with an unsent reply.
    b2.device.stop_sync().await;
    let hidden = b2
        .device
        .reply(class, posted.entry, "written while offline", false)?;
    teacher.remove_member(class, member_b)?;
    wait_for("B's open connection is closed", T, || {
        b.events
            .has(|e| *e == DeviceEvent::Connection { connected: false })
    })
    .await?;
    wait_for("B learns of the removal", T, || {
        b.events.has(|e| *e == DeviceEvent::Removed { class })
    })
    .await?;
    assert!(
        b.device
            .classes()
            .iter()
            .any(|c| c.id == class && c.membership == Membership::Removed)
    );
    // B's later edit is refused on B's own device.
    assert!(
        b.device
            .reply(class, posted.entry, "after removal", true)
            .is_err()
    );

    // B's phone 2 comes back: its offline reply is refused by the relay and kept for audit on
    // both sides; nobody else ever sees it.
    b2.device.start_sync(&rt, target(&s.relay))?;
    let lane = DocId::new(class, DocKind::Lane(family));
    if let Err(e) = wait_for("B2's refused reply is in its audit table", T, || {
        b2.device
            .rejected_changes(lane)
            .is_ok_and(|r| r.iter().any(|c| c.bytes.is_some()))
    })
    .await
    {
        for l in s.relay.log.lock().unwrap().iter() {
            eprintln!("relay: {l}");
        }
        return Err(e);
    }
    wait_for("B2 learns of the removal", T, || {
        b2.events.has(|e| *e == DeviceEvent::Removed { class })
    })
    .await?;
    let _ = hidden;

    // The other guardian keeps working.
    a.device
        .reply(class, posted.entry, "A is still here", false)?;
    wait_for("teacher sees A's reply and not B2's", T, || {
        teacher.notebook(class).is_ok_and(|v| {
            v.entries.iter().any(|e| {
                e.id == posted.entry
                    && e.private_replies.len() == 1
                    && e.private_replies
                        .iter()
                        .all(|r| r.author == a.device.device_id())
            })
        })
    })
    .await?;
    let seen_by_a = a.device.notebook(class)?;
    let trip = seen_by_a
        .entries
        .iter()
        .find(|e| e.id == posted.entry)
        .unwrap();
    assert_eq!(trip.private_replies.len(), 1, "A never sees B2's reply");

    // The relay kept B2's change in its audit table, with its bytes.
    for d in [&a.device, &a2.device, &b.device, &b2.device] {
        d.stop_sync().await;
    }
    teacher.stop_sync().await;
    s.relay.terminate()?;
    let store = homeroom_store::Store::open(&s.relay.data_dir.join("relay.sqlite3"))?;
    let audit = store.rejected(&lane)?;
    assert!(
        audit
            .iter()
            .any(|r| r.author == Some(b2.device.device_id()) && r.bytes.is_some()),
        "{audit:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_family_invited_into_next_term_never_sees_the_old_term() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Handle::current();
    let s = school(dir.path(), &rt).await?;
    let (teacher, old) = (&s.teacher, s.class);
    let new = teacher.roll_term(old, "Class 4B", None)?;
    let fam = teacher.add_family(new, "Newcomers")?;
    teacher.post_entry(new, &entry("First day"))?;
    let inv = teacher.create_invite(
        new,
        InviteRole::Guardian { family: fam },
        Duration::from_secs(3600),
    )?;
    // The parent joins at once: the join often reaches the relay before the new term's
    // roster is durable there (the race this test caught), and must still complete.
    let n = join(dir.path(), "New parent", &inv.code, &rt).await?;
    if let Err(e) = joined(&n, new).await {
        for l in s.relay.log.lock().unwrap().iter() {
            eprintln!("relay: {l}");
        }
        eprintln!(
            "teacher: {:?} invites {:?} status {:?}",
            teacher.classes(),
            teacher.roster(new).map(|r| r.invites.len()),
            teacher.sync_status()
        );
        return Err(e);
    }
    wait_for("the new family sees the new term", T, || {
        entries(&n.device, new) == 1
    })
    .await?;
    // Give the old term every chance to leak, then check it did not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(n.device.classes().iter().all(|c| c.id != old));
    assert!(matches!(
        n.device.roster(old),
        Err(ClientError::UnknownClass(_))
    ));
    assert!(n.device.notebook(old).is_err());
    n.device.stop_sync().await;
    teacher.stop_sync().await;
    Ok(())
}

/// A device that opened its store and records its events.
fn device_with_events(dir: &std::path::Path, name: &str) -> Result<Joiner> {
    let device = Device::open(&dir.join(name))?;
    let events = Arc::new(Events::default());
    device.set_observer(events.clone());
    Ok(Joiner { device, events })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_join_by_short_code_through_the_relay_they_know() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Handle::current();
    let s = school(dir.path(), &rt).await?;
    let (teacher, class, family) = (&s.teacher, s.class, s.family);
    let hour = Duration::from_secs(3600);

    // A short code that passes the check character but that no roster holds: the relay names
    // no class (asked again for a minute, in case the invite was not uploaded yet), then the
    // device says so. Started first: the rest of the test runs meanwhile.
    let unknown_code = ShortCode::from_random([0x42; 8]).encode();
    let u = device_with_events(dir.path(), "Guesser")?;
    let unknown = u
        .device
        .join_with_short_code_via(&unknown_code, "Guesser", &target(&s.relay))?;
    u.device.start_sync(&rt, target(&s.relay))?;

    // One invite, two forms: the long code (QR) and a short code to type.
    let inv = teacher.create_invite(class, InviteRole::Guardian { family }, hour)?;
    assert_eq!(inv.short_code.len(), 14, "{}", inv.short_code);
    assert!(inv.short_code.len() * 9 < inv.code.len(), "{}", inv.code);
    let dashes: Vec<usize> = inv.short_code.match_indices('-').map(|(i, _)| i).collect();
    assert_eq!(dashes, [4, 9], "{}", inv.short_code);
    assert_eq!(ShortCode::parse(&inv.short_code)?.invite_id(), inv.id);

    // A fresh phone knows no relay: the short code cannot say where to go.
    let fresh = Device::open(&dir.path().join("fresh"))?;
    assert!(matches!(
        fresh.join_with_short_code(&inv.short_code, "Mrs Wang"),
        Err(ClientError::ShortCodeNeedsRelay)
    ));
    // A typo is caught by the check character, before any network round trip.
    let mut typo: Vec<char> = inv.short_code.chars().collect();
    typo[1] = if typo[1] == '7' { '8' } else { '7' };
    let typo: String = typo.into_iter().collect();
    assert!(matches!(
        fresh.join_with_short_code_via(&typo, "Mrs Wang", &target(&s.relay)),
        Err(ClientError::Invite(InviteError::BadChecksum))
    ));
    assert!(matches!(
        fresh.join_with_short_code_via("ABCD-EFGH", "Mrs Wang", &target(&s.relay)),
        Err(ClientError::Invite(InviteError::Malformed(_)))
    ));
    assert!(fresh.classes().is_empty());

    // The parent was given the school relay's address and fingerprint (or her app already
    // syncs with it) and types the code sloppily: lowercase, spaces for dashes.
    let p = device_with_events(dir.path(), "Mrs Wang")?;
    let typed = inv.short_code.to_lowercase().replace('-', " ");
    let invite = p
        .device
        .join_with_short_code_via(&typed, "Mrs Wang", &target(&s.relay))?;
    assert_eq!(invite, inv.id);
    p.device.start_sync(&rt, p.device.relay_target().unwrap())?;
    wait_for("the relay names the class", T, || {
        p.events
            .has(|e| *e == DeviceEvent::InviteFound { invite, class })
    })
    .await?;
    joined(&p, class).await?;
    wait_for("the parent receives the notebook", T, || {
        entries(&p.device, class) == 1
    })
    .await?;
    let r = p.device.roster(class)?;
    let me = r.member_of(&p.device.device_id()).unwrap();
    assert!(me.is_guardian_of(&family));
    assert_eq!(me.name, "Mrs Wang");

    // The same parent, already syncing with the relay, joins a sibling's class by short code:
    // no relay parameter needed, the lookup goes over the running session.
    let class2 = teacher.create_class("Class 1A", "Ms Li")?;
    let family2 = teacher.add_family(class2, "Wang")?;
    let inv2 = teacher.create_invite(class2, InviteRole::Guardian { family: family2 }, hour)?;
    let invite2 = p
        .device
        .join_with_short_code(&inv2.short_code, "Mrs Wang")?;
    wait_for("the relay names the second class", T, || {
        p.events.has(|e| {
            *e == DeviceEvent::InviteFound {
                invite: invite2,
                class: class2,
            }
        })
    })
    .await?;
    joined(&p, class2).await?;

    // The used short code on another phone: the relay names the class, then refuses the join.
    let x = device_with_events(dir.path(), "Intruder")?;
    x.device
        .join_with_short_code_via(&inv.short_code, "Intruder", &target(&s.relay))?;
    x.device.start_sync(&rt, target(&s.relay))?;
    wait_for("JoinFailed AlreadyUsed", T, || {
        x.events.has(|e| {
            *e == DeviceEvent::JoinFailed {
                class,
                reason: JoinFailure::AlreadyUsed,
            }
        })
    })
    .await?;

    // An expired short code: the device cannot tell (the code carries no expiry); the relay's
    // refusal of the join says so.
    let stale = teacher.create_invite(class, InviteRole::Guardian { family }, Duration::ZERO)?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let y = device_with_events(dir.path(), "Late parent")?;
    y.device
        .join_with_short_code_via(&stale.short_code, "Late", &target(&s.relay))?;
    y.device.start_sync(&rt, target(&s.relay))?;
    wait_for("JoinFailed Expired", T, || {
        y.events.has(|e| {
            *e == DeviceEvent::JoinFailed {
                class,
                reason: JoinFailure::Expired,
            }
        })
    })
    .await?;

    // The unknown code, a minute after it was entered.
    wait_for("InviteNotFound", Duration::from_secs(120), || {
        u.events
            .has(|e| *e == DeviceEvent::InviteNotFound { invite: unknown })
    })
    .await?;
    assert!(u.device.classes().is_empty());
    assert!(
        s.relay
            .log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("invite lookup found no class")),
        "the relay logs lookups that find nothing"
    );
    for d in [&u.device, &p.device, &x.device, &y.device] {
        d.stop_sync().await;
    }
    teacher.stop_sync().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committee_invite_makes_a_committee_guardian_of_the_family() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Handle::current();
    let s = school(dir.path(), &rt).await?;
    let (teacher, class, family) = (&s.teacher, s.class, s.family);
    let role = InviteRole::Committee { family };
    let inv = teacher.create_invite(class, role, Duration::from_secs(3600))?;
    let c = join(dir.path(), "Mr Zhao", &inv.code, &rt).await?;
    joined(&c, class).await?;
    wait_for("the teacher sees the committee member", T, || {
        teacher
            .roster(class)
            .is_ok_and(|r| r.member_of(&c.device.device_id()).is_some())
    })
    .await?;
    for roster in [teacher.roster(class)?, c.device.roster(class)?] {
        let m = roster.member_of(&c.device.device_id()).unwrap();
        let roles: Vec<Role> = m.roles.iter().copied().collect();
        assert_eq!(roles, role.member_roles());
        assert_eq!(roles, [Role::Committee]);
        assert_eq!(m.family, Some(family));
        assert!(m.is_guardian_of(&family));
        assert!(!roster.is_staff(&c.device.device_id()));
        assert_eq!(m.name, "Mr Zhao");
    }
    // A committee member is a guardian too: the family's lane is readable, the notebook
    // arrives.
    wait_for("the committee member receives the notebook", T, || {
        entries(&c.device, class) == 1
    })
    .await?;
    c.device.stop_sync().await;
    teacher.stop_sync().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_falls_back_to_the_next_relay_address_of_the_code() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Handle::current();
    let s = school(dir.path(), &rt).await?;
    let (teacher, class, family) = (&s.teacher, s.class, s.family);
    let hour = Duration::from_secs(3600);
    // By default a code lists the one address the inviting device knows.
    assert_eq!(teacher.relay_addresses(), [s.relay.addr]);
    let plain = teacher.create_invite(class, InviteRole::Guardian { family }, hour)?;
    assert_eq!(InviteCode::parse(&plain.code)?.relays, [s.relay.addr]);

    // A code listing an address where nothing answers first, then the relay's real one.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let inv = teacher.create_invite_with_relays(
        class,
        InviteRole::Guardian { family },
        hour,
        &[dead, s.relay.addr],
    )?;
    assert_eq!(InviteCode::parse(&inv.code)?.relays, [dead, s.relay.addr]);
    let j = join(dir.path(), "Mrs Wang", &inv.code, &rt).await?;
    assert_eq!(j.device.relay_target().unwrap().addr, dead);
    assert_eq!(j.device.relay_addresses(), [dead, s.relay.addr]);
    // The first address times out (10 s), the second connects.
    joined(&j, class).await?;
    wait_for("the parent receives the notebook", T, || {
        entries(&j.device, class) == 1
    })
    .await?;
    // Her own invites (a second phone) pass both addresses on.
    let member = member_of(&j.device, class);
    let own = j
        .device
        .create_invite(class, InviteRole::AnotherDevice { member }, hour)?;
    assert_eq!(InviteCode::parse(&own.code)?.relays, [dead, s.relay.addr]);
    j.device.stop_sync().await;
    teacher.stop_sync().await;
    Ok(())
}
