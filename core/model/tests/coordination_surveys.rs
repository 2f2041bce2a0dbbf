//! Surveys: "survey answer changed on two devices" — last writer wins per question by HLC;
//! answers written before close are accepted if they arrive within the grace window,
//! otherwise recorded as late — plus anonymous ballots and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod coordination_support;

use automerge::{Automerge, ReadDoc};
use coordination_support::*;
use homeroom_core::surveys::{self, Answer, AnswerStatus, NewQuestion, NewSurvey, QuestionSpec};
use homeroom_core::{ItemId, ModelError, SeededIds};

const CLOSE: i64 = T0 + DAY;
const GRACE: i64 = 2 * HOUR;

fn new_survey(anonymous: bool) -> NewSurvey<'static> {
    const QS: &[NewQuestion<'static>] = &[
        NewQuestion {
            prompt: "How was the trip?",
            spec: QuestionSpec::Rating { max: 5 },
        },
        NewQuestion {
            prompt: "Which topics?",
            spec: QuestionSpec::MultiChoice(&["maths", "art", "sport"]),
        },
        NewQuestion {
            prompt: "Anything else?",
            spec: QuestionSpec::Text,
        },
    ];
    NewSurvey {
        title: "Spring trip",
        anonymous,
        opens_at: T0,
        closes_at: CLOSE,
        grace_ms: GRACE,
        questions: QS,
    }
}

fn setup(anonymous: bool) -> (Class, SeededIds, Automerge, ItemId, Vec<ItemId>) {
    let c = Class::new();
    let mut ids = SeededIds::new(21);
    let mut nb = c.replica(c.notebook());
    let (sid, qs) = edit(&mut nb, c.t1, 1, |tx| {
        surveys::create_survey(tx, &c.actor(c.t1, T0), &mut ids, &new_survey(anonymous))
    })
    .unwrap();
    (c, ids, nb, sid, qs)
}

#[test]
fn an_answer_changed_on_two_devices_resolves_last_writer_wins_by_hlc() {
    let (c, _, nb, sid, qs) = setup(false);
    let mut a = c.replica(c.lane(c.f1));
    let mut b = c.replica(c.lane(c.f1));
    // Two guardians of family 1, offline, answer the rating question.
    edit(&mut a, c.g1a, 2, |tx| {
        surveys::answer(
            tx,
            &c.actor(c.g1a, T0 + 300),
            &nb,
            c.f1,
            sid,
            qs[0],
            &Answer::Rating(2),
        )
    })
    .unwrap();
    edit(&mut b, c.g1b, 3, |tx| {
        surveys::answer(
            tx,
            &c.actor(c.g1b, T0 + 200),
            &nb,
            c.f1,
            sid,
            qs[0],
            &Answer::Rating(5),
        )
    })
    .unwrap();
    sync(&mut a, &mut b);
    for lane in [&a, &b] {
        let v = surveys::family_answers(&nb, lane, &c.roster, c.f1, sid).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].answer,
            Answer::Rating(2),
            "greatest HLC (the later wall clock) wins"
        );
        assert_eq!(v[0].status, AnswerStatus::Provisional);
    }
    // Both records are there (nothing vanished), Automerge just shows a conflict.
    let answers = match a.get(automerge::ROOT, "answers").unwrap() {
        Some((_, id)) => id,
        None => panic!("no answers map"),
    };
    assert_eq!(
        a.get_all(&answers, format!("{sid}.{}", qs[0]))
            .unwrap()
            .len(),
        2
    );

    // Guardian B, whose clock lags, changes the answer after seeing A's: B's is now later.
    edit(&mut b, c.g1b, 3, |tx| {
        surveys::answer(
            tx,
            &c.actor(c.g1b, T0 + 250),
            &nb,
            c.f1,
            sid,
            qs[0],
            &Answer::Rating(4),
        )
    })
    .unwrap();
    sync(&mut a, &mut b);
    let v = surveys::family_answers(&nb, &a, &c.roster, c.f1, sid).unwrap();
    assert_eq!(v[0].answer, Answer::Rating(4));
    assert_eq!(v[0].stamp.device, c.g1b);
}

