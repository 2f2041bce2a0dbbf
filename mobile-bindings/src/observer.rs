//! The app's callback interface, and the thread that calls it.
//!
//! The device reports events while it holds its own lock; calling foreign code there would
//! deadlock an app that reads the notebook from its callback. So the device's observer only
//! queues the event, and a dedicated thread ("homeroom-observer") calls the app — never the
//! network runtime, and never under the device lock.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use homeroom_client::{Device, DeviceEvent, DeviceObserver};
use homeroom_core::ClassId;
use homeroom_core::ItemId;

use crate::activities::{BookingInfo, BookingState, family_bookings_of};

/// Receives what happens on this device. Called on a background thread: return quickly and
/// hop to the UI thread yourself.
#[uniffi::export(callback_interface)]
pub trait Observer: Send + Sync {
    /// A class's content changed (edits arrived from the relay, or the roster changed).
    fn class_changed(&self, class_id: String);
    /// `count` local changes of the class were acknowledged by the relay.
    fn delivered(&self, class_id: String, count: u32);
    /// A booking request of this device's family was decided (or its status changed).
    fn booking_decided(&self, class_id: String, booking: BookingInfo);
    /// The relay refused local changes; they were removed from this device.
    fn change_rejected(&self, class_id: String, reason: String);
    /// The connection to the relay came up or went down.
    fn connection_changed(&self, connected: bool);
    /// A join with an invite completed: the class is on this device.
    fn joined(&self, class_id: String);
    /// A join with an invite failed (`reason` for the user).
    fn join_failed(&self, class_id: String, reason: String);
    /// This device was revoked, or its member removed from the class.
    fn removed(&self, class_id: String);
    /// The relay knows no invite for a short code this device joined with (a typo that
    /// still passed the check character, or the inviting phone has not synced it yet);
    /// `invite_id` is what `join_with_short_code` returned.
    fn invite_not_found(&self, invite_id: String);
}

/// What the dispatcher thread receives.
pub(crate) enum Dispatch {
    /// A device event.
    Event(DeviceEvent),
    /// The [`crate::Homeroom`] was dropped.
    Stop,
}

/// The device-side observer: only queues.
pub(crate) struct Forwarder(pub(crate) Mutex<mpsc::Sender<Dispatch>>);

impl DeviceObserver for Forwarder {
    fn on_event(&self, event: DeviceEvent) {
        let tx = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = tx.send(Dispatch::Event(event));
    }
}

/// The app's observer, replaceable at any time.
pub(crate) type ObserverSlot = Arc<Mutex<Option<Arc<dyn Observer>>>>;

/// Booking statuses last seen, per class, to report changes once.
type Seen = HashMap<ClassId, HashMap<ItemId, BookingState>>;

/// Current booking statuses of this device's family in `class` (empty when not a guardian).
fn booking_states(device: &Device, class: ClassId) -> Vec<BookingInfo> {
    match family_bookings_of(device, class) {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(%class, error = %e, "no bookings to compare");
            Vec::new()
        }
    }
}

/// Seed what has been seen with the bookings on disk at open time.
pub(crate) fn seed(device: &Device) -> Seen {
    let mut seen = Seen::new();
    for c in device.classes() {
        let states = booking_states(device, c.id);
        let map = seen.entry(c.id).or_default();
        for b in states {
            if let Ok(id) = b.request_id.parse::<ItemId>() {
                map.insert(id, b.state);
            }
        }
    }
    seen
}

/// Call the app; a failing callback (an exception in the app's code surfaces as a panic here)
/// is logged and does not stop later notifications.
fn call(what: &str, f: impl FnOnce()) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err() {
        tracing::warn!(callback = what, "the app's observer callback failed");
    }
}

/// Run the dispatcher until [`Dispatch::Stop`] (on its own thread).
pub(crate) fn run(
    device: Device,
    slot: ObserverSlot,
    rx: mpsc::Receiver<Dispatch>,
    mut seen: Seen,
) {
    while let Ok(Dispatch::Event(event)) = rx.recv() {
        let observer = slot.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match event {
            DeviceEvent::ClassChanged(class) => {
                let mut decided = Vec::new();
                let map = seen.entry(class).or_default();
                for b in booking_states(&device, class) {
                    let Ok(id) = b.request_id.parse::<ItemId>() else {
                        continue;
                    };
                    let before = map.insert(id, b.state.clone());
                    let changed = before.as_ref() != Some(&b.state);
                    if changed && b.state != BookingState::Pending {
                        decided.push(b);
                    }
                }
                if let Some(o) = observer {
                    call("class_changed", || o.class_changed(class.to_hex()));
                    for b in decided {
                        call("booking_decided", || o.booking_decided(class.to_hex(), b));
                    }
                }
            }
            DeviceEvent::Delivered { class, count } => {
                if let Some(o) = observer {
                    let n = u32::try_from(count).unwrap_or(u32::MAX);
                    call("delivered", || o.delivered(class.to_hex(), n));
                }
            }
            DeviceEvent::Rejected { class, reason } => {
                if let Some(o) = observer {
                    call("change_rejected", || {
                        o.change_rejected(class.to_hex(), reason)
                    });
                }
            }
            DeviceEvent::Connection { connected } => {
                if let Some(o) = observer {
                    call("connection_changed", || o.connection_changed(connected));
                }
            }
            DeviceEvent::Joined { class } => {
                if let Some(o) = observer {
                    call("joined", || o.joined(class.to_hex()));
                }
            }
            DeviceEvent::JoinFailed { class, reason } => {
                if let Some(o) = observer {
                    let r = crate::types::join_failure(&reason);
                    call("join_failed", || o.join_failed(class.to_hex(), r));
                }
            }
            DeviceEvent::Removed { class } => {
                if let Some(o) = observer {
                    call("removed", || o.removed(class.to_hex()));
                }
            }
            DeviceEvent::InviteNotFound { invite } => {
                if let Some(o) = observer {
                    call("invite_not_found", || o.invite_not_found(invite.to_hex()));
                }
            }
            // The class of a short code is known: `joined` or `join_failed` follows.
            DeviceEvent::InviteFound { .. } => {}
            // Events added to the client later are not forwarded yet.
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}
