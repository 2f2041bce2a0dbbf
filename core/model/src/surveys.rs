//! Surveys: parents evaluate teaching and activities.
//!
//! # Where things live
//!
//! - Notebook `surveys/<survey>`: title, whether answers are anonymous, open and close times,
//!   the grace window for late sync, the `questions/<question>` (created with the survey by
//!   one staff device), and `seals/<seal>` (see below). Staff may close a survey early
//!   (`closed_at`; concurrent closes take the earliest).
//! - Lane `answers`, key `<survey>.<question>`: a family's answer to one question. Every
//!   answer is a new record object at that key; concurrent answers from two guardians'
//!   devices are all kept by Automerge and read with `get_all`, and the one with the greatest
//!   [`Hlc`] wins (last writer wins per question).
//! - Ballots doc `ballots`, key `<survey>.<token>.<question>`, for anonymous surveys: the
//!   token is `BLAKE3(survey ‖ family secret)` ([`ballot_token`]), so a family's second answer
//!   lands on the same key (duplicates are caught, last writer wins) without naming the
//!   family. The stamp stored there carries no device id.
//!
//! # Close, grace window, late answers
//!
//! Answers can only be written before the survey closes. An answer written before close
//! still has to **arrive** within the grace window: after `close + grace` a staff device
//! **seals** the survey ([`seal_survey`]), recording the heads of each family lane (and of
//! the ballots doc) it has. An answer present at those heads is [`AnswerStatus::Accepted`];
//! one that arrives later is kept but [`AnswerStatus::Late`], and the accepted one still
//! counts. Until a seal is seen, answers written before close are
//! [`AnswerStatus::Provisional`]. Concurrent seals by two staff devices accept what either
//! had.
//!
//! # Limits of anonymity
//!
//! The ballots doc never names a family, and only staff read it. But every Automerge change
//! carries its author's actor id, which is the device key: anyone with raw access to the
//! ballots doc's changes (staff devices, the relay) can map a ballot to the device, and so to
//! the family, through the roster. The write time is in the stamp too. Anonymity here is
//! against the typed reads and the teacher's screen, not against an operator with the raw
//! data. The family secret must not be derivable by staff (keep it on the guardians'
//! devices, not in the lane), or staff can recompute the tokens.

use std::collections::{BTreeMap, BTreeSet};

use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash, ObjId, ObjType, ReadDoc, Value};

use crate::context::Actor;
use crate::error::{ModelError, check_text};
use crate::events::allocation::author_is_staff;
use crate::hlc::{Hlc, read_stamp};
use crate::identity::DeviceId;
use crate::ids::{FamilyId, IdSource, ItemId};
use crate::roster::{Role, RosterIndex};
use crate::values::{
    all_maps_at, all_maps_at_heads, author_of_obj, get_bool, get_i64, get_str, guardian_device_at,
    keys, map_at, top_map,
};

/// Longest survey title, in characters.
pub const MAX_TITLE: usize = 200;
/// Longest question prompt, in characters.
pub const MAX_PROMPT: usize = 500;
/// Longest option label, in characters.
pub const MAX_OPTION: usize = 200;
/// Longest text answer, in characters.
pub const MAX_TEXT_ANSWER: usize = 2000;
/// Most questions per survey.
pub const MAX_QUESTIONS: usize = 50;
/// Most options per choice question.
pub const MAX_OPTIONS: usize = 20;
/// Longest grace window: 30 days.
pub const MAX_GRACE_MS: i64 = 30 * 24 * 3600 * 1000;

/// A question as the teacher enters it.
#[derive(Debug, Clone, Copy)]
pub enum QuestionSpec<'a> {
    /// Pick one of the options.
    SingleChoice(&'a [&'a str]),
    /// Pick any (at least one) of the options.
    MultiChoice(&'a [&'a str]),
    /// A rating from 1 to `max` (2..=10).
    Rating {
        /// The highest rating.
        max: u8,
    },
    /// Free text.
    Text,
}

/// A new question.
#[derive(Debug, Clone, Copy)]
pub struct NewQuestion<'a> {
    /// The question's text.
    pub prompt: &'a str,
    /// What kind of answer it takes.
    pub spec: QuestionSpec<'a>,
}

