//! Administration of a relay's data folder: online backup and restore, listing classes and
//! devices, exporting a class — and ([`school`]) founding classes and inviting teachers as an
//! admin *device*.
//!
//! Read-only operations and backups work **while the relay runs**: SQLite in WAL mode lets
//! other connections read a consistent snapshot without blocking the relay's writer.
//!
//! - [`backup`] copies the store with SQLite's online backup API in one step (one read
//!   transaction: a consistent snapshot of everything committed — every change the relay
//!   acknowledged with `Saved` — at that instant), checks the copy, and copies the
//!   certificate and its key beside it. Without the certificate every device would need a
//!   new invite, so a backup is the whole folder's state, not only the database.
//! - [`restore`] checks a backup and installs it into a **fresh** data folder (it refuses a
//!   folder that already holds a store), for a relay that is stopped.
//! - [`Inspector`] opens the store for reading: classes, devices, and a class export
//!   ([`ClassExport`], JSON or CSV) with every entry's signature status per family and the
//!   teacher–family contact statistics per family.
//!
//! Nothing here writes to a live relay's store: changes to classes go through the relay like
//! any device's ([`school`]).

pub mod school;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use homeroom_core::automerge::Automerge;
use homeroom_core::roster::{Role, RosterIndex};
use homeroom_core::thread::{ContactStats, contact_stats_by_family};
use homeroom_core::view::{ClassDocs, NotebookView, SignatureStatus, Viewer, ViewerRole};
use homeroom_core::{ClassId, DocId, DocKind, FamilyId, ModelError};
use homeroom_store::{OpenOptions, Store, StoreError};
use homeroom_sync::{Limits, Replica, SyncError};
use rusqlite::{OpenFlags, backup::StepResult};
use serde::Serialize;

