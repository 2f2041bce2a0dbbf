//! LAN peer-to-peer sync between device *processes* on loopback (docs/lan.md): with no relay at
//! all, then only the teacher's phone (the classroom hub) reaching the relay and forwarding a
//! parent's replies under the parent's own signature, the parent's phone later; a forged entry
//! refused by the other phones; a parent's phone holding only what that parent may read; and
//! a real mDNS discovery test where the machine can do multicast.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lan_support;

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::Result;
use homeroom_core::identity::verify_change;
use homeroom_core::{ClassId, DeviceId, DocId, DocKind, FamilyId};
use homeroom_e2e::RelayProcess;
use lan_support::DeviceProc;

const T: Duration = Duration::from_secs(30);

fn has(list: &str, item: &str) -> bool {
    list.split('|').any(|x| x == item)
}

/// Teacher + two parents, each family enrolled with its guardian's device; the class exists
/// only on the teacher's phone. Returns (class, family 1, family 2).
fn setup_class(
    teacher: &mut DeviceProc,
    p1: &DeviceProc,
    p2: &DeviceProc,
) -> Result<(String, String, String)> {
    let class = teacher.cmd("create_class 3B")?;
    let f1 = teacher.cmd(&format!("add_family {class} Ana"))?;
    let f2 = teacher.cmd(&format!("add_family {class} Ben"))?;
    teacher.cmd(&format!("add_guardian {class} {f1} {}", p1.id))?;
    teacher.cmd(&format!("add_guardian {class} {f2} {}", p2.id))?;
    Ok((class, f1, f2))
}

/// Start LAN sync with injected discovery on each device and tell every device about every
/// other (the injected discovery: deterministic, no multicast needed).
fn start_lan(devices: &mut [&mut DeviceProc], instances: &[&str]) -> Result<()> {
    let mut ports = Vec::new();
    for (d, i) in devices.iter_mut().zip(instances) {
        ports.push(d.cmd(&format!("lan_start {i}"))?);
    }
    for (k, d) in devices.iter_mut().enumerate() {
        for (j, (i, port)) in instances.iter().zip(&ports).enumerate() {
            if j != k {
                d.cmd(&format!("lan_peer {i} 127.0.0.1:{port}"))?;
            }
        }
    }
    Ok(())
}

/// Changes authored by `author` in `doc` as the relay's store holds them (a second reader of
/// the running relay's WAL-mode SQLite file), each checked against `author`'s own signature.
fn relay_changes_signed_by(relay: &RelayProcess, doc: &DocId, author: &DeviceId) -> Result<usize> {
    let store = homeroom_store::Store::open(&relay.data_dir.join("relay.sqlite3"))?;
    let Some(loaded) = store.load_document(doc)? else {
        return Ok(0);
    };
    let mut n = 0;
    // (A change folded into a snapshot keeps its signature but not its bytes; the relay does
    // not compact documents this small.)
    for change in loaded.changes.iter().filter(|c| c.author == *author) {
        let verified = verify_change(doc, &change.bytes, &change.signature).map_err(|e| {
            anyhow::anyhow!("stored signature of {:?} does not verify: {e}", change.hash)
        })?;
        assert_eq!(&verified.author, author, "signed by its author");
        n += 1;
    }
    Ok(n)
}