#[test]
fn answers_arriving_after_the_grace_window_are_recorded_as_late() {
    let (c, mut ids, mut nb, sid, qs) = setup(false);
    // Family 1 answers and syncs in time; family 2 answers before close but stays offline.
    let mut l1 = c.replica(c.lane(c.f1));
    let mut l2_phone = c.replica(c.lane(c.f2));
    let mut l2_school = c.replica(c.lane(c.f2));
    edit(&mut l1, c.g1a, 2, |tx| {
        surveys::answer(
            tx,
            &c.actor(c.g1a, T0 + 10),
            &nb,
            c.f1,
            sid,
            qs[0],
            &Answer::Rating(4),
        )
    })
    .unwrap();
    edit(&mut l2_phone, c.g2, 3, |tx| {
        surveys::answer(
            tx,
            &c.actor(c.g2, T0 + 10),
            &nb,
            c.f2,
            sid,
            qs[0],
            &Answer::Rating(3),
        )
    })
    .unwrap();
    // The rating reaches the school in time; the next answer does not.
    l2_school.merge(&mut l2_phone).unwrap();
    edit(&mut l2_phone, c.g2, 3, |tx| {
        surveys::answer(
            tx,
            &c.actor(c.g2, CLOSE - 1),
            &nb,
            c.f2,
            sid,
            qs[1],
            &Answer::Choices(vec![0, 2]),
        )
    })
    .unwrap();
    // Answering after close is refused.
    let r = edit(&mut l1, c.g1a, 2, |tx| {
        surveys::answer(
            tx,
            &c.actor(c.g1a, CLOSE),
            &nb,
            c.f1,
            sid,
            qs[1],
            &Answer::Choices(vec![1]),
        )
    });
    assert!(matches!(r, Err(ModelError::InvalidState(_))), "{r:?}");
    let nb_before_seal = fork(&nb);
    // Sealing before close + grace is refused; after it, it records what arrived.
    let lanes = [(c.f1, &l1), (c.f2, &l2_school)];
    let r = edit(&mut nb, c.t1, 1, |tx| {
        surveys::seal_survey(
            tx,
            &c.actor(c.t1, CLOSE + GRACE - 1),
            &mut ids,
            sid,
            &lanes,
            None,
        )
    });
    assert!(matches!(r, Err(ModelError::InvalidState(_))), "{r:?}");
    edit(&mut nb, c.t1, 1, |tx| {
        surveys::seal_survey(
            tx,
            &c.actor(c.t1, CLOSE + GRACE),
            &mut ids,
            sid,
            &lanes,
            None,
        )
    })
    .unwrap();
    let r = edit(&mut nb, c.t1, 1, |tx| {
        surveys::seal_survey(
            tx,
            &c.actor(c.t1, CLOSE + GRACE),
            &mut ids,
            sid,
            &lanes,
            None,
        )
    });
    assert!(
        matches!(r, Err(ModelError::InvalidState(_))),
        "sealed twice: {r:?}"
    );

    // The rest of family 2's lane arrives after the seal.
    l2_school.merge(&mut l2_phone).unwrap();
    let v1 = surveys::family_answers(&nb, &l1, &c.roster, c.f1, sid).unwrap();
    assert_eq!(v1[0].status, AnswerStatus::Accepted);
    let v2 = surveys::family_answers(&nb, &l2_school, &c.roster, c.f2, sid).unwrap();
    assert_eq!(v2.len(), 2, "a late answer is kept");
    assert_eq!(
        (v2[0].question, v2[0].status),
        (qs[0], AnswerStatus::Accepted)
    );
    assert_eq!(
        (v2[1].question, v2[1].status, v2[1].counted.clone()),
        (qs[1], AnswerStatus::Late, None)
    );

    let res = surveys::survey_results::<Automerge, Automerge>(
        &nb,
        &[(c.f1, &l1), (c.f2, &l2_school)],
        None,
        &c.roster,
        sid,
    )
    .unwrap();
    assert_eq!(res.respondents, 2);
    assert_eq!(
        (res.questions[0].responses, res.questions[0].rating_sum),
        (2, 7)
    );
    assert_eq!((res.questions[1].responses, res.questions[1].late), (0, 1));
    assert_eq!(res.questions[1].counts, vec![0, 0, 0]);

    // A reader that has not seen the seal yet keeps both answers provisional.
    let unsealed =
        surveys::family_answers(&nb_before_seal, &l2_school, &c.roster, c.f2, sid).unwrap();
    assert_eq!(
        unsealed.iter().map(|v| v.status).collect::<Vec<_>>(),
        vec![AnswerStatus::Provisional; 2]
    );
}

