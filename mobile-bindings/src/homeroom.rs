//! The [`Homeroom`] object: one device, its runtime thread and its observer thread.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Waker};
use std::time::Duration;

use homeroom_client::{Device, InviteRole, LanOptions, RelayTarget, StaticDiscovery};
use homeroom_core::{ClassId, FamilyId, MemberId};

use crate::classroom::Classroom;
use crate::error::ApiError;
use crate::ids::{parse, parse_opt};
use crate::observer::{self, Dispatch, Forwarder, Observer, ObserverSlot};
use crate::types::{ClassInfo, InviteCodes, LanAdvert, Role, SyncStatus};

/// How long an invite stays valid.
const INVITE_VALID_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// A Homeroom device: its key and store in a data folder, its classes, and sync with a relay.
///
/// Every method returns quickly: writes return once on this device's disk; network I/O runs
/// on the object's own runtime thread ("homeroom-net").
#[derive(uniffi::Object)]
pub struct Homeroom {
    device: Device,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    observer: ObserverSlot,
    dispatch: Mutex<mpsc::Sender<Dispatch>>,
    /// The peer list of LAN sync started with [`Homeroom::start_lan_sync_manual`] (peers are
    /// added by [`Homeroom::add_lan_peer`]); `None` when LAN sync is stopped or uses mDNS.
    lan_manual: Mutex<Option<Arc<StaticDiscovery>>>,
}

impl std::fmt::Debug for Homeroom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Homeroom")
            .field("device", &self.device)
            .finish()
    }
}

#[uniffi::export]
impl Homeroom {
    /// Open (or create) the device in `data_dir`: its store, key and classes.
    #[uniffi::constructor]
    pub fn open(data_dir: String) -> Result<Arc<Self>, ApiError> {
        if data_dir.trim().is_empty() {
            return Err(ApiError::invalid("data_dir", "must not be empty"));
        }
        let device = Device::open(&PathBuf::from(&data_dir))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("homeroom-net")
            .enable_all()
            .build()
            .map_err(|e| ApiError::Internal {
                detail: format!("starting the network runtime: {e}"),
            })?;
        let handle = runtime.handle().clone();
        let slot: ObserverSlot = Arc::new(Mutex::new(None));
        let (tx, rx) = mpsc::channel();
        let seen = observer::seed(&device);
        device.set_observer(Arc::new(Forwarder(Mutex::new(tx.clone()))));
        let (d, s) = (device.clone(), slot.clone());
        std::thread::Builder::new()
            .name("homeroom-observer".into())
            .spawn(move || observer::run(d, s, rx, seen))
            .map_err(|e| ApiError::Internal {
                detail: format!("starting the observer thread: {e}"),
            })?;
        Ok(Arc::new(Homeroom {
            device,
            runtime: Mutex::new(Some(runtime)),
            handle,
            observer: slot,
            dispatch: Mutex::new(tx),
            lan_manual: Mutex::new(None),
        }))
    }

    /// This device's id (its public key, hex): what a teacher enrolls.
    pub fn device_id(&self) -> String {
        self.device.device_id().to_hex()
    }

    /// Found a class with this device as head teacher; returns the class id.
    pub fn create_class(
        &self,
        name: String,
        teacher_display_name: String,
    ) -> Result<String, ApiError> {
        Ok(self
            .device
            .create_class(&name, &teacher_display_name)?
            .to_hex())
    }

    /// The classes on this device.
    pub fn classes(&self) -> Vec<ClassInfo> {
        self.device
            .classes()
            .into_iter()
            .map(ClassInfo::from)
            .collect()
    }

    /// Staff: invite someone to a class; returns the invite code (text, and what a QR code
    /// carries). `role` `Guardian` or `Committee` needs `family_id`; `SubjectTeacher`
    /// invites a co-teacher. Valid for seven days. The code names the relay this device syncs
    /// with, so start sync once before inviting. [`Homeroom::create_invite_codes`] also gives
    /// the short code of the same invite.
    pub fn create_invite(
        &self,
        class_id: String,
        role: Role,
        family_id: Option<String>,
    ) -> Result<String, ApiError> {
        Ok(self.invite(class_id, role, family_id)?.code)
    }

