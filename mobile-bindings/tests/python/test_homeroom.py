"""The Python bindings against a real relay process and several real devices.

Each device is a `Homeroom` on its own data folder (real SQLite, real keys); they sync over
QUIC with the relay started by the `relay` fixture.
"""

import threading
import time

import pytest

from conftest import wait_for
from homeroom_mobile import (
    ApiError,
    AnswerValue,
    BookingState,
    DeliveryState,
    EntryKind,
    EventKind,
    Membership,
    Homeroom,
    NewEntry,
    NewEvent,
    Observer,
    Role,
    SlotSpec,
    Urgency,
)

HOUR = 3_600_000


class Recorder(Observer):
    """Records every callback (called on the bindings' observer thread)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.changed_ids, self.delivered_ids, self.bookings, self.rejected, self.connection = [], [], [], [], []
        self.joined_ids, self.join_failures, self.removed_ids = [], [], []

    def class_changed(self, class_id):
        with self.lock:
            self.changed_ids.append(class_id)

    def delivered(self, class_id, count):
        with self.lock:
            self.delivered_ids.append((class_id, count))

    def booking_decided(self, class_id, booking):
        with self.lock:
            self.bookings.append((class_id, booking))

    def change_rejected(self, class_id, reason):
        with self.lock:
            self.rejected.append((class_id, reason))

    def connection_changed(self, connected):
        with self.lock:
            self.connection.append(connected)

    def joined(self, class_id):
        with self.lock:
            self.joined_ids.append(class_id)

    def join_failed(self, class_id, reason):
        with self.lock:
            self.join_failures.append((class_id, reason))

    def removed(self, class_id):
        with self.lock:
            self.removed_ids.append(class_id)


def entry(title, text):
    return NewEntry(kind=EntryKind.HOMEWORK, urgency=Urgency.AMBER, title=title, text=text, signature_requested=True)


def enroll_parents(teacher_class, parents):
    """The teacher adds each parent's family and enrolls the parent's device."""
    families = []
    for i, p in enumerate(parents):
        fam = teacher_class.add_family(f"Family {i}")
        teacher_class.add_member(f"Parent {i}", Role.GUARDIAN, fam, p.device_id())
        families.append(fam)
    return families


def the_entry(cls, entry_id):
    return next(e for e in cls.entries() if e.id == entry_id)


def test_offline_post_parents_join_by_invite_sign_and_reply_teacher_sees_all(relay, tmp_path):
    teacher = Homeroom.open(str(tmp_path / "teacher"))
    parents = [Homeroom.open(str(tmp_path / f"parent{i}")) for i in range(2)]
    class_id = teacher.create_class("Class 3B", "Ms Li")
    assert [c.id for c in teacher.classes()] == [class_id]
    assert teacher.classes()[0].roles == [Role.HEAD_TEACHER]
    assert teacher.classes()[0].membership == Membership.MEMBER()
    cls = teacher.classroom(class_id)

    # Offline: the post is saved on this device only.
    posted = cls.post_entry(entry("Maths", "Page 12, exercises 1-4"))
    e = the_entry(cls, posted.entry_id)
    assert e.title == "Maths" and e.kind == EntryKind.HOMEWORK
    assert e.delivery == DeliveryState.SAVED_LOCALLY
    status = teacher.sync_status()
    assert not status.connected and status.pending > 0 and status.last_delivered_ms is None

    observer = Recorder()
    teacher.set_observer(observer)
    teacher.start_sync(relay.address, relay.fingerprint)
    wait_for("teacher's offline post delivered",
             lambda: the_entry(cls, posted.entry_id).delivery == DeliveryState.DELIVERED)
    wait_for("teacher pending drains", lambda: teacher.sync_status().pending == 0)
    assert teacher.sync_status().connected
    assert teacher.sync_status().last_delivered_ms is not None
    wait_for("observer hears the delivery", lambda: any(c == class_id for c, _ in observer.delivered_ids))
    assert True in observer.connection

    # Parents join by invite: the code carries the relay, so join() starts sync by itself.
    families = [cls.add_family(f"Family {i}") for i in range(len(parents))]
    recorders = []
    for i, p in enumerate(parents):
        code = teacher.create_invite(class_id, Role.GUARDIAN, families[i])
        r = Recorder()
        p.set_observer(r)
        recorders.append(r)
        assert p.join(code, f"Parent {i}") == class_id
    sigs, replies = [], []
    for i, (p, r) in enumerate(zip(parents, recorders)):
        wait_for("parent's join completes", lambda: [c.membership for c in p.classes()] == [Membership.MEMBER()])
        wait_for("parent's observer hears the join", lambda: r.joined_ids == [class_id])
        assert p.classes()[0].family_id == families[i]
        assert p.classes()[0].roles == [Role.GUARDIAN]
        pc = p.classroom(class_id)
        wait_for("parent receives the entry", lambda: len(pc.entries()) == 1)
        assert pc.entries()[0].text == "Page 12, exercises 1-4"
        sig = pc.sign(posted.entry_id)
        pub = pc.reply(posted.entry_id, f"Done, from family {i}", True)
        priv = pc.reply(posted.entry_id, f"Private note {i}", False)
        assert pc.delivery_state(sig) in (DeliveryState.SAVED_LOCALLY, DeliveryState.DELIVERED)
        sigs.append(sig)
        replies.append((pub, priv))
    for (p, sig, (pub, priv)) in zip(parents, sigs, replies):
        pc = p.classroom(class_id)
        wait_for("parent's signature and replies delivered", lambda: all(
            pc.delivery_state(x) == DeliveryState.DELIVERED for x in (sig, pub, priv)))
        mine = the_entry(pc, posted.entry_id)
        assert [s.delivery for s in mine.signatures] == [DeliveryState.DELIVERED]

    # A parent cannot invite; a mistyped code names the field.
    with pytest.raises(ApiError.NotAllowed):
        parents[0].create_invite(class_id, Role.GUARDIAN, families[0])
    with pytest.raises(ApiError.InvalidInput) as err:
        Homeroom.open(str(tmp_path / "stranger")).join("HR-NOT-A-CODE", "Someone")
    assert err.value.field == "invite_code"

    # The teacher sees every signature and reply; the observer heard the class change.
    def teacher_sees_all():
        e = the_entry(cls, posted.entry_id)
        return (len(e.signatures) == 2 and len(e.public_replies) == 2 and len(e.private_replies) == 2)
    wait_for("teacher sees all signatures and replies", teacher_sees_all)
    e = the_entry(cls, posted.entry_id)
    assert sorted(s.family_id for s in e.signatures) == sorted(families)
    assert sorted(r.text for r in e.public_replies) == ["Done, from family 0", "Done, from family 1"]
    assert all(r.delivery == DeliveryState.NOT_LOCAL for r in e.public_replies)
    assert class_id in observer.changed_ids

    # A parent sees only its own family's private reply.
    p0 = parents[0].classroom(class_id)
    wait_for("parent 0 sees the other family's public reply",
             lambda: len(the_entry(p0, posted.entry_id).public_replies) == 2)
    assert [r.text for r in the_entry(p0, posted.entry_id).private_replies] == ["Private note 0"]

    # An edit reaches the parents as a new revision.
    rev = cls.edit_entry(posted.entry_id, "Maths", "Page 12, exercises 1-6", True)
    wait_for("parent sees the revision", lambda: the_entry(p0, posted.entry_id).revision_id == rev)
    assert len(the_entry(p0, posted.entry_id).revisions) == 2

    for h in [teacher, *parents]:
        h.stop_sync()
    assert not teacher.sync_status().connected or True  # stop returns promptly either way


def test_parent_is_not_allowed_and_bad_input_names_the_field(tmp_path):
    teacher = Homeroom.open(str(tmp_path / "teacher"))
    parent = Homeroom.open(str(tmp_path / "parent"))
    class_id = teacher.create_class("Class 1A", "Mr Ode")
    cls = teacher.classroom(class_id)
    fam = cls.add_family("Family A")
    cls.add_member("Parent A", Role.GUARDIAN, fam, parent.device_id())

    # Bad input names the field.
    with pytest.raises(ApiError.InvalidInput) as err:
        cls.post_entry(entry("Maths", "   "))
    assert err.value.field == "text"
    with pytest.raises(ApiError.InvalidInput) as err:
        cls.post_entry(entry("x" * 10_000, "text"))
    assert err.value.field == "title"
    with pytest.raises(ApiError.InvalidInput) as err:
        teacher.classroom("not-a-class")
    assert err.value.field == "class_id"
    with pytest.raises(ApiError.InvalidInput) as err:
        teacher.start_sync("127.0.0.1:1", "abc")
    assert err.value.field == "cert_fingerprint"
    with pytest.raises(ApiError.InvalidInput) as err:
        teacher.start_sync("nowhere", "00" * 32)
    assert err.value.field == "relay_address"
    with pytest.raises(ApiError.InvalidInput) as err:
        cls.sign("zz")
    assert err.value.field == "entry_id"
    with pytest.raises(ApiError.NotFound):
        teacher.classroom("00" * 16)

    # Teachers cannot sign; a parent cannot post, edit the roster or create events.
    posted = cls.post_entry(entry("Trip", "Zoo on Friday"))
    with pytest.raises(ApiError.NotAllowed):
        cls.sign(posted.entry_id)
    # The parent holds the class only once synced; give it a copy through a relay-less path:
    # it is not a member of anything yet.
    with pytest.raises(ApiError.NotFound):
        parent.classroom(class_id)


def test_parent_teacher_actions_not_allowed_and_booking_decided_reaches_the_parent(relay, tmp_path):
    teacher = Homeroom.open(str(tmp_path / "teacher"))
    parent = Homeroom.open(str(tmp_path / "parent"))
    class_id = teacher.create_class("Class 2C", "Ms Ng")
    cls = teacher.classroom(class_id)
    [fam] = enroll_parents(cls, [parent])
    now = int(time.time() * 1000)
    created = cls.create_event(
        NewEvent(kind=EventKind.CONFERENCE, title="Conferences", location="Room 4",
                 starts_at=now + HOUR, ends_at=now + 3 * HOUR, waitlist=False),
        [SlotSpec(start=now + HOUR, end=now + HOUR + 900_000, capacity=1)],
    )
    teacher.start_sync(relay.address, relay.fingerprint)
    parent_events = Recorder()
    parent.set_observer(parent_events)
    parent.start_sync(relay.address, relay.fingerprint)
    wait_for("parent receives the class", lambda: len(parent.classes()) == 1)
    pc = parent.classroom(class_id)
    wait_for("parent sees the event", lambda: len(pc.events()) == 1)
    ev = pc.events()[0]
    assert ev.title == "Conferences" and [s.id for s in ev.slots] == created.slot_ids

    # Teacher's actions are refused for a parent, with NotAllowed.
    with pytest.raises(ApiError.NotAllowed):
        pc.post_entry(entry("Hi", "from a parent"))
    with pytest.raises(ApiError.NotAllowed):
        pc.add_family("Intruders")
    with pytest.raises(ApiError.NotAllowed):
        pc.decide_bookings()
    with pytest.raises(ApiError.NotAllowed):
        pc.create_event(NewEvent(kind=EventKind.LECTURE, title="x", location="", starts_at=now,
                                 ends_at=now + HOUR, waitlist=False), [])

    # The parent books; the teacher decides; the parent's observer hears it.
    req = pc.request_booking(created.id, created.slot_ids[0], None, "after 4pm please")
    assert [b.state for b in pc.bookings(None)] == [BookingState.PENDING()]
    wait_for("teacher receives the request", lambda: len(cls.bookings(fam)) == 1)
    decisions = cls.decide_bookings()
    assert [(d.request_id, d.outcome) for d in decisions] == [(req, "Confirmed")]
    wait_for("parent's observer hears the decision", lambda: len(parent_events.bookings) == 1)
    c, booking = parent_events.bookings[0]
    assert c == class_id and booking.request_id == req and booking.state == BookingState.CONFIRMED()
    assert pc.bookings(None)[0].state == BookingState.CONFIRMED()

    # Private thread and a survey answer travel the same way.
    pc.post_thread_message(None, "Can we talk about reading?")
    wait_for("teacher reads the thread", lambda: [m.text for m in cls.thread(fam)] == ["Can we talk about reading?"])
    teacher.stop_sync()
    parent.stop_sync()


def test_calls_do_not_wait_for_an_unreachable_relay(tmp_path):
    """Nothing listens on the relay address: sync keeps retrying in the background while
    every call still returns at once and writes are saved locally."""
    hr = Homeroom.open(str(tmp_path / "teacher"))
    class_id = hr.create_class("Class 4D", "Mr Park")
    cls = hr.classroom(class_id)
    start = time.monotonic()
    hr.start_sync("127.0.0.1:9", "00" * 32)
    with pytest.raises(ApiError.InvalidState):
        hr.start_sync("127.0.0.1:9", "00" * 32)  # already running
    posted = cls.post_entry(entry("Art", "Bring crayons"))
    assert the_entry(cls, posted.entry_id).delivery == DeliveryState.SAVED_LOCALLY
    status = hr.sync_status()
    hr.stop_sync()
    elapsed = time.monotonic() - start
    assert not status.connected and status.pending > 0
    # Generous: a blocking connect attempt would take the QUIC handshake timeout (seconds).
    assert elapsed < 3.0, f"calls took {elapsed:.2f}s with an unreachable relay"
    hr.start_sync("127.0.0.1:9", "00" * 32)  # stop really stopped: it can start again
    hr.stop_sync()


def test_activities_round_trip_between_a_parent_and_the_teacher(relay, tmp_path):
    """Surveys, leave, duty claims, sign-up chains and homework minutes: the parent writes,
    the teacher sees and decides, the parent sees the decision."""
    from homeroom_mobile import (ChainPlace, DutyKind, LeaveKind, LeaveStatus, NewChain,
                                 NewDutyPost, NewLeave, NewQuestion, NewSurvey, QuestionKind)
    teacher = Homeroom.open(str(tmp_path / "teacher"))
    parent = Homeroom.open(str(tmp_path / "parent"))
    class_id = teacher.create_class("Class 5E", "Ms Roy")
    cls = teacher.classroom(class_id)
    [fam] = enroll_parents(cls, [parent])
    student = cls.add_student(fam, "Sam")
    now = int(time.time() * 1000)
    survey = cls.create_survey(NewSurvey(title="Trip", opens_at=now - HOUR, closes_at=now + HOUR, grace_ms=0,
                                         questions=[NewQuestion(prompt="Where?", kind=QuestionKind.SINGLE_CHOICE,
                                                                options=["Zoo", "Museum"], max_rating=0)]))
    post = cls.create_duty_post(NewDutyPost(kind=DutyKind.TRAFFIC, title="Gate", location="North gate"),
                                [SlotSpec(start=now + HOUR, end=now + 2 * HOUR, capacity=1)])
    chain = cls.create_chain(NewChain(title="Cakes", description="Bake sale", one_per_student=False,
                                      capacity=None, closes_at=None))
    hw = cls.post_entry(entry("Reading", "Chapter 3"))
    teacher.start_sync(relay.address, relay.fingerprint)
    parent.start_sync(relay.address, relay.fingerprint)
    wait_for("parent receives the class", lambda: len(parent.classes()) == 1)
    pc = parent.classroom(class_id)
    wait_for("parent sees survey, post, chain, entry", lambda: (
        len(pc.surveys()) == 1 and len(pc.duty_posts()) == 1 and len(pc.chains()) == 1 and len(pc.entries()) == 1))

    q = pc.surveys()[0].questions[0]
    pc.answer_survey(survey, q.id, AnswerValue.CHOICE(index=1))
    leave = pc.request_leave(NewLeave(student_id=student, starts_at=now, ends_at=now + HOUR, kind=LeaveKind.SICK,
                                      reason="flu"))
    claim = pc.claim_shift(post.id, post.slot_ids[0])
    pc.add_chain_line(chain, None, "Lemon cake")
    pc.report_minutes(hw.entry_id, student, now // 86_400_000, 25)
    with pytest.raises(ApiError.NotAllowed):
        pc.decide_leave(fam, leave, True, "")

    wait_for("teacher sees the answer", lambda: cls.survey_results(survey).respondents == 1)
    assert cls.survey_results(survey).questions[0].counts == [0, 1]
    wait_for("teacher sees the leave request", lambda: [l.id for l in cls.leave_requests(None)] == [leave])
    cls.decide_leave(fam, leave, True, "Get well soon")
    wait_for("teacher sees the claim", lambda: [c.id for c in cls.claims(fam)] == [claim])
    assert [d.outcome for d in cls.decide_claims()] == ["Confirmed"]
    wait_for("teacher sees the chain line", lambda: [l.text for l in cls.chains()[0].lines] == ["Lemon cake"])
    assert cls.chains()[0].lines[0].place == ChainPlace.PLACED(number=1)
    wait_for("teacher sees the minutes", lambda: [h.minutes for h in cls.homework(fam)] == [25])

    wait_for("parent sees the leave approved",
             lambda: [(l.status, l.comment) for l in pc.leave_requests(None)] == [(LeaveStatus.APPROVED, "Get well soon")])
    wait_for("parent sees the claim confirmed", lambda: [c.state for c in pc.claims(None)] == [BookingState.CONFIRMED()])
    assert [a.answer for a in pc.survey_answers(survey, None)] == [AnswerValue.CHOICE(index=1)]
    teacher.stop_sync()
    parent.stop_sync()