#[test]
fn lan_sync_without_relay_then_relay_converges() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut teacher = DeviceProc::start("teacher", &dir.path().join("teacher"))?;
    let mut p1 = DeviceProc::start("parent1", &dir.path().join("parent1"))?;
    let mut p2 = DeviceProc::start("parent2", &dir.path().join("parent2"))?;
    let (class, f1, _f2) = setup_class(&mut teacher, &p1, &p2)?;
    let entry = teacher.cmd(&format!("post {class} Tuesday-homework"))?;

    // No relay anywhere: the parents join the class from the teacher's phone over the LAN.
    start_lan(
        &mut [&mut teacher, &mut p1, &mut p2],
        &["a-teacher", "b-parent1", "c-parent2"],
    )?;
    for p in [&mut p1, &mut p2] {
        p.wait(&format!("titles {class}"), T, |t| {
            has(t, "Tuesday-homework")
        })?;
    }
    teacher.wait("status", T, |s| s.contains("lan_peers=2"))?;

    // A private reply travels parent 1 → teacher's phone (the hub), never to parent 2.
    let reply = p1.cmd(&format!("reply {class} {entry} ana-private"))?;
    teacher.wait(&format!("replies {class}"), T, |r| has(r, "ana-private"))?;
    // The teacher's phone is not the school's server: nothing is "delivered" by a peer.
    assert_eq!(p1.cmd(&format!("delivery {reply}"))?, "SavedLocally");
    assert!(p1.cmd("status")?.contains("connected=false"));

    // Parent 1 forges a teacher entry: both other phones refuse it.
    let forged = p1.cmd(&format!("forge {class} forged-by-parent"))?;
    let raw = format!("raw_entry {class} {forged}");
    assert_eq!(p1.cmd(&raw)?, "present");
    // A later legitimate change by the same parent gets through (sync goes on), and by then
    // the forged one has been offered and refused.
    p1.cmd(&format!("reply {class} {entry} after-forge"))?;
    teacher.wait(&format!("replies {class}"), T, |r| has(r, "after-forge"))?;
    std::thread::sleep(Duration::from_secs(1));
    // Parent 1's phone drops its own change only on a peer's `Reject` that its own roster
    // agrees with (docs/lan.md): its dropping it shows the other phones refused it.
    p1.wait(&raw, T, |r| r == "absent")?;
    for d in [&mut teacher, &mut p2] {
        assert_eq!(d.cmd(&raw)?, "absent", "{} holds the forged entry", d.name);
        let titles = d.cmd(&format!("titles {class}"))?;
        assert!(has(&titles, "Tuesday-homework"), "{}: {titles}", d.name);
    }
    assert!(!has(&p2.cmd(&format!("replies {class}"))?, "ana-private"));

    // Pick-up time is over: LAN sync stops everywhere. Later ONLY the teacher's phone reaches
    // the relay; it forwards what it holds, parent 1's lane included.
    for d in [&mut teacher, &mut p1, &mut p2] {
        d.cmd("lan_stop")?;
    }
    let relay = RelayProcess::start(&dir.path().join("relay"), "127.0.0.1:0")?;
    let fp = hex::encode(relay.fingerprint);
    teacher.cmd(&format!("relay {} {fp}", relay.addr))?;
    teacher.wait("status", T, |s| {
        s.contains("connected=true") && s.contains("pending=0")
    })?;
    // The relay's disk holds parent 1's two replies, each under parent 1's own signature (the
    // teacher's phone cannot sign as parent 1; the relay verified them again on arrival).
    let class_id: ClassId = class.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let f1: FamilyId = f1.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let p1_device: DeviceId = p1.id.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let lane1 = DocId::new(class_id, DocKind::Lane(f1));
    let deadline = Instant::now() + T;
    loop {
        let n = relay_changes_signed_by(&relay, &lane1, &p1_device)?;
        if n >= 2 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the relay holds {n} of parent 1's changes to family 1's lane, expected 2"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A fresh phone of family 1 (a second guardian), enrolled by the teacher and talking only
    // to the relay, reads parent 1's replies: they verify on a device too.
    let mut fresh = DeviceProc::start("parent1-second-phone", &dir.path().join("fresh"))?;
    teacher.cmd(&format!("add_guardian {class} {f1} {}", fresh.id))?;
    teacher.wait("status", T, |s| s.contains("pending=0"))?;
    fresh.cmd(&format!("relay {} {fp}", relay.addr))?;
    fresh.wait(&format!("replies {class}"), T, |r| {
        r == "after-forge|ana-private"
    })?;
    // Parent 1's phone has not talked to the relay: its reply is still only saved there.
    assert_eq!(p1.cmd(&format!("delivery {reply}"))?, "SavedLocally");
    let status = p1.cmd("status")?;
    assert!(
        status.contains("connected=false") && !status.contains("pending=0"),
        "{status}"
    );

    // Next morning parent 1 meets the teacher's phone on the LAN again (the teacher's phone
    // still connected to the relay): sync goes on, and still nothing is "delivered" by a
    // peer, not even by one whose relay holds the reply.
    start_lan(&mut [&mut teacher, &mut p1], &["d-teacher", "e-parent1"])?;
    teacher.cmd(&format!("post {class} Wednesday-trip"))?;
    p1.wait(&format!("titles {class}"), T, |t| has(t, "Wednesday-trip"))?;
    teacher.wait("status", T, |s| s.contains("lan_peers=1"))?;
    assert_eq!(p1.cmd(&format!("delivery {reply}"))?, "SavedLocally");

    // Parent 1's phone reaches the relay itself: only now is its reply "delivered" (the
    // relay's catalog says it holds it; parent 1 had nothing left to upload).
    for d in [&mut teacher, &mut p1] {
        d.cmd("lan_stop")?;
    }
    p1.cmd(&format!("relay {} {fp}", relay.addr))?;
    p1.wait(&format!("delivery {reply}"), T, |s| s == "Delivered")?;
    p1.wait("status", T, |s| {
        s.contains("connected=true") && s.contains("pending=0")
    })?;
    // Parent 2 reaches the relay too: everybody converges; the forged entry is nowhere.
    p2.cmd(&format!("relay {} {fp}", relay.addr))?;
    p2.wait("status", T, |s| s.contains("connected=true"))?;
    let expected = teacher.cmd(&format!("titles {class}"))?;
    assert_eq!(expected, "Tuesday-homework|Wednesday-trip");
    for p in [&mut p1, &mut p2, &mut fresh] {
        p.wait(&format!("titles {class}"), T, |t| t == expected)?;
        assert_eq!(p.cmd(&raw)?, "absent", "{} holds the forged entry", p.name);
    }
    assert_eq!(teacher.cmd(&raw)?, "absent");

    // Parent 2's phone never held parent 1's lane (nor its own family's, which is empty).
    p2.quit()?;
    let store = homeroom_store::Store::open(&dir.path().join("parent2/device.sqlite3"))?;
    let docs = store.heads_of_class(&class_id)?;
    assert!(
        docs.iter().any(|(d, _)| d.kind == DocKind::Notebook),
        "parent 2 holds the notebook"
    );
    assert!(
        !docs.iter().any(|(d, _)| d.kind == DocKind::Lane(f1)),
        "parent 2 must not hold family 1's lane: {docs:?}"
    );
    teacher.quit()?;
    p1.quit()?;
    fresh.quit()?;
    Ok(())
}

