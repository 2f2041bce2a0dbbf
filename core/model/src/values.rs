#![allow(dead_code)] // shared helpers; some are used only by a subset of document modules
//! Typed reads and writes of Automerge values, shared by every document module.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value, ValueRef};

use crate::error::ModelError;

/// The object id of a top-level map created by the document's genesis change.
pub(crate) fn top_map(doc: &impl ReadDoc, key: &'static str) -> Result<ObjId, ModelError> {
    map_at(doc, &ROOT, key)?.ok_or(ModelError::MissingGenesis { map: key })
}

/// The map stored at `obj[key]`, if there is one.
pub(crate) fn map_at(
    doc: &impl ReadDoc,
    obj: &ObjId,
    key: &str,
) -> Result<Option<ObjId>, ModelError> {
    match doc.get(obj, key)? {
        Some((Value::Object(ObjType::Map), id)) => Ok(Some(id)),
        Some(_) => Err(ModelError::Corrupt {
            what: format!("{key} is not a map"),
        }),
        None => Ok(None),
    }
}

/// The map at `obj[key]`, creating it if absent. Only for keys that a single writer creates
/// (e.g. an item keyed by a fresh random id); never for keys that two devices may create
/// concurrently.
pub(crate) fn ensure_map(
    tx: &mut impl Transactable,
    obj: &ObjId,
    key: &str,
) -> Result<ObjId, ModelError> {
    match map_at(tx, obj, key)? {
        Some(id) => Ok(id),
        None => Ok(tx.put_object(obj, key, ObjType::Map)?),
    }
}

/// A string value at `obj[key]`.
pub(crate) fn get_str(
    doc: &impl ReadDoc,
    obj: &ObjId,
    key: &str,
) -> Result<Option<String>, ModelError> {
    match doc.get(obj, key)? {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(v) => Ok(Some(v.to_string())),
            _ => Ok(None),
        },
        Some((Value::Object(ObjType::Text), id)) => Ok(Some(doc.text(&id)?)),
        _ => Ok(None),
    }
}

/// An integer value at `obj[key]`.
pub(crate) fn get_i64(
    doc: &impl ReadDoc,
    obj: &ObjId,
    key: &str,
) -> Result<Option<i64>, ModelError> {
    match doc.get(obj, key)? {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Int(v) => Ok(Some(*v)),
            ScalarValue::Uint(v) => Ok(i64::try_from(*v).ok()),
            ScalarValue::Timestamp(v) => Ok(Some(*v)),
            ScalarValue::Counter(c) => Ok(Some(i64::from(c))),
            _ => Ok(None),
        },
        _ => Ok(None),
    }
}

/// A boolean value at `obj[key]`.
pub(crate) fn get_bool(
    doc: &impl ReadDoc,
    obj: &ObjId,
    key: &str,
) -> Result<Option<bool>, ModelError> {
    match doc.get(obj, key)? {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Boolean(v) => Ok(Some(*v)),
            _ => Ok(None),
        },
        _ => Ok(None),
    }
}

/// Every key of the map `obj`.
pub(crate) fn keys(doc: &impl ReadDoc, obj: &ObjId) -> Vec<String> {
    doc.keys(obj).collect()
}

/// The device that created object `obj` (its op id's actor), if the actor is a device. This is
/// how views check authorship: the creating op is part of a signed change, so it cannot be
/// forged by putting a name inside the content.
pub(crate) fn author_of_obj(obj: &ObjId) -> Option<crate::identity::DeviceId> {
    match obj {
        ObjId::Id(_, actor, _) => crate::identity::author_of(actor),
        ObjId::Root => None,
    }
}

/// Every map stored at `obj[key]`, including concurrent conflicting ones (Automerge's `get`
/// would show only one). Used for register keys whose value is an immutable record object
/// replaced wholesale: the domain rule, not Automerge, picks among them.
pub(crate) fn all_maps_at(
    doc: &impl ReadDoc,
    obj: &ObjId,
    key: &str,
) -> Result<Vec<ObjId>, ModelError> {
    Ok(doc
        .get_all(obj, key)?
        .into_iter()
        .filter_map(|(v, id)| matches!(v, Value::Object(ObjType::Map)).then_some(id))
        .collect())
}

