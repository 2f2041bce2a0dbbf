#![allow(dead_code)] // shared helpers; some are used only by a subset of document modules
//! Typed reads and writes of Automerge values, shared by every document module.

use automerge::transaction::Transactable;
use automerge::{ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value};

use crate::error::ModelError;

/// The object id of a top-level map created by the document's genesis change.
pub(crate) fn top_map(doc: &impl ReadDoc, key: &'static str) -> Result<ObjId, ModelError> {
    map_at(doc, &ROOT, key)?.ok_or(ModelError::MissingGenesis { map: key })
}

/// The map stored at `obj[key]`, if there is one.
pub(crate) fn map_at(doc: &impl ReadDoc, obj: &ObjId, key: &str) -> Result<Option<ObjId>, ModelError> {
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
pub(crate) fn get_str(doc: &impl ReadDoc, obj: &ObjId, key: &str) -> Result<Option<String>, ModelError> {
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
pub(crate) fn get_i64(doc: &impl ReadDoc, obj: &ObjId, key: &str) -> Result<Option<i64>, ModelError> {
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
pub(crate) fn get_bool(doc: &impl ReadDoc, obj: &ObjId, key: &str) -> Result<Option<bool>, ModelError> {
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
