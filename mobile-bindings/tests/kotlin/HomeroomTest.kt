// The Kotlin/JVM bindings against a real relay process and several real devices.
//
// Run by scripts/test-bindings.sh: compiled with kotlinc together with the generated
// bindings, run on the JVM with JNA. Exits non-zero on the first failed check.
//
// Environment: HOMEROOM_RELAY_BIN (the homeroom-relay binary).

import java.io.File
import java.nio.file.Files
import java.util.Collections
import java.util.concurrent.TimeUnit
import kotlin.system.exitProcess
import uniffi.homeroom_mobile.*

class CheckFailed(message: String) : Exception(message)

fun check(cond: Boolean, what: String) {
    if (!cond) throw CheckFailed(what)
}

fun waitFor(what: String, timeoutMs: Long = 30_000, predicate: () -> Boolean) {
    val deadline = System.currentTimeMillis() + timeoutMs
    while (System.currentTimeMillis() < deadline) {
        if (predicate()) return
        Thread.sleep(50)
    }
    throw CheckFailed("timed out waiting for: $what")
}

inline fun <reified E : Throwable> expectThrows(what: String, block: () -> Unit): E {
    try {
        block()
    } catch (e: Throwable) {
        if (e is E) return e
        throw CheckFailed("$what: expected ${E::class.simpleName}, got $e")
    }
    throw CheckFailed("$what: expected ${E::class.simpleName}, nothing was thrown")
}

/** A real homeroom-relay process on a free loopback port with its own data folder. */
class Relay(dataDir: File) : AutoCloseable {
    private val proc: Process
    val address: String
    val fingerprint: String

    init {
        val bin = System.getenv("HOMEROOM_RELAY_BIN") ?: "target/debug/homeroom-relay"
        val pb = ProcessBuilder(bin, "serve", "--data-dir", dataDir.path, "--listen", "127.0.0.1:0")
        pb.redirectErrorStream(true)
        pb.environment()["RUST_LOG"] = "warn"
        proc = pb.start()
        val re = Regex("""listening on (\S+) .*fingerprint \(SHA-256\): ([0-9a-f]{64})""")
        val reader = proc.inputStream.bufferedReader()
        var found: MatchResult? = null
        val deadline = System.currentTimeMillis() + 60_000
        while (found == null && System.currentTimeMillis() < deadline) {
            val line = reader.readLine() ?: break
            found = re.find(line)
        }
        if (found == null) {
            proc.destroyForcibly()
            throw CheckFailed("relay did not report its address")
        }
        address = found.groupValues[1]
        fingerprint = found.groupValues[2]
        // Keep draining its output so it never blocks on a full pipe.
        Thread { reader.lineSequence().forEach { _ -> } }.apply { isDaemon = true }.start()
    }

    override fun close() {
        proc.destroy()
        if (!proc.waitFor(10, TimeUnit.SECONDS)) proc.destroyForcibly()
    }
}

/** Records every observer callback (called on the bindings' observer thread). */
class Recorder : Observer {
    val changed: MutableList<String> = Collections.synchronizedList(mutableListOf())
    val delivered: MutableList<String> = Collections.synchronizedList(mutableListOf())
    val bookings: MutableList<BookingInfo> = Collections.synchronizedList(mutableListOf())
    val rejected: MutableList<String> = Collections.synchronizedList(mutableListOf())
    val connection: MutableList<Boolean> = Collections.synchronizedList(mutableListOf())

    override fun classChanged(classId: String) { changed.add(classId) }
    override fun delivered(classId: String, count: UInt) { delivered.add(classId) }
    override fun bookingDecided(classId: String, booking: BookingInfo) { bookings.add(booking) }
    override fun changeRejected(classId: String, reason: String) { rejected.add(reason) }
    override fun connectionChanged(connected: Boolean) { connection.add(connected) }
    val joinedIds: MutableList<String> = Collections.synchronizedList(mutableListOf())
    override fun joined(classId: String) { joinedIds.add(classId) }
    val joinFailures: MutableList<String> = Collections.synchronizedList(mutableListOf())
    override fun joinFailed(classId: String, reason: String) { joinFailures.add(reason) }
    override fun removed(classId: String) { }
    val notFound: MutableList<String> = Collections.synchronizedList(mutableListOf())
    override fun inviteNotFound(inviteId: String) { notFound.add(inviteId) }
}

fun entry(title: String, text: String) =
    NewEntry(EntryKind.HOMEWORK, Urgency.AMBER, title, text, true)

fun Classroom.entry(id: String): EntryInfo = entries().first { it.id == id }