#[test]
fn anonymous_answers_go_to_ballots_under_one_time_tokens_and_collapse_per_family() {
    let (c, _, nb, sid, qs) = setup(true);
    let secret1 = [0x51u8; 32];
    let secret2 = [0x52u8; 32];
    let mut b1 = c.replica(c.ballots());
    let mut b2 = c.replica(c.ballots());
    let mut b3 = c.replica(c.ballots());
    // Two guardians of family 1 (same family secret) and one of family 2, all offline.
    edit(&mut b1, c.g1a, 2, |tx| {
        surveys::answer_anonymously(
            tx,
            &c.actor(c.g1a, T0 + 10),
            &nb,
            &secret1,
            sid,
            qs[2],
            &Answer::Text("More art".into()),
        )
    })
    .unwrap();
    edit(&mut b2, c.g1b, 3, |tx| {
        surveys::answer_anonymously(
            tx,
            &c.actor(c.g1b, T0 + 20),
            &nb,
            &secret1,
            sid,
            qs[2],
            &Answer::Text("Less homework".into()),
        )
    })
    .unwrap();
    edit(&mut b3, c.g2, 4, |tx| {
        surveys::answer_anonymously(
            tx,
            &c.actor(c.g2, T0 + 30),
            &nb,
            &secret2,
            sid,
            qs[2],
            &Answer::Text("Great".into()),
        )
    })
    .unwrap();
    sync(&mut b1, &mut b2);
    sync(&mut b1, &mut b3);
    sync(&mut b2, &mut b3);
    let res = surveys::survey_results::<Automerge, Automerge>(&nb, &[], Some(&b1), &c.roster, sid)
        .unwrap();
    assert_eq!(res.respondents, 2, "a family answering twice counts once");
    let mut texts = res.questions[2].texts.clone();
    texts.sort();
    assert_eq!(
        texts,
        vec!["Great".to_string(), "Less homework".to_string()]
    );
    assert_eq!(
        res,
        surveys::survey_results::<Automerge, Automerge>(&nb, &[], Some(&b3), &c.roster, sid)
            .unwrap()
    );
    // The ballots name no family and no device in their content.
    let ballots = match b1.get(automerge::ROOT, "ballots").unwrap() {
        Some((_, id)) => id,
        None => panic!("no ballots map"),
    };
    for key in b1.keys(&ballots) {
        for fam in [c.f1, c.f2] {
            assert!(!key.contains(&fam.to_hex()));
        }
    }
    let mine = surveys::ballot_answers(&nb, &b1, &c.roster, &secret1, sid).unwrap();
    assert_eq!(mine[0].answer, Answer::Text("Less homework".into()));
    assert_eq!(mine[0].stamp.device, homeroom_core::DeviceId([0; 32]));
    // Named answers are refused for an anonymous survey, and vice versa.
    let mut lane = c.replica(c.lane(c.f1));
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        surveys::answer(
            tx,
            &c.actor(c.g1a, T0),
            &nb,
            c.f1,
            sid,
            qs[0],
            &Answer::Rating(3),
        )
    });
    assert!(matches!(r, Err(ModelError::InvalidState(_))));
    let r = edit(&mut b1, c.t1, 1, |tx| {
        surveys::answer_anonymously(
            tx,
            &c.actor(c.t1, T0),
            &nb,
            &secret1,
            sid,
            qs[0],
            &Answer::Rating(3),
        )
    });
    assert!(
        matches!(r, Err(ModelError::NotAllowed(_))),
        "staff do not vote"
    );
}

