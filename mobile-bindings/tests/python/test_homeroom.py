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
        self.joined_ids, self.join_failures, self.removed_ids, self.not_found = [], [], [], []

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

    def invite_not_found(self, invite_id):
        with self.lock:
            self.not_found.append(invite_id)


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
    assert e.author == teacher.device_id()  # the posting device's id
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
        assert pc.entries()[0].author == teacher.device_id()
        # Offline (sync stopped): what the parent writes is saved on the phone only...
        p.stop_sync()
        wait_for("parent is offline", lambda: not p.sync_status().connected)
        sig = pc.sign(posted.entry_id)
        pub = pc.reply(posted.entry_id, f"Done, from family {i}", True)
        priv = pc.reply(posted.entry_id, f"Private note {i}", False)
        time.sleep(0.2)
        for x in (sig, pub, priv):
            assert pc.delivery_state(x) == DeliveryState.SAVED_LOCALLY
        assert [s.delivery for s in the_entry(pc, posted.entry_id).signatures] == [DeliveryState.SAVED_LOCALLY]
        assert p.sync_status().pending > 0
        # ...and delivered once sync runs again.
        p.start_sync(relay.address, relay.fingerprint)
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

    start = time.monotonic()
    for h in [teacher, *parents]:
        h.stop_sync()
    assert time.monotonic() - start < 1.0, "stop_sync returns at once"
    for h in [teacher, *parents]:
        wait_for("sync stopped", lambda: not h.sync_status().connected)


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


def test_lan_sync_without_a_relay(tmp_path):
    """No relay at all: a teacher's phone and a parent's phone sync directly over the LAN
    (manual discovery on loopback, deterministic where multicast is filtered)."""
    teacher = Homeroom.open(str(tmp_path / "teacher"))
    parent = Homeroom.open(str(tmp_path / "parent"))
    class_id = teacher.create_class("Class 6F", "Ms Ito")
    cls = teacher.classroom(class_id)
    fam = cls.add_family("Family F")
    member = cls.add_member("Parent F", Role.GUARDIAN, fam, None)
    cls.enroll_device(member, parent.device_id())
    posted = cls.post_entry(entry("Science", "Bring a leaf"))

    # Bad input and wrong order are refused before anything starts.
    with pytest.raises(ApiError.InvalidState):
        parent.add_lan_peer("abc", "127.0.0.1:1")
    with pytest.raises(ApiError.InvalidInput) as err:
        parent.start_lan_sync_manual("not an address")
    assert err.value.field == "bind_address"

    t_ad = teacher.start_lan_sync_manual("127.0.0.1:0")
    p_ad = parent.start_lan_sync_manual("127.0.0.1:0")
    assert t_ad.port != 0 and p_ad.port != 0 and t_ad.instance != p_ad.instance
    with pytest.raises(ApiError.InvalidState):
        parent.start_lan_sync_manual("127.0.0.1:0")  # already running
    with pytest.raises(ApiError.InvalidInput) as err:
        parent.add_lan_peer(t_ad.instance, "127.0.0.1")  # no port
    assert err.value.field == "address"
    teacher.add_lan_peer(p_ad.instance, f"127.0.0.1:{p_ad.port}")
    parent.add_lan_peer(t_ad.instance, f"127.0.0.1:{t_ad.port}")

    # The parent joins the class from the teacher's phone and reads the entry.
    wait_for("parent receives the class over the LAN", lambda: [c.id for c in parent.classes()] == [class_id])
    pc = parent.classroom(class_id)
    wait_for("parent receives the entry over the LAN", lambda: [e.id for e in pc.entries()] == [posted.entry_id])
    got = the_entry(pc, posted.entry_id)
    assert got.text == "Bring a leaf" and got.author == teacher.device_id()
    wait_for("each lists the other as a LAN peer", lambda: (
        parent.device_id() in teacher.sync_status().lan_peers
        and teacher.device_id() in parent.sync_status().lan_peers))
    assert not teacher.sync_status().connected and not parent.sync_status().connected

    # The parent signs; the teacher sees it over the LAN. A peer is not the school's relay:
    # the signature stays SavedLocally on the parent's phone.
    sig = pc.sign(posted.entry_id)
    wait_for("teacher sees the signature over the LAN",
             lambda: [s.id for s in the_entry(cls, posted.entry_id).signatures] == [sig])
    seen = the_entry(cls, posted.entry_id).signatures[0]
    assert seen.family_id == fam and seen.device_id == parent.device_id()
    assert seen.delivery == DeliveryState.NOT_LOCAL
    time.sleep(0.5)
    assert pc.delivery_state(sig) == DeliveryState.SAVED_LOCALLY
    assert [s.delivery for s in the_entry(pc, posted.entry_id).signatures] == [DeliveryState.SAVED_LOCALLY]
    assert parent.sync_status().pending > 0

    # Stopping returns at once and the peers go away.
    start = time.monotonic()
    teacher.stop_lan_sync()
    parent.stop_lan_sync()
    assert time.monotonic() - start < 1.0
    wait_for("teacher's LAN peers empty", lambda: teacher.sync_status().lan_peers == [])
    wait_for("parent's LAN peers empty", lambda: parent.sync_status().lan_peers == [])
    with pytest.raises(ApiError.InvalidState):
        parent.add_lan_peer(t_ad.instance, f"127.0.0.1:{t_ad.port}")  # stopped
    # It can start again right away.
    again = parent.start_lan_sync_manual("127.0.0.1:0")
    assert again.instance != p_ad.instance
    parent.stop_lan_sync()