/// A new survey.
#[derive(Debug, Clone, Copy)]
pub struct NewSurvey<'a> {
    /// Title shown to families.
    pub title: &'a str,
    /// Whether answers go to the ballots doc under one-time tokens.
    pub anonymous: bool,
    /// When answering opens, ms since the Unix epoch.
    pub opens_at: i64,
    /// When answering closes; after `opens_at`.
    pub closes_at: i64,
    /// How long after close an answer written before close may still arrive.
    pub grace_ms: i64,
    /// The questions, in order (at least one).
    pub questions: &'a [NewQuestion<'a>],
}

/// What kind of answer a question takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuestionKind {
    /// One option.
    SingleChoice,
    /// Any options.
    MultiChoice,
    /// A rating from 1 to the question's `scale`.
    Rating,
    /// Free text.
    Text,
}

impl QuestionKind {
    fn as_str(self) -> &'static str {
        match self {
            QuestionKind::SingleChoice => "single",
            QuestionKind::MultiChoice => "multi",
            QuestionKind::Rating => "rating",
            QuestionKind::Text => "text",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "single" => QuestionKind::SingleChoice,
            "multi" => QuestionKind::MultiChoice,
            "rating" => QuestionKind::Rating,
            "text" => QuestionKind::Text,
            _ => return None,
        })
    }
}

/// A question as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The question's id.
    pub id: ItemId,
    /// The question's text.
    pub prompt: String,
    /// Kind of answer.
    pub kind: QuestionKind,
    /// Options of a choice question.
    pub options: Vec<String>,
    /// Highest rating of a rating question (0 otherwise).
    pub scale: u8,
}

/// A survey as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survey {
    /// The survey's id.
    pub id: ItemId,
    /// Title.
    pub title: String,
    /// Whether answers are anonymous.
    pub anonymous: bool,
    /// Opening time.
    pub opens_at: i64,
    /// Effective closing time (the earlier of the planned close and an early close).
    pub closes_at: i64,
    /// Grace window for late sync, ms.
    pub grace_ms: i64,
    /// Questions in order.
    pub questions: Vec<Question>,
    /// Whether a staff device has sealed it.
    pub sealed: bool,
}

/// An answer to one question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Answer {
    /// Index of the chosen option.
    Choice(u32),
    /// Indices of the chosen options (distinct).
    Choices(Vec<u32>),
    /// A rating from 1 to the question's scale.
    Rating(u8),
    /// Free text.
    Text(String),
}

/// Whether an answer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerStatus {
    /// Written before close; the survey is not sealed yet (as far as this replica knows).
    Provisional,
    /// Written before close and arrived within the grace window.
    Accepted,
    /// Written after close, or arrived after the survey was sealed. Kept, not counted.
    Late,
}

/// A family's (or a ballot's) current answer to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerView {
    /// The question.
    pub question: ItemId,
    /// The latest answer (greatest HLC).
    pub answer: Answer,
    /// Its stamp (for ballots, the device part is zero).
    pub stamp: Hlc,
    /// When it was written (the writer's clock).
    pub written_at: i64,
    /// Whether it counts.
    pub status: AnswerStatus,
    /// The answer that counts in the results: the latest one unless it is late, in which
    /// case the one accepted at the seal (if any).
    pub counted: Option<Answer>,
}

/// Tallies for one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuestionResult {
    /// The question.
    pub question: ItemId,
    /// Counted answers.
    pub responses: u32,
    /// Per option, how many counted answers chose it (choice questions).
    pub counts: Vec<u32>,
    /// Sum of counted ratings (rating questions); divide by `responses` for the mean.
    pub rating_sum: u64,
    /// Counted text answers (text questions).
    pub texts: Vec<String>,
    /// Answers whose latest version is late.
    pub late: u32,
}

/// Results of a survey (staff).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SurveyResults {
    /// The survey.
    pub survey: ItemId,
    /// Families (or ballots) with at least one counted answer.
    pub respondents: u32,
    /// Per question, in order.
    pub questions: Vec<QuestionResult>,
}

// ---------------------------------------------------------------------------------------
// Staff writes