fun notebookScenario(tmp: File, relay: Relay) {
    val teacher = Homeroom.open(File(tmp, "teacher").path)
    val parents = (0 until 2).map { Homeroom.open(File(tmp, "parent$it").path) }
    val classId = teacher.createClass("Class 3B", "Ms Li")
    check(teacher.classes().map { it.id } == listOf(classId), "the teacher lists the class")
    val cls = teacher.classroom(classId)

    // Offline post: saved on this device only.
    val posted = cls.postEntry(entry("Maths", "Page 12, exercises 1-4"))
    check(cls.entry(posted.entryId).delivery == DeliveryState.SAVED_LOCALLY, "offline post is SavedLocally")
    check(cls.entry(posted.entryId).author == teacher.deviceId(), "the entry's author is the teacher's device")
    check(teacher.syncStatus().pending > 0uL && !teacher.syncStatus().connected, "pending while offline")

    val observer = Recorder()
    teacher.setObserver(observer)
    teacher.startSync(relay.address, relay.fingerprint)
    waitFor("teacher's post delivered") { cls.entry(posted.entryId).delivery == DeliveryState.DELIVERED }
    waitFor("observer hears the delivery") { observer.delivered.contains(classId) }

    // Parents join by invite (join() starts sync with the relay named in the code), sign
    // and reply.
    val families = parents.indices.map { cls.addFamily("Family $it") }
    val recorders = parents.mapIndexed { i, p ->
        val code = teacher.createInvite(classId, Role.GUARDIAN, families[i])
        val r = Recorder()
        p.setObserver(r)
        check(p.join(code, "Parent $i") == classId, "join returns the class id")
        r
    }
    val mine = parents.mapIndexed { i, p ->
        waitFor("parent $i's join completes") { p.classes().map { it.membership } == listOf<Membership>(Membership.Member) }
        waitFor("parent $i's observer hears the join") { recorders[i].joinedIds == listOf(classId) }
        check(p.classes().first().familyId == families[i], "parent $i is in its family")
        val pc = p.classroom(classId)
        waitFor("parent $i receives the entry") { pc.entries().size == 1 }
        check(pc.entries()[0].author == teacher.deviceId(), "parent $i sees the teacher's device as author")
        val sig = pc.sign(posted.entryId)
        val rep = pc.reply(posted.entryId, "Done, family $i", true)
        Triple(pc, sig, rep)
    }
    mine.forEach { (pc, sig, rep) ->
        waitFor("signature and reply delivered") {
            pc.deliveryState(sig) == DeliveryState.DELIVERED && pc.deliveryState(rep) == DeliveryState.DELIVERED
        }
    }
    check(recorders.all { it.joinFailures.isEmpty() }, "no join failed")
    waitFor("teacher sees both signatures and replies") {
        val e = cls.entry(posted.entryId)
        e.signatures.size == 2 && e.publicReplies.size == 2
    }
    val e = cls.entry(posted.entryId)
    check(e.signatures.map { it.familyId }.sorted() == families.sorted(), "signatures come from both families")
    check(e.publicReplies.mapNotNull { it.text }.sorted() == listOf("Done, family 0", "Done, family 1"), "replies' text")
    check(observer.changed.contains(classId), "observer heard the class change")

    // A parent trying a teacher's action gets NotAllowed.
    val pc = mine[0].first
    expectThrows<ApiException.NotAllowed>("parent posts an entry") { pc.postEntry(entry("Hi", "from a parent")) }
    expectThrows<ApiException.NotAllowed>("parent adds a family") { pc.addFamily("Intruders") }
    expectThrows<ApiException.NotAllowed>("parent invites") { parents[0].createInvite(classId, Role.GUARDIAN, families[0]) }
    val badCode = expectThrows<ApiException.InvalidInput>("mistyped invite") { Homeroom.open(File(tmp, "stranger").path).join("HR-NOPE", "X") }
    check(badCode.field == "invite_code", "InvalidInput names `invite_code`")
    // Bad input names the field.
    val bad = expectThrows<ApiException.InvalidInput>("empty text") { cls.postEntry(entry("Maths", " ")) }
    check(bad.field == "text", "InvalidInput names `text` (got ${bad.field})")
    val badId = expectThrows<ApiException.InvalidInput>("bad class id") { teacher.classroom("nope") }
    check(badId.field == "class_id", "InvalidInput names `class_id` (got ${badId.field})")
    val badFp = expectThrows<ApiException.InvalidInput>("bad fingerprint") { parents[1].stopSync(); parents[1].startSync(relay.address, "xyz") }
    check(badFp.field == "cert_fingerprint", "InvalidInput names `cert_fingerprint`")

    (listOf(teacher) + parents).forEach { it.stopSync() }
    println("kotlin: notebook scenario OK (${e.signatures.size} signatures, ${e.publicReplies.size} replies)")
}