    /// Staff: [`Homeroom::create_invite`], returning both forms of the one invite: the long
    /// code (the QR payload; names the class and the relay) and the short code a parent can
    /// type (`XXXX-XXXX-XXXX`; works on a phone that already knows the school's relay).
    pub fn create_invite_codes(
        &self,
        class_id: String,
        role: Role,
        family_id: Option<String>,
    ) -> Result<InviteCodes, ApiError> {
        let invite = self.invite(class_id, role, family_id)?;
        Ok(InviteCodes {
            code: invite.code,
            short_code: invite.short_code,
            expires_at_ms: invite.expires_at,
        })
    }

    /// Staff: invite another device (a second phone) of an existing member; returns the code.
    pub fn create_device_invite(
        &self,
        class_id: String,
        member_id: String,
    ) -> Result<String, ApiError> {
        let class: ClassId = parse("class_id", &class_id)?;
        let member: MemberId = parse("member_id", &member_id)?;
        let role = InviteRole::AnotherDevice { member };
        Ok(self
            .device
            .create_invite(class, role, INVITE_VALID_FOR)?
            .code)
    }

    /// Join a class with an invite code as `display_name`; returns the class id at once.
    /// The code is checked here (a typo or an expired code is `InvalidInput { field:
    /// "invite_code" }`); the relay completes the join in the background, reported by the
    /// observer (`joined` / `join_failed`) and in `classes()`. If sync is not running, it is
    /// started with the relay named in the code.
    pub fn join(&self, invite_code: String, display_name: String) -> Result<String, ApiError> {
        let class = self.device.join(invite_code.trim(), &display_name)?;
        self.sync_with_known_relay()?;
        Ok(class.to_hex())
    }

    /// Join with a short code (`XXXX-XXXX-XXXX`, typed by the user) as `display_name`,
    /// through the relay this device already syncs with. Returns the invite's id at once; the
    /// relay names the class in the background: the observer hears `joined(class_id)` (or
    /// `join_failed`), or `invite_not_found(invite_id)` when the relay knows no such invite
    /// for a minute. A mistyped code is `InvalidInput { field: "short_code" }`; a device that
    /// knows no relay yet gets `InvalidState` (scan the QR code instead, or use
    /// [`Homeroom::join_with_short_code_via`]).
    pub fn join_with_short_code(
        &self,
        short_code: String,
        display_name: String,
    ) -> Result<String, ApiError> {
        let invite = self
            .device
            .join_with_short_code(&short_code, &display_name)
            .map_err(short_code_error)?;
        self.sync_with_known_relay()?;
        Ok(invite.to_hex())
    }

    /// [`Homeroom::join_with_short_code`] through the relay at `relay_address` with
    /// certificate `cert_fingerprint` (what the school hands out once), which becomes this
    /// device's relay if it has none; sync is started if it is not running.
    pub fn join_with_short_code_via(
        &self,
        short_code: String,
        display_name: String,
        relay_address: String,
        cert_fingerprint: String,
    ) -> Result<String, ApiError> {
        let target = relay_target(&relay_address, &cert_fingerprint)?;
        let invite = self
            .device
            .join_with_short_code_via(&short_code, &display_name, &target)
            .map_err(short_code_error)?;
        self.sync_with_known_relay()?;
        Ok(invite.to_hex())
    }

    /// A class on this device, to act on.
    pub fn classroom(&self, class_id: String) -> Result<Arc<Classroom>, ApiError> {
        let class: ClassId = parse("class_id", &class_id)?;
        self.device.roster(class)?;
        Ok(Arc::new(Classroom::new(self.device.clone(), class)))
    }

    /// Start syncing with the relay at `relay_address` ("host:port", UDP) whose certificate
    /// has the SHA-256 `cert_fingerprint` (64 hex digits), over QUIC with a TLS/TCP fallback on
    /// the same port. Returns at once; connecting and reconnecting happen in the background.
    pub fn start_sync(
        &self,
        relay_address: String,
        cert_fingerprint: String,
    ) -> Result<(), ApiError> {
        self.sync_with(relay_target(&relay_address, &cert_fingerprint)?)?;
        Ok(())
    }