/// Create a survey (staff). Returns its id and its questions' ids in order.
pub fn create_survey(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    ids: &mut impl IdSource,
    survey: &NewSurvey<'_>,
) -> Result<(ItemId, Vec<ItemId>), ModelError> {
    actor.require_staff()?;
    check_text("title", survey.title, MAX_TITLE, false)?;
    if survey.closes_at <= survey.opens_at {
        return Err(ModelError::InvalidInput {
            field: "closes_at",
            reason: "must be after opens_at".into(),
        });
    }
    if !(0..=MAX_GRACE_MS).contains(&survey.grace_ms) {
        return Err(ModelError::InvalidInput {
            field: "grace_ms",
            reason: format!("must be between 0 and {MAX_GRACE_MS}"),
        });
    }
    if survey.questions.is_empty() || survey.questions.len() > MAX_QUESTIONS {
        return Err(ModelError::InvalidInput {
            field: "questions",
            reason: format!("between 1 and {MAX_QUESTIONS} questions"),
        });
    }
    for q in survey.questions {
        check_text("prompt", q.prompt, MAX_PROMPT, false)?;
        match q.spec {
            QuestionSpec::SingleChoice(opts) | QuestionSpec::MultiChoice(opts) => {
                if opts.len() < 2 || opts.len() > MAX_OPTIONS {
                    return Err(ModelError::InvalidInput {
                        field: "options",
                        reason: format!("a choice question needs 2 to {MAX_OPTIONS} options"),
                    });
                }
                for o in opts {
                    check_text("options", o, MAX_OPTION, false)?;
                }
            }
            QuestionSpec::Rating { max } => {
                if !(2..=10).contains(&max) {
                    return Err(ModelError::InvalidInput {
                        field: "max",
                        reason: "a rating scale goes up to 2..=10".into(),
                    });
                }
            }
            QuestionSpec::Text => {}
        }
    }
    let stamp = Hlc::after(actor.device, actor.now, []);
    let surveys = top_map(tx, "surveys")?;
    let id = ids.item_id(actor.now);
    let obj = tx.put_object(&surveys, id.to_hex(), ObjType::Map)?;
    tx.put(&obj, "title", survey.title)?;
    tx.put(&obj, "anonymous", survey.anonymous)?;
    tx.put(&obj, "opens_at", survey.opens_at)?;
    tx.put(&obj, "closes_at", survey.closes_at)?;
    tx.put(&obj, "grace_ms", survey.grace_ms)?;
    tx.put(&obj, "stamp", stamp.encode())?;
    tx.put_object(&obj, "seals", ObjType::Map)?;
    let qs = tx.put_object(&obj, "questions", ObjType::Map)?;
    let mut qids = Vec::with_capacity(survey.questions.len());
    for (i, q) in survey.questions.iter().enumerate() {
        let qid = ids.item_id(actor.now);
        let qo = tx.put_object(&qs, qid.to_hex(), ObjType::Map)?;
        tx.put(&qo, "index", i as i64)?;
        tx.put(&qo, "prompt", q.prompt)?;
        let (kind, opts, scale) = match q.spec {
            QuestionSpec::SingleChoice(o) => (QuestionKind::SingleChoice, o, 0u8),
            QuestionSpec::MultiChoice(o) => (QuestionKind::MultiChoice, o, 0),
            QuestionSpec::Rating { max } => (QuestionKind::Rating, &[][..], max),
            QuestionSpec::Text => (QuestionKind::Text, &[][..], 0),
        };
        tx.put(&qo, "kind", kind.as_str())?;
        tx.put(&qo, "scale", i64::from(scale))?;
        let list = tx.put_object(&qo, "options", ObjType::List)?;
        for (j, o) in opts.iter().enumerate() {
            tx.insert(&list, j, *o)?;
        }
        qids.push(qid);
    }
    Ok((id, qids))
}

/// Close a survey now (staff), if that is earlier than its planned close.
pub fn close_survey(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    survey: ItemId,
) -> Result<(), ModelError> {
    actor.require_staff()?;
    let (obj, s) = survey_obj(tx, actor.roster, survey)?;
    if actor.now < s.closes_at {
        tx.put(&obj, "closed_at", actor.now)?;
    }
    Ok(())
}

/// Seal a survey (staff), once `close + grace` has passed: records the heads of the given
/// lanes (and of the ballots doc) as the answers that arrived in time. Refused if this device
/// already sees a seal.
pub fn seal_survey(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    ids: &mut impl IdSource,
    survey: ItemId,
    lanes: &[(FamilyId, &Automerge)],
    ballots: Option<&Automerge>,
) -> Result<ItemId, ModelError> {
    actor.require_staff()?;
    let (obj, s) = survey_obj(tx, actor.roster, survey)?;
    if actor.now < s.closes_at.saturating_add(s.grace_ms) {
        return Err(ModelError::InvalidState(format!(
            "survey {survey} can be sealed only after its close and grace window"
        )));
    }
    if s.sealed {
        return Err(ModelError::InvalidState(format!(
            "survey {survey} is already sealed"
        )));
    }
    let seals = map_at(tx, &obj, "seals")?.ok_or(ModelError::Corrupt {
        what: "survey without seals map".into(),
    })?;
    let id = ids.item_id(actor.now);
    let seal = tx.put_object(&seals, id.to_hex(), ObjType::Map)?;
    tx.put(
        &seal,
        "stamp",
        Hlc::after(actor.device, actor.now, []).encode(),
    )?;
    let lmap = tx.put_object(&seal, "lanes", ObjType::Map)?;
    for (family, lane) in lanes {
        tx.put(&lmap, family.to_hex(), heads_string(&lane.get_heads()))?;
    }
    if let Some(b) = ballots {
        tx.put(&seal, "ballots", heads_string(&b.get_heads()))?;
    }
    Ok(id)
}