/// The IPv4 group mDNS uses (RFC 6762), which `mdns-sd` joins on every interface.
const MDNS_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 251);

/// Whether multicast to the mDNS group works here, the way `mdns-sd` uses it: a socket joins
/// 224.0.0.251 on an interface, and a datagram sent out of that interface to the group comes
/// back (multicast loop). Tried on the interface the kernel routes 224.0.0.251:5353 to and on
/// loopback (`mdns-sd` uses every interface that is up, loopback included); `Ok` names the
/// first that works. Differences from `mdns-sd`, which std sockets cannot reproduce: the probe
/// uses an ephemeral port rather than 5353 (`mdns-sd` binds 5353 with `SO_REUSEADDR` /
/// `SO_REUSEPORT` so it can share it with a system responder) and picks the outgoing interface
/// by binding the sender to the interface's address (Linux routes multicast from a bound
/// source out of that address's interface) rather than with `IP_MULTICAST_IF`.
fn multicast_works() -> std::result::Result<Ipv4Addr, String> {
    let mut interfaces = Vec::new();
    if let Ok(s) = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        && s.connect((MDNS_GROUP, 5353)).is_ok()
        && let Ok(SocketAddr::V4(local)) = s.local_addr()
        && !local.ip().is_unspecified()
        && !local.ip().is_loopback()
    {
        interfaces.push(*local.ip());
    }
    interfaces.push(Ipv4Addr::LOCALHOST);
    let mut failures = Vec::new();
    for interface in interfaces {
        match multicast_loops_on(interface) {
            Ok(()) => return Ok(interface),
            Err(e) => failures.push(format!("on {interface}: {e}")),
        }
    }
    Err(failures.join("; "))
}