def test_a_change_written_offline_by_a_revoked_phone_is_rejected(relay, tmp_path):
    """The teacher revokes a parent's phone while it is offline; the phone, not knowing yet,
    signs an entry; when it reconnects the relay refuses the signature: the observer's
    `change_rejected` fires for the class, the phone learns it was removed, and the
    signature is gone from its view and never reaches the teacher."""
    teacher = Homeroom.open(str(tmp_path / "teacher"))
    b = Homeroom.open(str(tmp_path / "parent-b"))
    class_id = teacher.create_class("Class 7G", "Mr Kim")
    cls = teacher.classroom(class_id)
    enroll_parents(cls, [b])
    posted = cls.post_entry(entry("Trip", "Please sign"))
    teacher.start_sync(relay.address, relay.fingerprint)
    events = Recorder()
    b.set_observer(events)
    b.start_sync(relay.address, relay.fingerprint)
    wait_for("B receives the entry",
             lambda: len(b.classes()) == 1 and len(b.classroom(class_id).entries()) == 1)
    bc = b.classroom(class_id)

    b.stop_sync()
    wait_for("B is offline", lambda: not b.sync_status().connected)
    cls.revoke_device(b.device_id())
    wait_for("the revocation reaches the relay", lambda: teacher.sync_status().pending == 0)

    # Offline, B does not know: its signature is saved locally and shows in its view.
    sig = bc.sign(posted.entry_id)
    assert bc.delivery_state(sig) == DeliveryState.SAVED_LOCALLY
    assert [s.id for s in the_entry(bc, posted.entry_id).signatures] == [sig]
    assert b.sync_status().pending > 0
    assert events.rejected == []

    b.start_sync(relay.address, relay.fingerprint)
    wait_for("B's observer hears the rejection", lambda: len(events.rejected) > 0)
    rejected_class, reason = events.rejected[0]
    assert rejected_class == class_id
    assert "NotAWriter" in reason, reason
    wait_for("B's observer hears the removal", lambda: events.removed_ids == [class_id])
    assert [c.membership for c in b.classes()] == [Membership.REMOVED()]
    # The class (the refused signature with it) is no longer readable on B's phone...
    with pytest.raises(ApiError.NotAMember) as err:
        bc.entries()
    assert err.value.class_id == class_id
    # ...the refused signature is not waiting to be sent any more, and B can write nothing.
    wait_for("B has nothing pending", lambda: b.sync_status().pending == 0)
    # The refused signature reads Rejected: it will never arrive.
    assert bc.delivery_state(sig) == DeliveryState.REJECTED
    with pytest.raises((ApiError.NotAMember, ApiError.NotAllowed)):
        bc.sign(posted.entry_id)
    # The teacher never sees it.
    time.sleep(1.0)
    assert the_entry(cls, posted.entry_id).signatures == []
    teacher.stop_sync()
    b.stop_sync()