/// Like [`all_maps_at`], as of the document state at `heads`.
pub(crate) fn all_maps_at_heads(
    doc: &impl ReadDoc,
    obj: &ObjId,
    key: &str,
    heads: &[automerge::ChangeHash],
) -> Result<Vec<ObjId>, ModelError> {
    Ok(doc
        .get_all_at(obj, key, heads)?
        .into_iter()
        .filter_map(|(v, id)| matches!(v, Value::Object(ObjType::Map)).then_some(id))
        .collect())
}

/// Whether `device` was, at `at_ms`, an enrolled device (not yet revoked) of a member who was
/// (not yet removed) a guardian of `family`. Time-based so that a guardian's past requests
/// survive a later custody change or lost phone; `at_ms` is the item's own stamp, which its
/// author chose, so a removed device could backdate — the sync layer refuses changes from
/// revoked devices, which bounds this to edits made offline before revocation was seen.
pub(crate) fn guardian_device_at(
    roster: &crate::roster::RosterIndex,
    device: &crate::identity::DeviceId,
    family: &crate::ids::FamilyId,
    at_ms: i64,
) -> bool {
    use crate::roster::Role;
    member_at(roster, device, at_ms).is_some_and(|m| {
        m.family.as_ref() == Some(family)
            && (m.roles.contains(&Role::Guardian) || m.roles.contains(&Role::Committee))
    })
}

/// Whether `device` was, at `at_ms`, an enrolled device of a staff member (see
/// [`guardian_device_at`] for the time rule).
pub(crate) fn staff_device_at(
    roster: &crate::roster::RosterIndex,
    device: &crate::identity::DeviceId,
    at_ms: i64,
) -> bool {
    member_at(roster, device, at_ms).is_some_and(|m| m.roles.iter().any(|r| r.is_staff()))
}

/// The member behind `device` if both the device and the member were active at `at_ms`.
fn member_at<'r>(
    roster: &'r crate::roster::RosterIndex,
    device: &crate::identity::DeviceId,
    at_ms: i64,
) -> Option<&'r crate::roster::Member> {
    let d = roster.devices.get(device)?;
    if d.revoked_at.is_some_and(|r| at_ms >= r) {
        return None;
    }
    let m = roster.members.get(&d.member)?;
    if m.removed_at.is_some_and(|r| at_ms >= r) {
        return None;
    }
    Some(m)
}