fun bookingScenario(tmp: File, relay: Relay) {
    val teacher = Homeroom.open(File(tmp, "t2").path)
    val parent = Homeroom.open(File(tmp, "p2").path)
    val classId = teacher.createClass("Class 2C", "Ms Ng")
    val cls = teacher.classroom(classId)
    val fam = cls.addFamily("Family B")
    cls.addMember("Parent B", Role.GUARDIAN, fam, parent.deviceId())
    val now = System.currentTimeMillis()
    val hour = 3_600_000L
    val created = cls.createEvent(
        NewEvent(EventKind.CONFERENCE, "Conferences", "Room 4", now + hour, now + 3 * hour, false),
        listOf(SlotSpec(now + hour, now + hour + 900_000, 1u)),
    )
    teacher.startSync(relay.address, relay.fingerprint)
    val events = Recorder()
    parent.setObserver(events)
    parent.startSync(relay.address, relay.fingerprint)
    waitFor("parent receives the class") { parent.classes().size == 1 }
    val pc = parent.classroom(classId)
    waitFor("parent sees the event") { pc.events().size == 1 }
    val req = pc.requestBooking(created.id, created.slotIds[0], null, "after 4pm")
    check(pc.bookings(null).map { it.state } == listOf<BookingState>(BookingState.Pending), "booking pending")
    expectThrows<ApiException.NotAllowed>("parent decides bookings") { pc.decideBookings() }
    waitFor("teacher receives the request") { cls.bookings(fam).size == 1 }
    val decided = cls.decideBookings()
    check(decided.map { it.requestId to it.outcome } == listOf(req to "Confirmed"), "teacher confirms")
    waitFor("parent's observer hears the decision") { events.bookings.isNotEmpty() }
    check(events.bookings[0].requestId == req && events.bookings[0].state == BookingState.Confirmed, "decision content")
    teacher.stopSync()
    parent.stopSync()
    println("kotlin: booking scenario OK")
}

fun lanScenario(tmp: File) {
    // No relay: a teacher's phone and a parent's phone sync directly (manual discovery).
    val teacher = Homeroom.open(File(tmp, "t3").path)
    val parent = Homeroom.open(File(tmp, "p3").path)
    val classId = teacher.createClass("Class 6F", "Ms Ito")
    val cls = teacher.classroom(classId)
    val fam = cls.addFamily("Family F")
    val member = cls.addMember("Parent F", Role.GUARDIAN, fam, null)
    cls.enrollDevice(member, parent.deviceId())
    val posted = cls.postEntry(entry("Science", "Bring a leaf"))

    expectThrows<ApiException.InvalidState>("add_lan_peer before start") { parent.addLanPeer("x", "127.0.0.1:1") }
    val bad = expectThrows<ApiException.InvalidInput>("bad bind address") { parent.startLanSyncManual("nowhere") }
    check(bad.field == "bind_address", "InvalidInput names `bind_address` (got ${bad.field})")

    val tAd = teacher.startLanSyncManual("127.0.0.1:0")
    val pAd = parent.startLanSyncManual("127.0.0.1:0")
    check(tAd.port.toInt() != 0 && pAd.port.toInt() != 0, "LAN endpoints have ports")
    teacher.addLanPeer(pAd.instance, "127.0.0.1:${pAd.port}")
    parent.addLanPeer(tAd.instance, "127.0.0.1:${tAd.port}")

    waitFor("parent receives the class over the LAN") { parent.classes().map { it.id } == listOf(classId) }
    val pc = parent.classroom(classId)
    waitFor("parent receives the entry over the LAN") { pc.entries().map { it.id } == listOf(posted.entryId) }
    check(pc.entry(posted.entryId).author == teacher.deviceId(), "LAN entry's author is the teacher's device")
    waitFor("each lists the other as a LAN peer") {
        teacher.syncStatus().lanPeers.contains(parent.deviceId()) && parent.syncStatus().lanPeers.contains(teacher.deviceId())
    }
    val sig = pc.sign(posted.entryId)
    waitFor("teacher sees the signature over the LAN") { cls.entry(posted.entryId).signatures.map { it.id } == listOf(sig) }
    check(pc.deliveryState(sig) == DeliveryState.SAVED_LOCALLY, "a LAN peer does not make it Delivered")

    teacher.stopLanSync()
    parent.stopLanSync()
    waitFor("LAN peers gone") { teacher.syncStatus().lanPeers.isEmpty() && parent.syncStatus().lanPeers.isEmpty() }
    println("kotlin: LAN scenario OK")
}

fun main() {
    val tmp = Files.createTempDirectory("homeroom-kotlin").toFile()
    var failed = false
    try {
        Relay(File(tmp, "relay")).use { relay ->
            notebookScenario(tmp, relay)
            bookingScenario(tmp, relay)
        }
        lanScenario(tmp)
    } catch (e: Throwable) {
        System.err.println("kotlin: FAILED: $e")
        e.printStackTrace()
        failed = true
    } finally {
        tmp.deleteRecursively()
    }
    if (failed) exitProcess(1)
    println("kotlin bindings OK")
    exitProcess(0)
}
