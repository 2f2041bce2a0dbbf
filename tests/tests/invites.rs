//! Invites, joining and removal end to end: a real relay process, real devices (their own
//! SQLite stores and keys), real QUIC on loopback. See docs/invites.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use homeroom_client::core::entries::{Audience, EntryKind, NewEntry, Urgency};
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
