//! LAN peer-to-peer sync between device *processes* on loopback (docs/lan.md): with no relay at
//! all, then one device reaching the relay later; a forged entry refused by the other phone;
//! a parent's phone holding only what that parent may read; and a real mDNS discovery test
//! where the machine can do multicast.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod lan_support;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::Result;
use homeroom_core::{ClassId, DocKind, FamilyId};
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
    // Parent 1's phone checks the refusal against its own roster, agrees, and drops it.
    p1.wait(&raw, T, |r| r == "absent")?;
    for d in [&mut teacher, &mut p2] {
        assert_eq!(d.cmd(&raw)?, "absent", "{} holds the forged entry", d.name);
        let titles = d.cmd(&format!("titles {class}"))?;
        assert!(has(&titles, "Tuesday-homework"), "{}: {titles}", d.name);
    }
    assert!(!has(&p2.cmd(&format!("replies {class}"))?, "ana-private"));

    // Later the teacher's phone reaches the relay and forwards what it holds, parent 1's lane
    // included; the parents' phones stop LAN sync and reach the relay too.
    let relay = RelayProcess::start(&dir.path().join("relay"), "127.0.0.1:0")?;
    for d in [&mut teacher, &mut p1, &mut p2] {
        d.cmd("lan_stop")?;
    }
    let fp = hex::encode(relay.fingerprint);
    teacher.cmd(&format!("relay {} {fp}", relay.addr))?;
    teacher.wait("status", T, |s| {
        s.contains("connected=true") && s.contains("pending=0")
    })?;
    for p in [&mut p1, &mut p2] {
        p.cmd(&format!("relay {} {fp}", relay.addr))?;
        p.wait("status", T, |s| s.contains("connected=true"))?;
    }
    // Everybody converges; the forged entry is nowhere.
    p1.wait(&raw, T, |r| r == "absent")?;
    let expected = teacher.cmd(&format!("titles {class}"))?;
    assert_eq!(expected, "Tuesday-homework");
    for p in [&mut p1, &mut p2] {
        p.wait(&format!("titles {class}"), T, |t| t == expected)?;
    }
    // Parent 1's reply is on the relay's disk now (forwarded by the teacher's phone): the
    // relay's catalog tells parent 1 so.
    p1.wait(&format!("delivery {reply}"), T, |s| s == "Delivered")?;
    p1.wait("status", T, |s| s.contains("pending=0"))?;

    // Parent 2's phone never held parent 1's lane (nor its own family's, which is empty).
    p2.quit()?;
    let store = homeroom_store::Store::open(&dir.path().join("parent2/device.sqlite3"))?;
    let class_id: ClassId = class.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let f1: FamilyId = f1.parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
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
    Ok(())
}

/// Whether multicast works here: a datagram sent to an administratively scoped group on this
/// host comes back to a socket that joined it.
fn multicast_works() -> std::result::Result<(), String> {
    let group = Ipv4Addr::new(239, 255, 71, 71);
    let rx = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| format!("bind: {e}"))?;
    rx.join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)
        .map_err(|e| format!("join {group}: {e}"))?;
    rx.set_read_timeout(Some(Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let port = rx.local_addr().map_err(|e| e.to_string())?.port();
    let tx = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| format!("bind: {e}"))?;
    tx.set_multicast_loop_v4(true).map_err(|e| e.to_string())?;
    for _ in 0..3 {
        tx.send_to(b"homeroom-probe", SocketAddr::from((group, port)))
            .map_err(|e| format!("send to {group}: {e}"))?;
        let mut buf = [0u8; 32];
        if let Ok((n, _)) = rx.recv_from(&mut buf)
            && &buf[..n] == b"homeroom-probe"
        {
            return Ok(());
        }
    }
    Err(format!(
        "a datagram sent to {group} never came back (no multicast route)"
    ))
}

#[test]
fn real_mdns_discovery_between_processes() -> Result<()> {
    if let Err(reason) = multicast_works() {
        println!("SKIPPED real_mdns_discovery_between_processes: multicast unavailable: {reason}");
        return Ok(());
    }
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
    teacher.quit()?;
    p1.quit()?;
    p2.quit()?;
    Ok(())
}