/// A borrowed field value (see [`visit_trusted_fields`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FieldRef<'a> {
    /// A string.
    Str(&'a str),
    /// An integer (signed, unsigned, counter or timestamp).
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// Raw bytes.
    Bytes(&'a [u8]),
    /// A nested object (its id is the operation id passed alongside).
    Object(ObjType),
    /// Anything else (null, floats, unknown types).
    Other,
}

impl<'a> FieldRef<'a> {
    /// The string, if the field is one.
    pub(crate) fn as_str(&self) -> Option<&'a str> {
        match self {
            FieldRef::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if the field is one.
    pub(crate) fn as_i64(&self) -> Option<i64> {
        match self {
            FieldRef::Int(v) => Some(*v),
            _ => None,
        }
    }

    /// The boolean, if the field is one.
    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self {
            FieldRef::Bool(v) => Some(*v),
            _ => None,
        }
    }

    /// Borrow a value read by `map_range` or a document iterator.
    pub(crate) fn from_value_ref(v: &'a ValueRef<'_>) -> Self {
        use automerge::ScalarValueRef as S;
        match v {
            ValueRef::Object(t) => FieldRef::Object(*t),
            ValueRef::Scalar(S::Str(s)) => FieldRef::Str(s),
            ValueRef::Scalar(S::Int(i) | S::Counter(i) | S::Timestamp(i)) => FieldRef::Int(*i),
            ValueRef::Scalar(S::Uint(u)) => {
                i64::try_from(*u).map_or(FieldRef::Other, FieldRef::Int)
            }
            ValueRef::Scalar(S::Boolean(b)) => FieldRef::Bool(*b),
            ValueRef::Scalar(S::Bytes(b)) => FieldRef::Bytes(b),
            ValueRef::Scalar(_) => FieldRef::Other,
        }
    }

    /// Borrow a value read by `get` or `get_all`.
    pub(crate) fn from_value(v: &'a Value<'_>) -> Self {
        match v {
            Value::Object(t) => FieldRef::Object(*t),
            Value::Scalar(s) => match s.as_ref() {
                ScalarValue::Str(s) => FieldRef::Str(s),
                ScalarValue::Int(i) | ScalarValue::Timestamp(i) => FieldRef::Int(*i),
                ScalarValue::Counter(c) => FieldRef::Int(i64::from(c)),
                ScalarValue::Uint(u) => i64::try_from(*u).map_or(FieldRef::Other, FieldRef::Int),
                ScalarValue::Boolean(b) => FieldRef::Bool(*b),
                ScalarValue::Bytes(b) => FieldRef::Bytes(b),
                _ => FieldRef::Other,
            },
        }
    }
}

/// Visit the fields of the map `obj`, each with a value written by an operation that `trusted`
/// accepts (it is given the operation's id, whose actor names the writing device; `visit` gets
/// the key, the value and that id). When the visible value of a key was written by someone
/// untrusted and the key holds concurrent values, the newest trusted one among them is visited;
/// keys with no trusted value are skipped. One pass over the map, no copies of values;
/// `get_all` only for conflicted keys.
pub(crate) fn visit_trusted_fields(
    doc: &impl ReadDoc,
    obj: &ObjId,
    mut trusted: impl FnMut(&ObjId) -> bool,
    mut visit: impl FnMut(&str, FieldRef<'_>, &ObjId),
) -> Result<(), ModelError> {
    let mut conflicted = Vec::new();
    for item in doc.map_range(obj, ..) {
        let id = item.id();
        if trusted(&id) {
            visit(&item.key, FieldRef::from_value_ref(&item.value), &id);
        } else if item.conflict {
            conflicted.push(item.key.into_owned());
        }
    }
    for key in conflicted {
        let all = doc.get_all(obj, key.as_str())?;
        if let Some((value, id)) = all.iter().rev().find(|(_, id)| trusted(id)) {
            visit(&key, FieldRef::from_value(value), id);
        }
    }
    Ok(())
}

/// The bytes of a scalar, if it is a byte string.
pub(crate) fn ref_bytes<'a>(value: &'a ValueRef<'_>) -> Option<&'a [u8]> {
    match value {
        ValueRef::Scalar(automerge::ScalarValueRef::Bytes(b)) => Some(b),
        _ => None,
    }
}

/// The integer of a scalar, if it is one.
pub(crate) fn ref_i64(value: &ValueRef<'_>) -> Option<i64> {
    use automerge::ScalarValueRef as S;
    match value {
        ValueRef::Scalar(S::Int(i) | S::Counter(i) | S::Timestamp(i)) => Some(*i),
        ValueRef::Scalar(S::Uint(u)) => i64::try_from(*u).ok(),
        _ => None,
    }
}

/// The string of a scalar, if it is one.
pub(crate) fn ref_str<'a>(value: &'a ValueRef<'_>) -> Option<&'a str> {
    match value {
        ValueRef::Scalar(automerge::ScalarValueRef::Str(s)) => Some(s),
        _ => None,
    }
}

/// Whether two operation ids were made by the same actor.
pub(crate) fn same_actor(a: &ObjId, b: &ObjId) -> bool {
    match (a, b) {
        (ObjId::Id(_, x, _), ObjId::Id(_, y, _)) => x == y,
        _ => false,
    }
}

/// The map items of `map` whose values are maps, as (item id, object id, creating device);
/// items with a malformed key or an author that is no device are skipped.
pub(crate) fn authored_items(
    doc: &impl ReadDoc,
    map: &ObjId,
) -> Vec<(crate::ids::ItemId, ObjId, crate::identity::DeviceId)> {
    doc.map_range(map, ..)
        .filter(|item| matches!(item.value, ValueRef::Object(ObjType::Map)))
        .filter_map(|item| {
            let id = item.key.parse::<crate::ids::ItemId>().ok()?;
            let obj = item.id();
            let author = author_of_obj(&obj)?;
            Some((id, obj, author))
        })
        .collect()
}

/// What [`visit_child_maps`] reports.
pub(crate) trait ChildMapVisitor {
    /// A map item of the visited map whose value is a map: return whether to visit its fields.
    fn child(&mut self, key: &str, obj: &ObjId) -> bool;
    /// A field of a kept child, numbered in the order the children were kept.
    fn field(&mut self, child: usize, item: &automerge::iter::MapRangeItem<'_>);
}

/// Visit, in one pass over the document, the map items of `map` whose values are maps and then
/// the fields of every child the visitor keeps. Much cheaper than one `map_range` per child:
/// the document is walked once.
pub(crate) fn visit_child_maps(
    doc: &impl ReadDoc,
    map: &ObjId,
    visitor: &mut impl ChildMapVisitor,
) {
    #[derive(Clone, Copy)]
    enum Scope {
        Top,
        Child(usize),
        Other,
    }
    let mut children: std::collections::HashMap<ObjId, usize> = std::collections::HashMap::new();
    let mut current: Option<(std::sync::Arc<ObjId>, Scope)> = None;
    for it in doc.iter_at(map, None) {
        let automerge::iter::DocItem::Map(item) = it.item else {
            continue;
        };
        let scope = match &current {
            Some((obj, scope)) if std::sync::Arc::ptr_eq(obj, &it.obj) => *scope,
            _ => {
                let scope = if *it.obj == *map {
                    Scope::Top
                } else {
                    children
                        .get(&*it.obj)
                        .map_or(Scope::Other, |i| Scope::Child(*i))
                };
                current = Some((it.obj.clone(), scope));
                scope
            }
        };
        match scope {
            Scope::Top => {
                if matches!(item.value, ValueRef::Object(ObjType::Map)) {
                    let id = item.id();
                    if visitor.child(&item.key, &id) {
                        let n = children.len();
                        children.insert(id, n);
                    }
                }
            }
            Scope::Child(i) => visitor.field(i, &item),
            Scope::Other => {}
        }
    }
}

/// Lowercase hex digit values; 0xff for every other byte.
const HEX_DIGITS: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Parse a 16-character lowercase hex key into an [`crate::ids::ItemId`] (the hot-path twin of
/// `str::parse`, for readers that parse tens of thousands of keys).
pub(crate) fn item_id_from_hex(s: &str) -> Option<crate::ids::ItemId> {
    let bytes: &[u8; 16] = s.as_bytes().try_into().ok()?;
    let mut value = 0u64;
    let mut invalid = 0u8;
    for &c in bytes {
        let digit = HEX_DIGITS[usize::from(c)];
        invalid |= digit;
        value = (value << 4) | u64::from(digit & 0x0f);
    }
    (invalid & 0xf0 == 0).then(|| crate::ids::ItemId(value.to_be_bytes()))
}

/// The keys of `top`'s items (the maps directly in the top-level map `top`) that the newest
/// change at `doc`'s heads wrote to (created, or wrote a field of), and whether it wrote
/// anything outside them. Among concurrent heads only those with the newest timestamp count.
/// Costs the size of that change, not of the document: for code that reacts to "what just
/// arrived" (the relay's webhook).
pub(crate) fn items_in_newest_change(
    doc: &automerge::Automerge,
    top: &ObjId,
) -> (std::collections::BTreeSet<String>, bool) {
    use automerge::Prop;
    use automerge::legacy::{Key, ObjectId};
    let mut items = std::collections::BTreeSet::new();
    let mut other = false;
    let heads: Vec<automerge::Change> = doc
        .get_heads()
        .iter()
        .filter_map(|h| doc.get_change_by_hash(h))
        .collect();
    let Some(newest) = heads.iter().map(automerge::Change::timestamp).max() else {
        return (items, other);
    };
    for change in heads.iter().filter(|c| c.timestamp() == newest) {
        // A change lists each object's ops together: look each object's parent up once.
        let mut previous: Option<(ObjId, Option<String>)> = None;
        for op in change.decode().operations {
            let ObjectId::Id(id) = &op.obj else {
                other = true;
                continue;
            };
            // The actor index is only a hint: automerge looks the actor up when it differs.
            let obj = ObjId::Id(id.0, id.1.clone(), 0);
            let item = if obj == *top {
                // A new item: the op puts its map into `top`.
                match &op.key {
                    Key::Map(k) => Some(k.to_string()),
                    Key::Seq(_) => None,
                }
            } else if let Some((_, item)) = previous.as_ref().filter(|(o, _)| *o == obj) {
                item.clone()
            } else {
                // A field of an item: the item's map sits in `top`.
                let parent =
                    doc.parents(&obj)
                        .ok()
                        .and_then(|mut p| p.next())
                        .and_then(|p| match p.prop {
                            Prop::Map(k) if p.obj == *top => Some(k),
                            _ => None,
                        });
                previous = Some((obj, parent.clone()));
                parent
            };
            match item {
                Some(k) => {
                    items.insert(k);
                }
                None => other = true,
            }
        }
    }
    (items, other)
}