fn heads_string(heads: &[ChangeHash]) -> String {
    heads
        .iter()
        .map(|h| h.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------
// Family writes

/// Answer one question of a non-anonymous survey (a guardian of `family`, in its lane).
/// Replaces the family's earlier answer to that question. Returns the answer's stamp.
pub fn answer(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    notebook: &impl ReadDoc,
    family: FamilyId,
    survey: ItemId,
    question: ItemId,
    answer: &Answer,
) -> Result<Hlc, ModelError> {
    actor.require_guardian_of(&family)?;
    let s = read_survey(notebook, actor.roster, survey)?;
    if s.anonymous {
        return Err(ModelError::InvalidState(format!(
            "survey {survey} is anonymous: answer it with answer_anonymously"
        )));
    }
    let q = check_answer(&s, question, answer, actor.now)?;
    let answers = top_map(tx, "answers")?;
    let key = format!("{survey}.{}", q.id);
    let seen = stamps_at(tx, &answers, &key)?;
    let stamp = Hlc::after(actor.device, actor.now, &seen);
    put_answer(tx, &answers, &key, answer, stamp, actor.now)?;
    Ok(stamp)
}

/// The one-time token of a family for a survey: `BLAKE3(domain ‖ survey ‖ family secret)`.
pub fn ballot_token(survey: ItemId, family_secret: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"homeroom/ballot/v1\0");
    h.update(&survey.0);
    h.update(family_secret);
    *h.finalize().as_bytes()
}

/// Answer one question of an anonymous survey (a guardian), in the ballots doc under the
/// family's one-time token. `family_secret` must be the same on every guardian device of the
/// family (so duplicates collapse) and unknown to staff. Returns the stored stamp (whose
/// device part is zero).
#[allow(clippy::too_many_arguments)]
pub fn answer_anonymously(
    tx: &mut impl Transactable,
    actor: &Actor<'_>,
    notebook: &impl ReadDoc,
    family_secret: &[u8; 32],
    survey: ItemId,
    question: ItemId,
    answer: &Answer,
) -> Result<Hlc, ModelError> {
    actor.guardian_family()?;
    let s = read_survey(notebook, actor.roster, survey)?;
    if !s.anonymous {
        return Err(ModelError::InvalidState(format!(
            "survey {survey} is not anonymous: answer it with answer"
        )));
    }
    let q = check_answer(&s, question, answer, actor.now)?;
    let ballots = top_map(tx, "ballots")?;
    let key = format!(
        "{survey}.{}.{}",
        hex::encode(ballot_token(survey, family_secret)),
        q.id
    );
    let seen = stamps_at(tx, &ballots, &key)?;
    let stamp = Hlc::after(DeviceId([0; 32]), actor.now, &seen);
    put_answer(tx, &ballots, &key, answer, stamp, actor.now)?;
    Ok(stamp)
}

fn check_answer<'s>(
    s: &'s Survey,
    question: ItemId,
    answer: &Answer,
    now: i64,
) -> Result<&'s Question, ModelError> {
    let q = s
        .questions
        .iter()
        .find(|q| q.id == question)
        .ok_or_else(|| ModelError::UnknownId {
            kind: "question",
            id: question.to_hex(),
        })?;
    if now < s.opens_at {
        return Err(ModelError::InvalidState(format!(
            "survey {} is not open yet",
            s.id
        )));
    }
    if now >= s.closes_at {
        return Err(ModelError::InvalidState(format!(
            "survey {} is closed",
            s.id
        )));
    }
    if let Answer::Text(t) = answer {
        check_text("answer", t, MAX_TEXT_ANSWER, false)?;
    }
    if !fits(q, answer) {
        return Err(ModelError::InvalidInput {
            field: "answer",
            reason: format!("does not fit a {:?} question", q.kind),
        });
    }
    Ok(q)
}