def test_a_parent_joins_by_typing_the_short_code(relay, tmp_path):
    """One invite, two forms: the long code (QR) and a short code a parent types on a phone
    that knows the school's relay; a typo is caught on the phone, naming the field."""
    teacher = Homeroom.open(str(tmp_path / "teacher"))
    parent = Homeroom.open(str(tmp_path / "parent"))
    class_id = teacher.create_class("Class 2A", "Ms Ortiz")
    cls = teacher.classroom(class_id)
    posted = cls.post_entry(entry("Welcome", "Hello families"))
    teacher.start_sync(relay.address, relay.fingerprint)
    family = cls.add_family("Family Ruiz")
    codes = teacher.create_invite_codes(class_id, Role.GUARDIAN, family)
    assert codes.code.startswith("HR") and len(codes.short_code) == 14, codes
    assert codes.short_code[4] == "-" and codes.short_code[9] == "-"
    assert codes.expires_at_ms > int(time.time() * 1000)

    # A phone that knows no relay cannot use a short code alone.
    with pytest.raises(ApiError.InvalidState):
        parent.join_with_short_code(codes.short_code, "Rosa")
    # One wrong character is caught by the check character.
    typo = ("1" if codes.short_code[0] != "1" else "2") + codes.short_code[1:]
    with pytest.raises(ApiError.InvalidInput) as err:
        parent.join_with_short_code_via(typo, "Rosa", relay.address, relay.fingerprint)
    assert err.value.field == "short_code"

    events = Recorder()
    parent.set_observer(events)
    # Typed sloppily: lower case, no dashes.
    invite_id = parent.join_with_short_code_via(
        codes.short_code.replace("-", "").lower(), "Rosa", relay.address, relay.fingerprint)
    assert len(invite_id) == 64
    wait_for("the parent joins the class", lambda: events.joined_ids == [class_id], timeout=60)
    pc = parent.classroom(class_id)
    wait_for("the parent reads the notebook", lambda: [e.id for e in pc.entries()] == [posted.entry_id])
    assert [c.membership for c in parent.classes()] == [Membership.MEMBER()]
    assert events.not_found == [] and events.join_failures == []
    teacher.stop_sync()
    parent.stop_sync()


MDNS_GROUP = "224.0.0.251"


def multicast_works():
    """Whether a datagram sent to the mDNS group comes back here (on the default-route
    interface or loopback), as in tests/tests/lan.rs: None if it does, else why not."""
    import socket
    import struct
    interfaces = []
    try:
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect((MDNS_GROUP, 5353))
        local = probe.getsockname()[0]
        probe.close()
        if local not in ("0.0.0.0", "127.0.0.1"):
            interfaces.append(local)
    except OSError:
        pass
    interfaces.append("127.0.0.1")
    failures = []
    for interface in interfaces:
        rx = tx = None
        try:
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.bind(("0.0.0.0", 0))
            rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                          struct.pack("4s4s", socket.inet_aton(MDNS_GROUP), socket.inet_aton(interface)))
            rx.settimeout(1.0)
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.bind((interface, 0))
            tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            for _ in range(3):
                tx.sendto(b"homeroom-probe", (MDNS_GROUP, rx.getsockname()[1]))
                try:
                    if rx.recvfrom(64)[0] == b"homeroom-probe":
                        return None
                except socket.timeout:
                    pass
            failures.append(f"on {interface}: a datagram sent to {MDNS_GROUP} never came back")
        except OSError as e:
            failures.append(f"on {interface}: {e}")
        finally:
            for s in (rx, tx):
                if s is not None:
                    s.close()
    return "; ".join(failures)


def test_lan_sync_finds_the_teacher_by_mdns(tmp_path):
    """Real mDNS (`start_lan_sync()`): the parent's phone finds the teacher's and receives the
    class. Skipped, saying why, where multicast does not work (HOMEROOM_REQUIRE_MDNS=1 makes
    that a failure)."""
    import os
    why_not = multicast_works()
    if why_not is not None:
        if os.environ.get("HOMEROOM_REQUIRE_MDNS") == "1":
            pytest.fail(f"HOMEROOM_REQUIRE_MDNS=1 but multicast is unavailable: {why_not}")
        pytest.skip(f"multicast unavailable: {why_not}")
    teacher = Homeroom.open(str(tmp_path / "teacher"))
    parent = Homeroom.open(str(tmp_path / "parent"))
    class_id = teacher.create_class("Class 8H", "Mr Diaz")
    cls = teacher.classroom(class_id)
    enroll_parents(cls, [parent])
    posted = cls.post_entry(entry("Music", "Bring a recorder"))
    start = time.monotonic()
    t_ad = teacher.start_lan_sync()
    p_ad = parent.start_lan_sync()
    assert time.monotonic() - start < 2.0, "start_lan_sync returns at once"
    assert t_ad.instance != p_ad.instance and t_ad.port != 0 and p_ad.port != 0
    with pytest.raises(ApiError.InvalidState):
        parent.add_lan_peer(t_ad.instance, f"127.0.0.1:{t_ad.port}")  # mDNS mode, not manual
    try:
        wait_for("parent receives the entry found by mDNS", lambda: (
            [c.id for c in parent.classes()] == [class_id]
            and [e.id for e in parent.classroom(class_id).entries()] == [posted.entry_id]), timeout=60)
        wait_for("teacher lists the parent as a LAN peer",
                 lambda: teacher.sync_status().lan_peers == [parent.device_id()])
    finally:
        teacher.stop_lan_sync()
        parent.stop_lan_sync()
    wait_for("LAN peers gone", lambda: teacher.sync_status().lan_peers == [] and parent.sync_status().lan_peers == [])