    /// Stop syncing. Unsent changes stay on this device and go out on the next start.
    /// Returns at once: sync is marked stopped here (so `start_sync` may follow right away)
    /// and the connection winds down in the background.
    pub fn stop_sync(&self) {
        let device = self.device.clone();
        let stop = Box::pin(async move { device.stop_sync().await });
        self.poll_once_then_spawn(stop);
    }

    /// Start syncing directly with devices on the same network (a school Wi-Fi or a phone
    /// hotspot; no relay, no internet), found by mDNS. Returns at once with what this device
    /// announces; sessions run in the background and the connected devices are listed in
    /// `sync_status().lan_peers`. Only what both devices may read travels, and every change is
    /// checked here against this device's rosters. Nothing becomes `Delivered` over the LAN:
    /// only the relay's acknowledgement does that. Runs alongside relay sync.
    /// `InvalidState` if LAN sync is already running; `Network` if the UDP port or mDNS cannot
    /// start.
    pub fn start_lan_sync(&self) -> Result<LanAdvert, ApiError> {
        self.start_lan(LanOptions::default(), None)
    }

    /// Like `start_lan_sync`, without multicast (for networks that filter mDNS, and for
    /// tests): listen on `bind_address` ("ip:port"; port 0 picks a free one) and connect only
    /// to the peers reported with `add_lan_peer`. Give the returned port to the other device.
    pub fn start_lan_sync_manual(&self, bind_address: String) -> Result<LanAdvert, ApiError> {
        let bind: SocketAddr = bind_address.trim().parse().map_err(|_| {
            ApiError::invalid(
                "bind_address",
                format!("{bind_address:?} is not an ip:port address"),
            )
        })?;
        let discovery = Arc::new(StaticDiscovery::new(Vec::new()));
        let mut options = LanOptions::with_discovery(discovery.clone());
        options.bind = bind;
        self.start_lan(options, Some(discovery))
    }

    /// Report a peer to LAN sync started with `start_lan_sync_manual`: the other device's
    /// advertised `instance` and its `address` ("ip:port", the port from its advert).
    /// `InvalidState` unless LAN sync runs in manual mode.
    pub fn add_lan_peer(&self, instance: String, address: String) -> Result<(), ApiError> {
        let instance = instance.trim();
        if instance.is_empty() {
            return Err(ApiError::invalid("instance", "must not be empty"));
        }
        let addr: SocketAddr = address.trim().parse().map_err(|_| {
            ApiError::invalid("address", format!("{address:?} is not an ip:port address"))
        })?;
        let manual = self
            .lan_manual
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match manual {
            Some(discovery) if self.device.lan_advert().is_some() => {
                discovery.add(instance, addr);
                Ok(())
            }
            _ => Err(ApiError::InvalidState {
                reason: "LAN sync is not running in manual mode (start_lan_sync_manual)".into(),
            }),
        }
    }

    /// Stop LAN sync: withdraw the announcement and close every LAN session. Returns at once
    /// (LAN sync is marked stopped here, so it may be started again right away); sessions
    /// wind down in the background.
    pub fn stop_lan_sync(&self) {
        *self.lan_manual.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let device = self.device.clone();
        let stop = Box::pin(async move { device.stop_lan_sync().await });
        self.poll_once_then_spawn(stop);
    }

    /// Connection, pending count and last delivery.
    pub fn sync_status(&self) -> SyncStatus {
        self.device.sync_status().into()
    }

    /// Receive events (replaces any earlier observer). Called on a background thread.
    pub fn set_observer(&self, observer: Box<dyn Observer>) {
        *self.observer.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::from(observer));
    }

    /// Stop receiving events.
    pub fn clear_observer(&self) {
        *self.observer.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Drop for Homeroom {
    fn drop(&mut self) {
        let tx = self.dispatch.lock().unwrap_or_else(|p| p.into_inner());
        let _ = tx.send(Dispatch::Stop);
        drop(tx);
        let rt = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rt) = rt {
            // Never block the app's thread on the network: abandon in-flight I/O.
            rt.shutdown_background();
        }
    }
}