use crate::files::{CERTIFICATE_FILE, KEY_FILE, STORE_FILE};

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// A file or folder could not be read or written.
    #[error("{what} {path}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// SQLite failed during the backup.
    #[error("backup of {path} failed while trying to {step}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The step.
        step: &'static str,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The store (or a backup) could not be opened or read (the source names the file).
    #[error("cannot use the store")]
    Store {
        /// The database file.
        path: PathBuf,
        /// The store's error.
        source: Box<StoreError>,
    },
    /// The sync engine could not load the store.
    #[error("cannot load the store's documents")]
    Load(#[from] SyncError),
    /// A document could not be read.
    #[error("cannot read a document")]
    Model(#[from] ModelError),
    /// The data folder has no store.
    #[error("no store at {0}: is this the relay's data folder (--data-dir / data_dir)?")]
    NoStore(PathBuf),
    /// A restore target already holds a store.
    #[error(
        "{0} already exists: restore only into a fresh data folder (stop the relay, move the \
         old folder away, then restore)"
    )]
    TargetNotEmpty(PathBuf),
    /// A backup destination already exists and is not empty.
    #[error("{0} exists and is not empty: back up into a new folder")]
    BackupExists(PathBuf),
    /// The class is not in the store.
    #[error("class {0} is not on this relay (see `admin list-classes`)")]
    UnknownClass(ClassId),
    /// A backup folder is incomplete.
    #[error("{0} is missing from the backup")]
    Incomplete(PathBuf),
    /// JSON encoding failed.
    #[error("cannot encode the export as JSON")]
    Json(#[from] serde_json::Error),
    /// The admin device failed.
    #[error(transparent)]
    Client(#[from] homeroom_client::ClientError),
    /// Anything else, described.
    #[error("{0}")]
    Other(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AdminError + use<> {
    let path = path.to_path_buf();
    move |source| AdminError::Io { what, path, source }
}

fn store_err(path: &Path) -> impl FnOnce(StoreError) -> AdminError + use<> {
    let path = path.to_path_buf();
    move |e| AdminError::Store {
        path,
        source: Box::new(e),
    }
}

/// What a backup or restore copied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupSummary {
    /// The store file written.
    pub store: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Documents in it.
    pub documents: usize,
    /// Whether the certificate and key were copied too.
    pub certificate: bool,
}

/// Online backup of the relay's data folder `data_dir` into the new folder `dest` (created;
/// must not exist or be empty): the store through SQLite's backup API, then the certificate
/// and key. Safe while the relay runs; the copy holds every change committed before it began.
pub fn backup(data_dir: &Path, dest: &Path) -> Result<BackupSummary, AdminError> {
    let src_path = data_dir.join(STORE_FILE);
    if !src_path.exists() {
        return Err(AdminError::NoStore(src_path));
    }
    if dest.exists() {
        let mut entries = std::fs::read_dir(dest).map_err(io("cannot read", dest))?;
        if entries.next().is_some() {
            return Err(AdminError::BackupExists(dest.to_path_buf()));
        }
    }
    create_private_dir(dest)?;
    let dest_path = dest.join(STORE_FILE);
    backup_db(&src_path, &dest_path)?;
    fsync_file(&dest_path)?;
    let documents = verify(&dest_path)?;
    let mut certificate = true;
    for name in [CERTIFICATE_FILE, KEY_FILE] {
        let from = data_dir.join(name);
        if from.exists() {
            copy_private(&from, &dest.join(name))?;
        } else {
            certificate = false;
        }
    }
    let admin = data_dir.join(school::ADMIN_DIR);
    let admin_db = admin.join(school::DEVICE_STORE);
    if admin_db.exists() {
        let to = dest.join(school::ADMIN_DIR);
        create_private_dir(&to)?;
        backup_db(&admin_db, &to.join(school::DEVICE_STORE))?;
        copy_private(
            &admin.join(school::SCHOOL_FILE),
            &to.join(school::SCHOOL_FILE),
        )?;
        fsync_dir(&to)?;
    }
    fsync_dir(dest)?;
    Ok(BackupSummary {
        bytes: size_of(&dest_path)?,
        store: dest_path,
        documents,
        certificate,
    })
}

/// Copy the SQLite database `src` into the new file `dst` with the online backup API, in
/// one step, and fsync it.
fn backup_db(src_path: &Path, dst_path: &Path) -> Result<(), AdminError> {
    let sql = |step: &'static str| {
        let path = src_path.to_path_buf();
        move |source| AdminError::Sqlite { path, step, source }
    };
    let src = rusqlite::Connection::open_with_flags(
        src_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql("open the store read-only"))?;
    src.busy_timeout(Duration::from_secs(10))
        .map_err(sql("set a busy timeout"))?;
    // The copy holds every class's data: readable by the owner only, from the start.
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options
            .open(dst_path)
            .map_err(io("cannot create", dst_path))?;
    }
    {
        let mut dst =
            rusqlite::Connection::open(dst_path).map_err(sql("create the backup file"))?;
        let backup =
            rusqlite::backup::Backup::new(&src, &mut dst).map_err(sql("start the backup"))?;
        // One step copies every page under one read transaction: a consistent snapshot, and
        // no restart when the relay commits meanwhile (WAL readers do not block the writer).
        let mut waited = Duration::ZERO;
        loop {
            match backup.step(-1).map_err(sql("copy the pages"))? {
                StepResult::Done => break,
                StepResult::Busy | StepResult::Locked => {
                    if waited > Duration::from_secs(30) {
                        return Err(AdminError::Other(format!(
                            "{} stayed locked for 30 s; retry the backup",
                            src_path.display()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                    waited += Duration::from_millis(50);
                }
                _ => {}
            }
        }
    }
    fsync_file(dst_path)
}

/// Install the backup folder `from` into the fresh data folder `data_dir` (created if
/// missing; must not hold a store). The relay must be stopped; start it on `data_dir` after.
pub fn restore(from: &Path, data_dir: &Path) -> Result<BackupSummary, AdminError> {
    let src = from.join(STORE_FILE);
    if !src.exists() {
        return Err(AdminError::Incomplete(src));
    }
    let target = data_dir.join(STORE_FILE);
    for name in [
        STORE_FILE,
        "relay.sqlite3-wal",
        CERTIFICATE_FILE,
        KEY_FILE,
        school::ADMIN_DIR,
    ] {
        let p = data_dir.join(name);
        if p.exists() {
            return Err(AdminError::TargetNotEmpty(p));
        }
    }
    create_private_dir(data_dir)?;
    // Checked as copied (the backup itself may be on read-only media): schema, full
    // integrity check. A copy that fails is removed.
    let partial = data_dir.join("relay.sqlite3.restoring");
    copy_private(&src, &partial)?;
    let documents = match verify(&partial) {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    let mut certificate = true;
    for name in [CERTIFICATE_FILE, KEY_FILE] {
        let p = from.join(name);
        if p.exists() {
            copy_private(&p, &data_dir.join(name))?;
        } else {
            certificate = false;
        }
    }
    let admin_from = from.join(school::ADMIN_DIR);
    if admin_from.join(school::DEVICE_STORE).exists() {
        let to = data_dir.join(school::ADMIN_DIR);
        create_private_dir(&to)?;
        for name in [school::DEVICE_STORE, school::SCHOOL_FILE] {
            copy_private(&admin_from.join(name), &to.join(name))?;
        }
        fsync_dir(&to)?;
    }
    // The store appears last and whole: a relay started on a half-restored folder would find
    // no store, not a partial one.
    std::fs::rename(&partial, &target).map_err(io("cannot move into place", &target))?;
    fsync_dir(data_dir)?;
    Ok(BackupSummary {
        bytes: size_of(&target)?,
        store: target,
        documents,
        certificate,
    })
}

/// Open a store copy, run SQLite's full integrity check, and count its documents.
fn verify(path: &Path) -> Result<usize, AdminError> {
    let store = Store::open_with(path, &OpenOptions::new()).map_err(store_err(path))?;
    store.integrity_check().map_err(store_err(path))?;
    let n = store.documents().map_err(store_err(path))?.len();
    store.close().map_err(store_err(path))?;
    Ok(n)
}

fn size_of(path: &Path) -> Result<u64, AdminError> {
    Ok(std::fs::metadata(path)
        .map_err(io("cannot stat", path))?
        .len())
}

fn create_private_dir(dir: &Path) -> Result<(), AdminError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io("cannot create", dir))
}

/// Copy `from` to `to` (mode 0600), fsynced.
fn copy_private(from: &Path, to: &Path) -> Result<(), AdminError> {
    let data = std::fs::read(from).map_err(io("cannot read", from))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(to).map_err(io("cannot create", to))?;
    std::io::Write::write_all(&mut file, &data).map_err(io("cannot write", to))?;
    file.sync_all().map_err(io("cannot fsync", to))
}

fn fsync_file(path: &Path) -> Result<(), AdminError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io("cannot fsync", path))
}

fn fsync_dir(dir: &Path) -> Result<(), AdminError> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(io("cannot fsync", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// A class as listed by `admin list-classes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassInfo {
    /// The class id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Active members.
    pub members: usize,
    /// Families.
    pub families: usize,
    /// Active (not revoked) devices.
    pub devices: usize,
    /// Whether the class is an archived past term.
    pub archived: bool,
}

/// A device as listed by `admin list-devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// The class.
    pub class: String,
    /// The device key.
    pub device: String,
    /// The member's id.
    pub member: String,
    /// The member's name.
    pub name: String,
    /// The member's roles.
    pub roles: Vec<String>,
    /// The member's family name, for guardians.
    pub family: Option<String>,
    /// When it was enrolled (ms since the Unix epoch).
    pub added_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
    /// When its member was removed, if they were.
    pub member_removed_at: Option<i64>,
}

/// A class exported: every entry with each family's signature state, and the contact
/// statistics per family.
#[derive(Debug, Clone, Serialize)]
pub struct ClassExport {
    /// The class id.
    pub class: String,
    /// Its name.
    pub name: String,
    /// When the export was made (ms since the Unix epoch).
    pub exported_at: i64,
    /// Families by id: their names.
    pub families: BTreeMap<String, String>,
    /// Entries, newest first.
    pub entries: Vec<EntryExport>,
    /// Teacher–family contacts per family (all time).
    pub contacts: Vec<ContactExport>,
}

/// One entry of a [`ClassExport`].
#[derive(Debug, Clone, Serialize)]
pub struct EntryExport {
    /// The entry id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Red, amber or green.
    pub urgency: String,
    /// When it was posted (ms since the Unix epoch).
    pub created_at: i64,
    /// The current title.
    pub title: String,
    /// The current text.
    pub text: String,
    /// Whether families are asked to sign it.
    pub signature_requested: bool,
    /// Per family (by id): its signature state.
    pub families: BTreeMap<String, FamilySignatureExport>,
}

/// One family's state for one entry.
#[derive(Debug, Clone, Serialize)]
pub struct FamilySignatureExport {
    /// `signed`, `signed_earlier_version` (superseded by a material edit) or `unsigned`.
    pub status: &'static str,
    /// Counted signatures.
    pub signatures: usize,
    /// Whether a guardian opened (or signed) it.
    pub read: bool,
    /// When the newest counted signature was made, if any.
    pub last_signed_at: Option<i64>,
}

/// Contact statistics of one family.
#[derive(Debug, Clone, Serialize)]
pub struct ContactExport {
    /// The family id.
    pub family: String,
    /// Its name.
    pub name: String,
    /// Home visits.
    pub home_visits: u32,
    /// Phone calls.
    pub phone_calls: u32,
    /// Meetings.
    pub meetings: u32,
    /// All contacts.
    pub total: u32,
}

impl ClassExport {
    /// The export as pretty JSON.
    pub fn to_json(&self) -> Result<String, AdminError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// The export as CSV: one row per (entry, family) with the signature state, then — after
    /// a blank line — one row per family with its contact statistics.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "entry_id,created_at,kind,urgency,title,signature_requested,family_id,family,\
             status,signatures,read,last_signed_at\n",
        );
        for e in &self.entries {
            for (fid, s) in &e.families {
                let fname = self.families.get(fid).map(String::as_str).unwrap_or("");
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{},{},{}",
                    e.id,
                    e.created_at,
                    csv(&e.kind),
                    csv(&e.urgency),
                    csv(&e.title),
                    e.signature_requested,
                    fid,
                    csv(fname),
                    s.status,
                    s.signatures,
                    s.read,
                    s.last_signed_at.map(|t| t.to_string()).unwrap_or_default()
                );
            }
        }
        out.push('\n');
        out.push_str("family_id,family,home_visits,phone_calls,meetings,total\n");
        for c in &self.contacts {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{}",
                c.family,
                csv(&c.name),
                c.home_visits,
                c.phone_calls,
                c.meetings,
                c.total
            );
        }
        out
    }
}