#[test]
fn bad_survey_input_is_a_typed_error() {
    let (c, mut ids, mut nb, sid, qs) = setup(false);
    let staff = c.actor(c.t1, T0);
    let field = |r: Result<(ItemId, Vec<ItemId>), ModelError>| match r {
        Err(ModelError::InvalidInput { field, .. }) => field,
        other => panic!("expected InvalidInput, got {other:?}"),
    };
    let mut create = |s: NewSurvey<'_>| {
        edit(&mut nb, c.t1, 1, |tx| {
            surveys::create_survey(tx, &staff, &mut ids, &s)
        })
    };
    assert_eq!(
        field(create(NewSurvey {
            title: "",
            ..new_survey(false)
        })),
        "title"
    );
    assert_eq!(
        field(create(NewSurvey {
            closes_at: T0,
            ..new_survey(false)
        })),
        "closes_at"
    );
    assert_eq!(
        field(create(NewSurvey {
            grace_ms: -1,
            ..new_survey(false)
        })),
        "grace_ms"
    );
    assert_eq!(
        field(create(NewSurvey {
            questions: &[],
            ..new_survey(false)
        })),
        "questions"
    );
    let one = [NewQuestion {
        prompt: "Pick",
        spec: QuestionSpec::SingleChoice(&["only"]),
    }];
    assert_eq!(
        field(create(NewSurvey {
            questions: &one,
            ..new_survey(false)
        })),
        "options"
    );
    let scale = [NewQuestion {
        prompt: "Rate",
        spec: QuestionSpec::Rating { max: 11 },
    }];
    assert_eq!(
        field(create(NewSurvey {
            questions: &scale,
            ..new_survey(false)
        })),
        "max"
    );

    let mut lane = c.replica(c.lane(c.f1));
    let mut ans = |now: i64, q: ItemId, a: Answer| {
        edit(&mut lane, c.g1a, 2, |tx| {
            surveys::answer(tx, &c.actor(c.g1a, now), &nb, c.f1, sid, q, &a)
        })
    };
    assert!(matches!(
        ans(T0 + 1, qs[0], Answer::Rating(6)),
        Err(ModelError::InvalidInput {
            field: "answer",
            ..
        })
    ));
    assert!(matches!(
        ans(T0 + 1, qs[0], Answer::Rating(0)),
        Err(ModelError::InvalidInput {
            field: "answer",
            ..
        })
    ));
    assert!(matches!(
        ans(T0 + 1, qs[0], Answer::Text("5".into())),
        Err(ModelError::InvalidInput {
            field: "answer",
            ..
        })
    ));
    assert!(matches!(
        ans(T0 + 1, qs[1], Answer::Choices(vec![1, 1])),
        Err(ModelError::InvalidInput {
            field: "answer",
            ..
        })
    ));
    assert!(matches!(
        ans(T0 + 1, qs[1], Answer::Choices(vec![3])),
        Err(ModelError::InvalidInput {
            field: "answer",
            ..
        })
    ));
    assert!(matches!(
        ans(T0 + 1, qs[2], Answer::Text("  ".into())),
        Err(ModelError::InvalidInput {
            field: "answer",
            ..
        })
    ));
    assert!(matches!(
        ans(T0 + 1, ItemId([1; 8]), Answer::Rating(1)),
        Err(ModelError::UnknownId {
            kind: "question",
            ..
        })
    ));
    assert!(
        matches!(
            ans(T0 - 1, qs[0], Answer::Rating(1)),
            Err(ModelError::InvalidState(_))
        ),
        "not open yet"
    );
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        surveys::answer(
            tx,
            &c.actor(c.g1a, T0),
            &nb,
            c.f1,
            ItemId([1; 8]),
            qs[0],
            &Answer::Rating(1),
        )
    });
    assert!(matches!(
        r,
        Err(ModelError::UnknownId { kind: "survey", .. })
    ));
    // Closing early takes effect.
    edit(&mut nb, c.t2, 4, |tx| {
        surveys::close_survey(tx, &c.actor(c.t2, T0 + HOUR), sid)
    })
    .unwrap();
    assert_eq!(
        surveys::read_survey(&nb, &c.roster, sid).unwrap().closes_at,
        T0 + HOUR
    );
    let r = edit(&mut lane, c.g1a, 2, |tx| {
        surveys::answer(
            tx,
            &c.actor(c.g1a, T0 + HOUR),
            &nb,
            c.f1,
            sid,
            qs[0],
            &Answer::Rating(1),
        )
    });
    assert!(matches!(r, Err(ModelError::InvalidState(_))));
    assert!(
        surveys::family_answers(&nb, &lane, &c.roster, c.f1, sid)
            .unwrap()
            .is_empty()
    );
}