/// One probe of [`multicast_works`] on the interface that has address `interface`.
fn multicast_loops_on(interface: Ipv4Addr) -> std::result::Result<(), String> {
    let rx = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| format!("bind: {e}"))?;
    rx.join_multicast_v4(&MDNS_GROUP, &interface)
        .map_err(|e| format!("join {MDNS_GROUP}: {e}"))?;
    rx.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let port = rx.local_addr().map_err(|e| e.to_string())?.port();
    let tx = UdpSocket::bind((interface, 0)).map_err(|e| format!("bind sender: {e}"))?;
    tx.set_multicast_loop_v4(true).map_err(|e| e.to_string())?;
    for _ in 0..3 {
        tx.send_to(b"homeroom-probe", SocketAddr::from((MDNS_GROUP, port)))
            .map_err(|e| format!("send to {MDNS_GROUP}: {e}"))?;
        let mut buf = [0u8; 32];
        if let Ok((n, _)) = rx.recv_from(&mut buf)
            && &buf[..n] == b"homeroom-probe"
        {
            return Ok(());
        }
    }
    Err(format!(
        "a datagram sent to {MDNS_GROUP} never came back (no multicast route)"
    ))
}

/// Real mDNS between two device processes. Where multicast does not work the test passes and
/// says why on the real stderr (libtest captures `println!`/`eprintln!` of passing tests, not
/// writes to `std::io::stderr()`); `HOMEROOM_REQUIRE_MDNS=1` turns that skip into a failure
/// (for a machine known to do multicast).
#[test]
fn real_mdns_discovery_between_processes() -> Result<()> {
    let interface = match multicast_works() {
        Ok(interface) => interface,
        Err(reason) => {
            let message = format!(
                "SKIPPED real_mdns_discovery_between_processes: multicast unavailable: {reason}"
            );
            anyhow::ensure!(
                std::env::var("HOMEROOM_REQUIRE_MDNS").as_deref() != Ok("1"),
                "HOMEROOM_REQUIRE_MDNS=1 but {message}"
            );
            let _ = writeln!(std::io::stderr(), "{message}");
            return Ok(());
        }
    };
    let _ = writeln!(
        std::io::stderr(),
        "real_mdns_discovery_between_processes: multicast to {MDNS_GROUP} works on {interface}"
    );
    let dir = tempfile::tempdir()?;
    let mut teacher = DeviceProc::start("teacher", &dir.path().join("teacher"))?;
    let mut p1 = DeviceProc::start("parent1", &dir.path().join("parent1"))?;
    let p2 = DeviceProc::start("parent2", &dir.path().join("parent2"))?;
    let (class, _, _) = setup_class(&mut teacher, &p1, &p2)?;
    teacher.cmd(&format!("post {class} found-by-mdns"))?;
    // Random-looking tokens so two runs on one LAN do not meet each other's devices.
    let salt = std::process::id();
    teacher.cmd(&format!("lan_start a{salt:08x} mdns"))?;
    p1.cmd(&format!("lan_start b{salt:08x} mdns"))?;
    p1.wait(&format!("titles {class}"), Duration::from_secs(60), |t| {
        has(t, "found-by-mdns")
    })?;
    // One authenticated LAN session: parent 2's phone never started LAN sync.
    teacher.wait("status", T, |s| s.contains("lan_peers=1"))?;
    teacher.quit()?;
    p1.quit()?;
    p2.quit()?;
    Ok(())
}