/// Whether `answer` is a valid answer to `q`.
fn fits(q: &Question, answer: &Answer) -> bool {
    let n = q.options.len();
    match (q.kind, answer) {
        (QuestionKind::SingleChoice, Answer::Choice(i)) => (*i as usize) < n,
        (QuestionKind::MultiChoice, Answer::Choices(v)) => {
            let distinct: BTreeSet<&u32> = v.iter().collect();
            !v.is_empty() && distinct.len() == v.len() && v.iter().all(|i| (*i as usize) < n)
        }
        (QuestionKind::Rating, Answer::Rating(r)) => (1..=q.scale).contains(r),
        (QuestionKind::Text, Answer::Text(t)) => {
            !t.trim().is_empty() && t.chars().count() <= MAX_TEXT_ANSWER
        }
        _ => false,
    }
}

fn stamps_at(doc: &impl ReadDoc, map: &ObjId, key: &str) -> Result<Vec<Hlc>, ModelError> {
    let mut out = Vec::new();
    for rec in all_maps_at(doc, map, key)? {
        if let Some(s) = read_stamp(doc, &rec, "stamp")? {
            out.push(s);
        }
    }
    Ok(out)
}

fn put_answer(
    tx: &mut impl Transactable,
    map: &ObjId,
    key: &str,
    answer: &Answer,
    stamp: Hlc,
    now: i64,
) -> Result<(), ModelError> {
    let (kind, value) = match answer {
        Answer::Choice(i) => ("choice", i.to_string()),
        Answer::Choices(v) => (
            "choices",
            v.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
        ),
        Answer::Rating(r) => ("rating", r.to_string()),
        Answer::Text(t) => ("text", t.clone()),
    };
    let rec = tx.put_object(map, key, ObjType::Map)?;
    tx.put(&rec, "kind", kind)?;
    tx.put(&rec, "value", value)?;
    tx.put(&rec, "stamp", stamp.encode())?;
    tx.put(&rec, "written_at", now)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Reads

/// Every survey in the notebook, by opening time.
pub fn read_surveys(doc: &impl ReadDoc, roster: &RosterIndex) -> Result<Vec<Survey>, ModelError> {
    let surveys = top_map(doc, "surveys")?;
    let mut out = Vec::new();
    for key in keys(doc, &surveys) {
        let Ok(id) = key.parse::<ItemId>() else {
            continue;
        };
        let Some(obj) = map_at(doc, &surveys, &key)? else {
            continue;
        };
        if let Some(s) = read_survey_obj(doc, roster, &obj, id)? {
            out.push(s);
        }
    }
    out.sort_by_key(|s| (s.opens_at, s.id));
    Ok(out)
}

/// One survey.
pub fn read_survey(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    survey: ItemId,
) -> Result<Survey, ModelError> {
    survey_obj(doc, roster, survey).map(|(_, s)| s)
}

/// A family's current answers to `survey` (non-anonymous), one per answered question.
pub fn family_answers(
    notebook: &impl ReadDoc,
    lane: &impl ReadDoc,
    roster: &RosterIndex,
    family: FamilyId,
    survey: ItemId,
) -> Result<Vec<AnswerView>, ModelError> {
    let (obj, s) = survey_obj(notebook, roster, survey)?;
    let seal = lane_seal(notebook, roster, &obj, lane, &family)?;
    let answers = top_map(lane, "answers")?;
    let mut out = Vec::new();
    for q in &s.questions {
        let key = format!("{survey}.{}", q.id);
        let valid = |rec: &ObjId, stamp: &Hlc, _written: i64| {
            author_of_obj(rec)
                .is_some_and(|d| guardian_device_at(roster, &d, &family, stamp.wall_ms))
        };
        if let Some(v) = resolve(lane, &answers, &key, q, &s, seal.as_deref(), valid)? {
            out.push(v);
        }
    }
    Ok(out)
}

/// The answers under a family's token in the ballots doc (a guardian reading its own
/// anonymous answers back from its replica; or staff).
pub fn ballot_answers(
    notebook: &impl ReadDoc,
    ballots: &impl ReadDoc,
    roster: &RosterIndex,
    family_secret: &[u8; 32],
    survey: ItemId,
) -> Result<Vec<AnswerView>, ModelError> {
    let (obj, s) = survey_obj(notebook, roster, survey)?;
    let seal = ballots_seal(notebook, roster, &obj, ballots)?;
    let map = top_map(ballots, "ballots")?;
    let token = hex::encode(ballot_token(survey, family_secret));
    let mut out = Vec::new();
    for q in &s.questions {
        let key = format!("{survey}.{token}.{}", q.id);
        if let Some(v) = resolve(ballots, &map, &key, q, &s, seal.as_deref(), |rec, _, w| {
            ballot_author_ok(roster, rec, w)
        })? {
            out.push(v);
        }
    }
    Ok(out)
}

/// Tallies of a survey over the given lanes (non-anonymous) or the ballots doc (anonymous),
/// counting only answers that count (see [`AnswerView::counted`]).
pub fn survey_results<L: ReadDoc, B: ReadDoc>(
    notebook: &impl ReadDoc,
    lanes: &[(FamilyId, &L)],
    ballots: Option<&B>,
    roster: &RosterIndex,
    survey: ItemId,
) -> Result<SurveyResults, ModelError> {
    let (obj, s) = survey_obj(notebook, roster, survey)?;
    // Per respondent (family or token), its answers.
    let mut per_respondent: Vec<Vec<AnswerView>> = Vec::new();
    if s.anonymous {
        if let Some(b) = ballots {
            let seal = ballots_seal(notebook, roster, &obj, b)?;
            let map = top_map(b, "ballots")?;
            let mut tokens: BTreeMap<String, Vec<AnswerView>> = BTreeMap::new();
            let prefix = format!("{survey}.");
            for key in keys(b, &map) {
                let Some(rest) = key.strip_prefix(&prefix) else {
                    continue;
                };
                let Some((token, qhex)) = rest.split_once('.') else {
                    continue;
                };
                let Some(q) = s.questions.iter().find(|q| q.id.to_hex() == qhex) else {
                    continue;
                };
                if token.len() != 64 {
                    continue;
                }
                if let Some(v) = resolve(b, &map, &key, q, &s, seal.as_deref(), |rec, _, w| {
                    ballot_author_ok(roster, rec, w)
                })? {
                    tokens.entry(token.to_string()).or_default().push(v);
                }
            }
            per_respondent.extend(tokens.into_values());
        }
    } else {
        for (family, lane) in lanes {
            per_respondent.push(family_answers(notebook, *lane, roster, *family, survey)?);
        }
    }

    let mut results: Vec<QuestionResult> = s
        .questions
        .iter()
        .map(|q| QuestionResult {
            question: q.id,
            responses: 0,
            counts: vec![0; q.options.len()],
            rating_sum: 0,
            texts: Vec::new(),
            late: 0,
        })
        .collect();
    let mut respondents = 0u32;
    for answers in &per_respondent {
        let mut counted_any = false;
        for v in answers {
            let Some(r) = results.iter_mut().find(|r| r.question == v.question) else {
                continue;
            };
            if v.status == AnswerStatus::Late {
                r.late += 1;
            }
            let Some(a) = &v.counted else { continue };
            counted_any = true;
            r.responses += 1;
            match a {
                Answer::Choice(i) => {
                    if let Some(c) = r.counts.get_mut(*i as usize) {
                        *c += 1;
                    }
                }
                Answer::Choices(v) => {
                    for i in v {
                        if let Some(c) = r.counts.get_mut(*i as usize) {
                            *c += 1;
                        }
                    }
                }
                Answer::Rating(x) => r.rating_sum += u64::from(*x),
                Answer::Text(t) => r.texts.push(t.clone()),
            }
        }
        if counted_any {
            respondents += 1;
        }
    }
    Ok(SurveyResults {
        survey,
        respondents,
        questions: results,
    })
}

// ---------------------------------------------------------------------------------------
// Internals

/// A ballot counts only if written by some guardian's device (any family: ballots do not say
/// which).
fn ballot_author_ok(roster: &RosterIndex, rec: &ObjId, written_at: i64) -> bool {
    author_of_obj(rec).is_some_and(|d| {
        roster.devices.get(&d).is_some_and(|dev| {
            dev.revoked_at.is_none_or(|r| written_at < r)
                && roster.members.get(&dev.member).is_some_and(|m| {
                    m.removed_at.is_none_or(|r| written_at < r)
                        && m.family.is_some()
                        && (m.roles.contains(&Role::Guardian) || m.roles.contains(&Role::Committee))
                })
        })
    })
}

/// One record at an answer key.
struct Rec {
    op: ObjId,
    answer: Answer,
    stamp: Hlc,
    written_at: i64,
}

fn read_recs(
    doc: &impl ReadDoc,
    objs: Vec<ObjId>,
    q: &Question,
    valid: &impl Fn(&ObjId, &Hlc, i64) -> bool,
) -> Result<Vec<Rec>, ModelError> {
    let mut out = Vec::new();
    for rec in objs {
        let (Some(stamp), Some(written_at), Some(kind), Some(value)) = (
            read_stamp(doc, &rec, "stamp")?,
            get_i64(doc, &rec, "written_at")?,
            get_str(doc, &rec, "kind")?,
            get_str(doc, &rec, "value")?,
        ) else {
            continue;
        };
        let Some(answer) = parse_answer(&kind, &value) else {
            continue;
        };
        if !fits(q, &answer) || !valid(&rec, &stamp, written_at) {
            continue;
        }
        out.push(Rec {
            op: rec,
            answer,
            stamp,
            written_at,
        });
    }
    Ok(out)
}

fn latest(recs: Vec<Rec>) -> Option<Rec> {
    recs.into_iter()
        .max_by(|a, b| (a.stamp, &a.op).cmp(&(b.stamp, &b.op)))
}

/// Resolve an answer key: last writer wins by HLC (ties by op id), then the close and seal
/// rules.
fn resolve(
    doc: &impl ReadDoc,
    map: &ObjId,
    key: &str,
    q: &Question,
    s: &Survey,
    seal: Option<&[ChangeHash]>,
    valid: impl Fn(&ObjId, &Hlc, i64) -> bool,
) -> Result<Option<AnswerView>, ModelError> {
    let Some(now) = latest(read_recs(doc, all_maps_at(doc, map, key)?, q, &valid)?) else {
        return Ok(None);
    };
    let before_close = |r: &Rec| r.written_at < s.closes_at;
    let (status, counted) = match seal {
        None if before_close(&now) => (AnswerStatus::Provisional, Some(now.answer.clone())),
        None => (AnswerStatus::Late, None),
        Some(heads) => {
            let at_seal = latest(
                read_recs(doc, all_maps_at_heads(doc, map, key, heads)?, q, &valid)?
                    .into_iter()
                    .filter(before_close)
                    .collect(),
            );
            match at_seal {
                Some(a) if a.op == now.op => (AnswerStatus::Accepted, Some(a.answer)),
                Some(a) => (AnswerStatus::Late, Some(a.answer)),
                None => (AnswerStatus::Late, None),
            }
        }
    };
    Ok(Some(AnswerView {
        question: q.id,
        answer: now.answer,
        stamp: now.stamp,
        written_at: now.written_at,
        status,
        counted,
    }))
}

fn parse_answer(kind: &str, value: &str) -> Option<Answer> {
    Some(match kind {
        "choice" => Answer::Choice(value.parse().ok()?),
        "choices" => Answer::Choices(
            value
                .split(',')
                .map(|p| p.parse().ok())
                .collect::<Option<Vec<u32>>>()?,
        ),
        "rating" => Answer::Rating(value.parse().ok()?),
        "text" => Answer::Text(value.to_string()),
        _ => return None,
    })
}

/// Staff-written seal records of a survey object.
fn seal_objs(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    survey_obj: &ObjId,
) -> Result<Vec<ObjId>, ModelError> {
    let Some(seals) = map_at(doc, survey_obj, "seals")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for key in keys(doc, &seals) {
        let Some(obj) = map_at(doc, &seals, &key)? else {
            continue;
        };
        if author_is_staff(doc, roster, &obj)? {
            out.push(obj);
        }
    }
    Ok(out)
}

fn parse_heads(s: &str) -> Option<Vec<ChangeHash>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().ok())
        .collect()
}