/// A CSV field, quoted when needed; a leading formula character is defused for spreadsheets.
fn csv(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Reads a relay store (live or a backup) for listing and export.
pub struct Inspector {
    replica: Replica,
}

impl std::fmt::Debug for Inspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspector").finish_non_exhaustive()
    }
}

impl Inspector {
    /// Open the store in `data_dir` (the relay may be running).
    pub fn open(data_dir: &Path) -> Result<Inspector, AdminError> {
        let path = data_dir.join(STORE_FILE);
        if !path.exists() {
            return Err(AdminError::NoStore(path));
        }
        let store = Store::open_with(&path, &OpenOptions::new().integrity_check(false))
            .map_err(store_err(&path))?;
        let replica = Replica::relay(Box::new(store), Limits::default())?;
        Ok(Inspector { replica })
    }

    fn roster(&self, class: ClassId) -> Result<&RosterIndex, AdminError> {
        self.replica
            .roster(&class)
            .ok_or(AdminError::UnknownClass(class))
    }

    /// Every class, by name.
    pub fn classes(&self) -> Vec<ClassInfo> {
        let mut out: Vec<ClassInfo> = self
            .replica
            .classes()
            .into_iter()
            .filter_map(|c| {
                let r = self.replica.roster(&c)?;
                Some(ClassInfo {
                    id: c.to_string(),
                    name: r.class_name.clone(),
                    members: r
                        .members
                        .values()
                        .filter(|m| m.removed_at.is_none())
                        .count(),
                    families: r.families.len(),
                    devices: r
                        .devices
                        .values()
                        .filter(|d| d.revoked_at.is_none())
                        .count(),
                    archived: r.archived_at.is_some(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        out
    }

    /// Every device of `class` (or of every class), by class then member name.
    pub fn devices(&self, class: Option<ClassId>) -> Result<Vec<DeviceInfo>, AdminError> {
        let classes = match class {
            Some(c) => {
                self.roster(c)?;
                vec![c]
            }
            None => self.replica.classes(),
        };
        let mut out = Vec::new();
        for c in classes {
            let r = self.roster(c)?;
            for d in r.devices.values() {
                let m = r.members.get(&d.member);
                out.push(DeviceInfo {
                    class: c.to_string(),
                    device: d.id.to_string(),
                    member: d.member.to_string(),
                    name: m.map(|m| m.name.clone()).unwrap_or_default(),
                    roles: m
                        .map(|m| m.roles.iter().map(|r| r.as_str().to_string()).collect())
                        .unwrap_or_default(),
                    family: m
                        .and_then(|m| m.family)
                        .and_then(|f| r.families.get(&f))
                        .map(|f| f.name.clone()),
                    added_at: d.added_at,
                    revoked_at: d.revoked_at,
                    member_removed_at: m.and_then(|m| m.removed_at),
                });
            }
        }
        out.sort_by(|a, b| {
            (a.class.as_str(), a.name.as_str(), a.device.as_str()).cmp(&(
                b.class.as_str(),
                b.name.as_str(),
                b.device.as_str(),
            ))
        });
        Ok(out)
    }

    /// Export `class` as of now.
    pub fn export(&mut self, class: ClassId, now_ms: i64) -> Result<ClassExport, AdminError> {
        let roster = self.roster(class)?.clone();
        let mut load = |kind: DocKind| -> Result<Automerge, AdminError> {
            Ok(self.replica.document(&DocId::new(class, kind))?.clone())
        };
        let notebook = load(DocKind::Notebook)?;
        let mut lanes: Vec<(FamilyId, Automerge)> = Vec::new();
        let mut boards: Vec<(FamilyId, Automerge)> = Vec::new();
        for f in roster.families.keys() {
            lanes.push((*f, load(DocKind::Lane(*f))?));
            boards.push((*f, load(DocKind::Board(*f))?));
        }
        // The view as staff sees it: every family's state. The viewer's member id only
        // matters for a guardian's view.
        let member = roster
            .members
            .values()
            .find(|m| m.roles.iter().any(Role::is_staff))
            .map(|m| m.id)
            .ok_or_else(|| AdminError::Other(format!("class {class} has no staff member")))?;
        let viewer = Viewer {
            member,
            role: ViewerRole::Staff,
        };
        let docs = ClassDocs {
            notebook: &notebook,
            lanes: lanes.iter().map(|(f, d)| (*f, d)).collect(),
            boards: boards.iter().map(|(f, d)| (*f, d)).collect(),
        };
        let view = NotebookView::build(&roster, &viewer, &docs)?;
        let lane_refs: Vec<(FamilyId, &Automerge)> = lanes.iter().map(|(f, d)| (*f, d)).collect();
        let stats: BTreeMap<FamilyId, ContactStats> =
            contact_stats_by_family(&lane_refs, &roster, i64::MIN..i64::MAX)?;

        let entries = view
            .entries
            .iter()
            .map(|e| EntryExport {
                id: e.id.to_string(),
                kind: e.kind.as_str().to_string(),
                urgency: e.urgency.as_str().to_string(),
                created_at: e.created_at,
                title: e.latest.title.clone(),
                text: e.latest.text.clone(),
                signature_requested: e.signature_requested,
                families: e
                    .families
                    .iter()
                    .map(|(f, s)| {
                        let status = match s.status {
                            SignatureStatus::Signed { .. } => "signed",
                            SignatureStatus::Superseded { .. } => "signed_earlier_version",
                            _ => "unsigned",
                        };
                        let last_signed_at = e.signatures_of(f).iter().map(|s| s.at).max();
                        (
                            f.to_string(),
                            FamilySignatureExport {
                                status,
                                signatures: s.signature_count,
                                read: s.read,
                                last_signed_at,
                            },
                        )
                    })
                    .collect(),
            })
            .collect();
        let contacts = roster
            .families
            .values()
            .map(|f| {
                let s = stats.get(&f.id).copied().unwrap_or_default();
                ContactExport {
                    family: f.id.to_string(),
                    name: f.name.clone(),
                    home_visits: s.home_visits,
                    phone_calls: s.phone_calls,
                    meetings: s.meetings,
                    total: s.total(),
                }
            })
            .collect();
        Ok(ClassExport {
            class: class.to_string(),
            name: roster.class_name.clone(),
            exported_at: now_ms,
            families: roster
                .families
                .values()
                .map(|f| (f.id.to_string(), f.name.clone()))
                .collect(),
            entries,
            contacts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv("plain"), "plain");
        assert_eq!(csv("a,b"), "\"a,b\"");
        assert_eq!(csv("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv("=SUM(A1)"), "'=SUM(A1)");
    }
}