impl Homeroom {
    /// Run a stop future's first poll here — it takes the task handle and signals the task,
    /// without waiting — and the rest (waiting for the task, closing the endpoint) on the
    /// runtime.
    fn poll_once_then_spawn(&self, mut stop: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) {
        let _guard = self.handle.enter();
        let mut cx = Context::from_waker(Waker::noop());
        if stop.as_mut().poll(&mut cx).is_pending() {
            self.handle.spawn(stop);
        }
    }

    /// Start LAN sync with `options`; `manual` is the peer list to keep for `add_lan_peer`.
    fn start_lan(
        &self,
        options: LanOptions,
        manual: Option<Arc<StaticDiscovery>>,
    ) -> Result<LanAdvert, ApiError> {
        let mut slot = self.lan_manual.lock().unwrap_or_else(|p| p.into_inner());
        let advert = self.device.start_lan_sync(&self.handle, options)?;
        *slot = manual;
        Ok(advert.into())
    }

    /// Create an invite (both code forms); see [`Homeroom::create_invite`].
    fn invite(
        &self,
        class_id: String,
        role: Role,
        family_id: Option<String>,
    ) -> Result<homeroom_client::Invite, ApiError> {
        let class: ClassId = parse("class_id", &class_id)?;
        let family: Option<FamilyId> = parse_opt("family_id", family_id.as_deref())?;
        let need_family = || {
            family
                .ok_or_else(|| ApiError::invalid("family_id", "a guardian invite names the family"))
        };
        let role = match role {
            Role::Guardian => InviteRole::Guardian {
                family: need_family()?,
            },
            Role::Committee => InviteRole::Committee {
                family: need_family()?,
            },
            Role::SubjectTeacher => InviteRole::CoTeacher,
            Role::HeadTeacher | Role::Admin => {
                return Err(ApiError::invalid(
                    "role",
                    "invite guardians, committee members or subject teachers",
                ));
            }
        };
        Ok(self.device.create_invite(class, role, INVITE_VALID_FOR)?)
    }

    /// Start sync with the relay this device knows, unless it already runs (a join needs the
    /// relay; a device that knows none waits for `start_sync`).
    fn sync_with_known_relay(&self) -> Result<(), ApiError> {
        if let Some(target) = self.device.relay_target() {
            match self.sync_with(target) {
                Ok(()) | Err(homeroom_client::ClientError::SyncState(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Sync with `target` over QUIC, falling back to TLS over TCP on the same port when QUIC
    /// does not connect within a few seconds (networks that block UDP), and back to QUIC
    /// when it can (docs/relay.md#tcp-fallback).
    fn sync_with(&self, target: RelayTarget) -> Result<(), homeroom_client::ClientError> {
        let fallback = homeroom_client::TcpFallback::new(target.addr);
        self.device.start_sync_with_fallback(
            &self.handle,
            target,
            homeroom_client::Backoff::default(),
            Some(fallback),
        )
    }
}

/// A relay's address ("ip:port") and certificate fingerprint (64 hex digits), checked.
fn relay_target(relay_address: &str, cert_fingerprint: &str) -> Result<RelayTarget, ApiError> {
    let addr: SocketAddr = relay_address.trim().parse().map_err(|_| {
        ApiError::invalid(
            "relay_address",
            format!("{relay_address:?} is not an ip:port address"),
        )
    })?;
    let mut fingerprint = [0u8; 32];
    hex::decode_to_slice(cert_fingerprint.trim(), &mut fingerprint)
        .map_err(|_| ApiError::invalid("cert_fingerprint", "expected 64 hex digits (SHA-256)"))?;
    Ok(RelayTarget { addr, fingerprint })
}

/// A short-code join's error: a bad code names the `short_code` field.
fn short_code_error(e: homeroom_client::ClientError) -> ApiError {
    match e {
        homeroom_client::ClientError::Invite(i) => ApiError::invalid("short_code", i.to_string()),
        other => other.into(),
    }
}