/// The union of sealed heads for one doc, if sealed and every sealed head is present in
/// `target` (otherwise this replica cannot tell yet: answers stay provisional).
fn usable(target: &impl ReadDoc, found: Vec<Vec<ChangeHash>>) -> Option<Vec<ChangeHash>> {
    if found.is_empty() {
        return None;
    }
    let mut heads: Vec<ChangeHash> = found.into_iter().flatten().collect();
    heads.sort();
    heads.dedup();
    let missing = target.get_missing_deps(&heads);
    if heads.iter().any(|h| missing.contains(h)) {
        return None;
    }
    Some(heads)
}

fn lane_seal(
    notebook: &impl ReadDoc,
    roster: &RosterIndex,
    survey_obj: &ObjId,
    lane: &impl ReadDoc,
    family: &FamilyId,
) -> Result<Option<Vec<ChangeHash>>, ModelError> {
    let mut found = Vec::new();
    for seal in seal_objs(notebook, roster, survey_obj)? {
        let Some(lanes) = map_at(notebook, &seal, "lanes")? else {
            continue;
        };
        if let Some(h) = get_str(notebook, &lanes, &family.to_hex())?.and_then(|s| parse_heads(&s))
        {
            found.push(h);
        }
    }
    Ok(usable(lane, found))
}

fn ballots_seal(
    notebook: &impl ReadDoc,
    roster: &RosterIndex,
    survey_obj: &ObjId,
    ballots: &impl ReadDoc,
) -> Result<Option<Vec<ChangeHash>>, ModelError> {
    let mut found = Vec::new();
    for seal in seal_objs(notebook, roster, survey_obj)? {
        if let Some(h) = get_str(notebook, &seal, "ballots")?.and_then(|s| parse_heads(&s)) {
            found.push(h);
        }
    }
    Ok(usable(ballots, found))
}

fn survey_obj(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    survey: ItemId,
) -> Result<(ObjId, Survey), ModelError> {
    let unknown = || ModelError::UnknownId {
        kind: "survey",
        id: survey.to_hex(),
    };
    let surveys = top_map(doc, "surveys")?;
    let obj = map_at(doc, &surveys, &survey.to_hex())?.ok_or_else(unknown)?;
    let s = read_survey_obj(doc, roster, &obj, survey)?.ok_or_else(unknown)?;
    Ok((obj, s))
}

fn read_survey_obj(
    doc: &impl ReadDoc,
    roster: &RosterIndex,
    obj: &ObjId,
    id: ItemId,
) -> Result<Option<Survey>, ModelError> {
    if !author_is_staff(doc, roster, obj)? {
        return Ok(None);
    }
    let (Some(opens_at), Some(planned_close)) = (
        get_i64(doc, obj, "opens_at")?,
        get_i64(doc, obj, "closes_at")?,
    ) else {
        return Ok(None);
    };
    // Early closes by staff: concurrent ones take the earliest.
    let mut closes_at = planned_close;
    for (v, op) in doc.get_all(obj, "closed_at")? {
        let Value::Scalar(sv) = v else { continue };
        let Some(at) = sv.as_i64() else { continue };
        if author_of_obj(&op).is_some_and(|d| crate::values::staff_device_at(roster, &d, at)) {
            closes_at = closes_at.min(at);
        }
    }
    let mut questions = Vec::new();
    if let Some(qs) = map_at(doc, obj, "questions")? {
        let mut indexed = Vec::new();
        for key in keys(doc, &qs) {
            let Ok(qid) = key.parse::<ItemId>() else {
                continue;
            };
            let Some(qo) = map_at(doc, &qs, &key)? else {
                continue;
            };
            let Some(kind) = get_str(doc, &qo, "kind")?.and_then(|k| QuestionKind::parse(&k))
            else {
                continue;
            };
            let mut options = Vec::new();
            if let Some((Value::Object(ObjType::List), list)) = doc.get(&qo, "options")? {
                for i in 0..doc.length(&list) {
                    if let Some((Value::Scalar(sv), _)) = doc.get(&list, i)? {
                        options.push(sv.as_str().unwrap_or_default().to_string());
                    }
                }
            }
            let scale = get_i64(doc, &qo, "scale")?
                .and_then(|x| u8::try_from(x).ok())
                .unwrap_or(0);
            indexed.push((
                get_i64(doc, &qo, "index")?.unwrap_or(i64::MAX),
                Question {
                    id: qid,
                    prompt: get_str(doc, &qo, "prompt")?.unwrap_or_default(),
                    kind,
                    options,
                    scale,
                },
            ));
        }
        indexed.sort_by_key(|(i, q)| (*i, q.id));
        questions = indexed.into_iter().map(|(_, q)| q).collect();
    }
    let sealed = !seal_objs(doc, roster, obj)?.is_empty();
    Ok(Some(Survey {
        id,
        title: get_str(doc, obj, "title")?.unwrap_or_default(),
        anonymous: get_bool(doc, obj, "anonymous")?.unwrap_or(false),
        opens_at,
        closes_at,
        grace_ms: get_i64(doc, obj, "grace_ms")?.unwrap_or(0),
        questions,
        sealed,
    }))
}
