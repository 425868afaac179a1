#!/usr/bin/env python3
"""A 1v1 client of the calling protocol built on an independent WebRTC stack.

This client was written from docs/PROTOCOL.md. It uses aiortc (PyPI) for
WebRTC and the `websockets` package for the signaling connection, and the
interop tests in crates/calling/tests/aiortc.rs run it against the Rust SDK
through an in-process calling-server. It logs in with a UserSig given on the
command line, reads commands as JSON lines on stdin, and writes what happens
as JSON lines on stdout. Logs go to stderr. It follows the rules a 1v1 party
needs: invite, enter, roster, reject (busy: true, sent automatically to a
second invite while ringing or in a call), cancel, timeout, leave, gone,
`alive` every 5 s, the call's server room, and media offer / answer /
candidates, where the byte-wise lower user id offers. aiortc does not trickle:
its candidates are in its SDP. It accepts trickled candidates, the
end-of-candidates one (candidate "") included. It sends real media: a 440 Hz
tone (Opus) and, in video calls, a generated 320x240 picture at 15 fps. It
counts the frames it decodes from the peer's tracks and the frames its own
tracks hand to the encoders. A switch from audio to video that the peer asks
for is answered by the test's command, and applies by attaching the camera to
the video m-line every call keeps: no renegotiation. Glare, group calls, join
tickets and asking for a switch are not implemented.

    tests/aiortc/.venv/bin/python tests/aiortc/client.py \\
        --url ws://127.0.0.1:PORT/ws --app 1400000000 --user py --sig SIG [--vp8-only]

Commands (one JSON object a line):
    {"cmd": "call", "user": "rust", "media": "video", "timeout": 30}
    {"cmd": "accept"}  {"cmd": "reject"}  {"cmd": "hangup"}  {"cmd": "cancel"}
    {"cmd": "switch_answer", "accepted": true}  (to the oldest switch_request)
    {"cmd": "report"}  {"cmd": "quit"}
Events: ready, invited, user_enter, user_leave, rejected, line_busy, no_resp,
cancelled, calling_timeout, busy_sent, call_end, media, first_frame,
switch_request, media_type, media_state, report,
error. Every event carries "event" and "t_ms" (ms on this process's monotonic
clock); first_frame also has "ms_since_answer" (since this side accepted, or
saw the callee accept).

Scope: the connection to the peer uses 127.0.0.1 only, as the Rust side does,
and no STUN server (aiortc would otherwise ask a public one).
"""

import argparse
import array
import asyncio
import fractions
import json
import logging
import math
import random
import sys
import threading
import time
import uuid

import aioice.ice
import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp
from websockets.asyncio.client import connect

CALL_VERSION = 1
SESSION_VERSION = 1
KINDS = {
    "invite", "cancel", "enter", "reject", "timeout", "leave", "roster", "gone",
    "alive", "media_state", "media_type", "switch_request", "switch_answer", "media",
}
# Kinds about a call the receiver is not in that are answered with `gone`.
ANSWER_GONE = {"enter", "roster", "alive", "media_state", "media_type", "switch_request", "switch_answer"}
KEEPALIVE_S = 5.0
KEEPALIVE_TIMEOUT_S = 15.0
INVITER_GRACE_S = 5.0
AUDIO_RATE = 48000
AUDIO_PTIME = 0.020
VIDEO_W, VIDEO_H, VIDEO_FPS = 320, 240, 15
VIDEO_CLOCK = 90000

log = logging.getLogger("aiortc-client")
T0 = time.monotonic()


def now_ms():
    return (time.monotonic() - T0) * 1000.0


def emit(event, **fields):
    """One JSON line on stdout for the driving test."""
    line = {"event": event, "t_ms": round(now_ms(), 3), **fields}
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def loopback_only(use_ipv4, use_ipv6):
    # aioice skips 127.0.0.1 and would offer this host's other addresses; the
    # tests must keep their traffic on loopback, where the Rust side binds.
    return ["127.0.0.1"]


aioice.ice.get_host_addresses = loopback_only


class Counter:
    """Frames per kind, both ways, for one peer connection."""

    def __init__(self):
        self.received = {"audio": 0, "video": 0}
        self.sent = {"audio": 0, "video": 0}
        self.first = {}
        # Inbound audio RTP packets, those carrying the RFC 6464 level, and
        # the loudest level seen (0 = 0 dBov ... 127 = silence).
        self.audio_packets = 0
        self.audio_levels = 0
        self.loudest = None


class ToneTrack(MediaStreamTrack):
    """A 440 Hz tone, 20 ms frames of 48 kHz mono s16, paced in real time."""

    kind = "audio"

    def __init__(self, counter):
        super().__init__()
        self.counter = counter
        self.n = 0
        self.start = None
        # 440 Hz fits a second exactly 440 times, so one second loops cleanly.
        samples = array.array(
            "h", (int(0.3 * 32767 * math.sin(2 * math.pi * 440 * i / AUDIO_RATE)) for i in range(AUDIO_RATE))
        )
        self.second = samples.tobytes()

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        else:
            delay = self.start + self.n * AUDIO_PTIME - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        per = int(AUDIO_RATE * AUDIO_PTIME)
        offset = (self.n * per) % AUDIO_RATE * 2
        frame = av.AudioFrame(format="s16", layout="mono", samples=per)
        frame.planes[0].update(self.second[offset : offset + per * 2])
        frame.pts = self.n * per
        frame.sample_rate = AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        self.n += 1
        self.counter.sent["audio"] += 1
        return frame


class PatternTrack(MediaStreamTrack):
    """A moving grey ramp, 320x240 yuv420p at 15 fps, paced in real time."""

    kind = "video"

    def __init__(self, counter):
        super().__init__()
        self.counter = counter
        self.n = 0
        self.start = None

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if self.start is None:
            self.start = time.monotonic()
        else:
            delay = self.start + self.n / VIDEO_FPS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        frame = av.VideoFrame(VIDEO_W, VIDEO_H, "yuv420p")
        luma = frame.planes[0]
        shift = (self.n * 4) & 0xFF
        row = bytes(((x + shift) & 0xFF) for x in range(luma.line_size))
        luma.update(row * (luma.buffer_size // luma.line_size))
        for chroma in frame.planes[1:]:
            chroma.update(bytes([128]) * chroma.buffer_size)
        frame.pts = self.n * (VIDEO_CLOCK // VIDEO_FPS)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self.n += 1
        self.counter.sent["video"] += 1
        return frame


class Peer:
    """The peer connection with one other party."""

    def __init__(self, user, pc, counter):
        self.user = user
        self.pc = pc
        self.counter = counter
        self.queued = []  # candidates that came before the remote description
        self.lock = asyncio.Lock()  # signals are applied one at a time, in order
        self.tracks = []
        self.tasks = []
        self.video = None  # the video transceiver
        self.descriptions = 0  # offers and answers applied or sent
        self.trickled = []  # (sdp_mid, sdp_mline_index) of each trickled candidate
        self.end_of_candidates = False


class Call:
    def __init__(self, **fields):
        self.call_id = None
        self.party = None
        self.state = None  # "ringing" (invitee) or "connected"
        self.media_type = "video"
        self.sponsor = None
        self.room_id = None
        self.is_group = False
        self.invite_id = None  # the invite this party rings for / accepted
        self.inviter = None
        self.connected = {}  # user -> {"party", "audio", "video"}
        self.ringing = {}  # user -> {"invite_id", "inviter"}
        self.heard = {}  # user -> monotonic time of the last sign of life
        self.peers = {}
        self.timers = {}
        self.join_secret = None
        self.switch_in = []  # (asker, request_id) of switch requests to answer
        self.answered_at = None
        self.in_room = False
        self.__dict__.update(fields)


class Client:
    def __init__(self, args):
        self.args = args
        self.user = args.user
        self.ws = None
        self.next_id = 1
        self.call = None
        self.last_counter = None
        self.last_peer = None
        self.last_party_ms = 0
        self.party_seq = 0
        self.over = {}  # user -> highest party known to be over
        self.answered = set()  # invite ids answered, cancelled or timed out
        self.early_cancels = set()  # (sender, invite id) that overtook the invite
        self.send_kinds = {}  # send id -> (kind, call id, users)
        self.gone_sent = {}  # (sender, call id, party) -> time of the last answer
        self.done = asyncio.Event()
        self.outbox = asyncio.Queue()

    # ---- session layer ----------------------------------------------------

    def frame_id(self, prefix):
        self.next_id += 1
        return f"{prefix}{self.next_id}"

    def send_frame_soon(self, frame):
        # One writer drains one queue, so frames leave in the order they were
        # made (an `enter` before the offer that follows it).
        self.outbox.put_nowait(frame)

    async def writer(self):
        while True:
            frame = await self.outbox.get()
            try:
                await self.ws.send(json.dumps(frame))
            except Exception as e:  # the connection died: the reader loop ends too
                log.warning("send failed: %s", e)
            finally:
                self.outbox.task_done()

    def send_payload(self, users, payload):
        to = sorted({u for u in users if u != self.user})
        if not to:
            return
        sid = self.frame_id("m")
        self.send_kinds[sid] = (payload.get("kind"), payload.get("call_id"), to)
        if len(self.send_kinds) > 512:
            self.send_kinds.pop(next(iter(self.send_kinds)))
        log.debug("-> %s %s", to, payload.get("kind"))
        self.send_frame_soon({"type": "send", "id": sid, "to": to, "payload": payload})

    async def run(self):
        async with connect(self.args.url, max_size=2**20) as ws:
            self.ws = ws
            await ws.send(json.dumps({
                "type": "login", "id": "login", "sdk_app_id": self.args.app,
                "user_id": self.user, "user_sig": self.args.sig, "protocol": SESSION_VERSION,
            }))
            ok = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if ok.get("type") != "login_ok":
                emit("error", what="login", frame=ok)
                return 1
            every = max(0.5, ok.get("heartbeat_interval_ms", 3000) / 1000)
            tasks = [
                asyncio.create_task(self.writer()),
                asyncio.create_task(self.heartbeat(every)),
                asyncio.create_task(self.keepalive()),
                asyncio.create_task(self.reader()),
            ]
            emit("ready", user=self.user)
            log.info("logged in as %s", self.user)
            await self.done.wait()
            if self.call is not None:
                self.hangup()
            self.send_frame_soon({"type": "logout"})
            try:
                await asyncio.wait_for(self.outbox.join(), 2)
            except asyncio.TimeoutError:
                log.warning("logout: frames left unsent")
            for t in tasks:
                t.cancel()
        return 0

    async def heartbeat(self, every):
        while True:
            await asyncio.sleep(every)
            self.send_frame_soon({"type": "ping"})

    async def reader(self):
        try:
            async for raw in self.ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    log.warning("dropped a frame that is not JSON")
                    continue
                if isinstance(frame, dict):
                    self.on_frame(frame)
        except Exception as e:
            log.warning("connection lost: %s", e)
        emit("error", what="disconnected")
        if self.call is not None:
            self.end_call("disconnected")
        self.done.set()

    def on_frame(self, frame):
        kind = frame.get("type")
        if kind == "message":
            self.on_payload(frame.get("from"), frame.get("payload"))
        elif kind == "undeliverable":
            self.on_undeliverable(frame.get("id"), frame.get("users") or [])
        elif kind == "room_leave":
            call = self.call
            if call and frame.get("room") == call.call_id:
                self.party_gone(call, frame.get("user"))
        elif kind == "error":
            log.warning("server error: %s", frame)
        elif kind in ("pong", "joined", "left", "allowed", "room_enter"):
            pass
        elif kind == "kicked_out":
            emit("error", what="kicked_out")
        else:
            log.info("ignored frame %s", kind)

    def join_room(self, call):
        if call.in_room:
            return
        call.in_room = True
        frame = {"type": "join", "id": self.frame_id("j"), "room": call.call_id}
        if call.sponsor == self.user:
            # The sponsor creates the call's room closed to all but its invitees.
            frame["allow"] = sorted(call.ringing)
        self.send_frame_soon(frame)

    def leave_room(self, call):
        if call.in_room:
            call.in_room = False
            self.send_frame_soon({"type": "leave", "id": self.frame_id("l"), "room": call.call_id})

    # ---- call layer: helpers ----------------------------------------------

    def new_party(self):
        # Unix time in ms x 1024, always growing (PROTOCOL "Parties").
        ms = int(time.time() * 1000)
        if ms > self.last_party_ms:
            self.last_party_ms, self.party_seq = ms, 0
        else:
            self.party_seq += 1
            if self.party_seq >= 1024:
                self.last_party_ms, self.party_seq = self.last_party_ms + 1, 0
        return self.last_party_ms * 1024 + self.party_seq

    def envelope(self, call, kind, **fields):
        return {"version": CALL_VERSION, "call_id": call.call_id, "party": call.party, "kind": kind, **fields}

    def info(self, call):
        return {"room_id": call.room_id, "media_type": call.media_type, "sponsor": call.sponsor, "is_group": call.is_group}

    def me(self, call):
        return {"user": self.user, "party": call.party, "audio": True, "video": True}

    def roster(self, call):
        connected = [self.me(call)] if call.state == "connected" else []
        connected += [{"user": u, **m} for u, m in call.connected.items()]
        ringing = [{"user": u, **r} for u, r in call.ringing.items()]
        return {"connected": connected, "ringing": ringing}

    def everyone(self, call):
        return list(call.connected) + list(call.ringing)

    def late(self, user, party):
        return isinstance(party, int) and party <= self.over.get(user, 0)

    def mark_over(self, user, party):
        if isinstance(party, int) and party > self.over.get(user, 0):
            self.over[user] = party

    def timer(self, call, name, delay, fn):
        old = call.timers.pop(name, None)
        if old:
            old.cancel()
        call.timers[name] = asyncio.get_running_loop().call_later(delay, fn)

    def cancel_timer(self, call, name):
        t = call.timers.pop(name, None)
        if t:
            t.cancel()

    def answer_gone(self, sender, p):
        key = (sender, p.get("call_id"), p.get("party"))
        now = time.monotonic()
        if now - self.gone_sent.get(key, -10.0) < KEEPALIVE_S:
            return
        self.gone_sent[key] = now
        if len(self.gone_sent) > 1024:
            self.gone_sent.pop(next(iter(self.gone_sent)))
        upto = self.new_party()
        self.send_payload([sender], {"version": CALL_VERSION, "call_id": p.get("call_id"), "party": upto, "kind": "gone", "upto": upto})

    # ---- commands -----------------------------------------------------------

    def command(self, cmd):
        what = cmd.get("cmd")
        log.info("command %s", cmd)
        try:
            if what == "call":
                self.place(cmd["user"], cmd.get("media", "video"), int(cmd.get("timeout", 30)))
            elif what == "accept":
                self.accept()
            elif what == "reject":
                self.reject()
            elif what in ("hangup", "cancel"):
                self.hangup()
            elif what == "switch_answer":
                self.answer_switch(bool(cmd.get("accepted")))
            elif what == "report":
                self.report()
            elif what == "quit":
                self.done.set()
            else:
                emit("error", what="unknown command", cmd=cmd)
        except Exception as e:
            log.exception("command failed")
            emit("error", what=f"command {what} failed: {e}")

    def place(self, user, media, timeout):
        if self.call is not None:
            emit("error", what="already in a call")
            return
        call = Call(
            call_id=str(uuid.uuid4()), party=self.new_party(), state="connected", media_type=media,
            sponsor=self.user, room_id=random.randint(1, 2**31 - 1), join_secret=str(uuid.uuid4()),
        )
        invite_id = str(uuid.uuid4())
        call.ringing[user] = {"invite_id": invite_id, "inviter": self.user}
        self.call = call
        self.join_room(call)
        self.send_payload([user], self.envelope(
            call, "invite", invite_id=invite_id, **self.info(call), timeout=timeout, roster=self.roster(call),
        ))
        if timeout > 0:
            self.timer(call, f"ring:{user}", timeout + INVITER_GRACE_S, lambda: self.invitee_timed_out(call, [user], "timeout"))
        emit("calling", call_id=call.call_id, user=user, media=media)

    def accept(self):
        call = self.call
        if call is None or call.state != "ringing":
            emit("error", what="nothing is ringing")
            return
        self.cancel_timer(call, "ringing")
        self.answered.add(call.invite_id)
        call.state = "connected"
        call.answered_at = time.monotonic()
        self.send_payload(self.everyone(call), self.envelope(
            call, "enter", invite_id=call.invite_id, audio=True, video=True,
        ))
        self.join_room(call)
        now = time.monotonic()
        for user in list(call.connected):
            call.heard[user] = now
            emit("user_enter", call_id=call.call_id, user=user)
            self.ensure_peer(call, user)
        emit("accepted", call_id=call.call_id)

    def reject(self):
        call = self.call
        if call is None or call.state != "ringing":
            emit("error", what="nothing is ringing")
            return
        self.answered.add(call.invite_id)
        self.send_payload(self.everyone(call), self.envelope(call, "reject", invite_id=call.invite_id, busy=False))
        self.end_call("rejected")

    def hangup(self):
        call = self.call
        if call is None:
            return
        if call.state == "ringing":
            self.reject()
            return
        if not call.connected:
            for user, r in call.ringing.items():
                self.answered.add(r["invite_id"])
                if r["inviter"] == self.user:
                    self.send_payload([user], self.envelope(call, "cancel", invite_id=r["invite_id"]))
                else:
                    self.send_payload([user], self.envelope(call, "leave"))
        else:
            self.send_payload(self.everyone(call), self.envelope(call, "leave"))
        self.end_call("hangup")

    def answer_switch(self, accepted):
        call = self.call
        if call is None or not call.switch_in:
            emit("error", what="no switch request to answer")
            return
        asker, request_id = call.switch_in.pop(0)
        self.send_payload([asker], self.envelope(call, "switch_answer", request_id=request_id, accepted=accepted))

    def report(self):
        call = self.call
        peer = None
        if call is not None and call.peers:
            peer = next(iter(call.peers.values()))
        counter = peer.counter if peer else self.last_counter
        who = peer.user if peer else self.last_peer
        out = {
            "in_call": call is not None,
            "state": call.state if call else None,
            "connected": sorted(call.connected) if call else [],
            "peer": who,
            "received": counter.received if counter else {"audio": 0, "video": 0},
            "sent": counter.sent if counter else {"audio": 0, "video": 0},
        }
        if counter is not None:
            out["audio_level"] = {
                "packets": counter.audio_packets,
                "with_level": counter.audio_levels,
                "loudest": counter.loudest,
            }
        if peer is not None:
            out["connection"] = peer.pc.connectionState
            out["codecs"] = self.negotiated(peer)
            out["media_type"] = call.media_type
            # One offer and one answer per connection: 2 unless it was renegotiated.
            out["descriptions"] = peer.descriptions
            out["candidates"] = {
                "trickled": len(peer.trickled),
                "end": peer.end_of_candidates,
                # Each distinct value as sent (null when left out), first seen first.
                "mids": list(dict.fromkeys(m for m, _ in peer.trickled)),
                "mline_indexes": list(dict.fromkeys(i for _, i in peer.trickled)),
            }
        emit("report", **out)

    def negotiated(self, peer):
        codecs = {}
        for t in peer.pc.getTransceivers():
            names = [c.mimeType for c in getattr(t, "_codecs", []) or []]
            codecs[t.kind] = names
        return codecs

    # ---- call layer: inbound ------------------------------------------------

    def on_payload(self, sender, p):
        if not isinstance(sender, str) or not isinstance(p, dict):
            log.info("dropped a payload that is not an object")
            return
        if p.get("version") != CALL_VERSION:
            log.info("dropped a payload: unsupported protocol version %r", p.get("version"))
            return
        kind = p.get("kind")
        if not isinstance(p.get("call_id"), str) or kind not in KINDS:
            log.info("dropped a payload: unknown message kind %r", kind)
            return
        log.debug("<- %s %s", sender, kind)
        if kind == "media":
            self.on_media(sender, p)
            return
        party = p.get("party")
        if not isinstance(party, int):
            log.info("dropped %s from %s: no party", kind, sender)
            return
        if kind != "gone" and self.late(sender, party):
            return
        call = self.call if self.call and self.call.call_id == p["call_id"] else None
        if call is None and kind in ANSWER_GONE:
            self.answer_gone(sender, p)
            return
        if call is not None and sender in call.connected and call.connected[sender]["party"] == party:
            call.heard[sender] = time.monotonic()
        handler = getattr(self, "on_" + kind)
        handler(call, sender, p)

    def on_invite(self, call, sender, p):
        invite_id = p.get("invite_id")
        if not isinstance(invite_id, str) or invite_id in self.answered:
            return
        if (sender, invite_id) in self.early_cancels:
            self.early_cancels.discard((sender, invite_id))
            self.answered.add(invite_id)
            return
        roster = p.get("roster") if isinstance(p.get("roster"), dict) else {}
        connected = [m for m in roster.get("connected") or [] if isinstance(m, dict)]
        ringing = [r for r in roster.get("ringing") or [] if isinstance(r, dict)]
        if call is not None:
            # Our own call: never rings; a connected sender gets our enter.
            if sender in call.connected and call.state == "connected":
                self.send_payload([sender], self.envelope(call, "enter", audio=True, video=True))
            return
        if self.call is not None:
            # One call at a time: busy, to everyone in the invite's roster.
            to = {sender} | {m.get("user") for m in connected} | {r.get("user") for r in ringing}
            to = [u for u in to if isinstance(u, str)]
            self.answered.add(invite_id)
            self.send_payload(to, {
                "version": CALL_VERSION, "call_id": p["call_id"], "party": self.new_party(),
                "kind": "reject", "invite_id": invite_id, "busy": True,
            })
            emit("busy_sent", call_id=p["call_id"], user=sender)
            return
        call = Call(
            call_id=p["call_id"], party=self.new_party(), state="ringing",
            media_type="audio" if p.get("media_type") == "audio" else "video",
            sponsor=p.get("sponsor"), room_id=p.get("room_id"), is_group=bool(p.get("is_group")),
            invite_id=invite_id, inviter=sender,
        )
        # Only the inviter counts as connected (PROTOCOL "An invite's roster").
        entry = next((m for m in connected if m.get("user") == sender), {})
        call.connected[sender] = {
            "party": entry.get("party") if isinstance(entry.get("party"), int) else party_of(p),
            "audio": bool(entry.get("audio", True)), "video": bool(entry.get("video", True)),
        }
        for r in ringing:
            if isinstance(r.get("user"), str) and r["user"] != self.user:
                call.ringing[r["user"]] = {"invite_id": r.get("invite_id"), "inviter": r.get("inviter")}
        self.call = call
        secs = p.get("timeout") if isinstance(p.get("timeout"), int) else 0
        if secs > 0:
            self.timer(call, "ringing", secs, lambda: self.ringing_timed_out(call))
        emit("invited", call_id=call.call_id, invite_id=invite_id, user=sender, media=call.media_type)

    def ringing_timed_out(self, call):
        if self.call is not call or call.state != "ringing":
            return
        self.answered.add(call.invite_id)
        self.send_payload(self.everyone(call), self.envelope(
            call, "timeout", invite_id=call.invite_id, users=[self.user], reason="timeout",
        ))
        emit("calling_timeout", call_id=call.call_id)
        self.end_call("timeout")

    def on_cancel(self, call, sender, p):
        invite_id = p.get("invite_id")
        if call is not None and call.state == "ringing" and call.invite_id == invite_id and sender == call.inviter:
            self.answered.add(invite_id)
            emit("cancelled", call_id=call.call_id, user=sender)
            self.end_call("cancelled")
        elif call is None and isinstance(invite_id, str):
            self.early_cancels.add((sender, invite_id))

    def on_enter(self, call, sender, p):
        known = call.connected.get(sender)
        pending = call.ringing.get(sender)
        invited = pending is not None and pending["inviter"] == self.user and p.get("invite_id") == pending["invite_id"]
        if known is None and not invited:
            log.info("dropped enter from %s: no right", sender)
            return
        if known is not None and known["party"] >= p["party"]:
            return
        call.ringing.pop(sender, None)
        self.cancel_timer(call, f"ring:{sender}")
        if pending is not None:
            self.answered.add(pending["invite_id"])
        call.connected[sender] = {"party": p["party"], "audio": bool(p.get("audio")), "video": bool(p.get("video"))}
        call.heard[sender] = time.monotonic()
        if call.state != "connected":
            return
        if call.answered_at is None:
            call.answered_at = time.monotonic()
        roster = self.roster(call)
        self.send_payload(self.everyone(call), self.envelope(
            call, "roster", **self.info(call), roster=roster, join_secret=call.join_secret,
        ))
        if known is not None:
            self.close_peer(call, sender)
        emit("user_enter", call_id=call.call_id, user=sender)
        self.ensure_peer(call, sender)

    def on_roster(self, call, sender, p):
        roster = p.get("roster") if isinstance(p.get("roster"), dict) else {}
        if sender not in call.connected:
            log.info("ignored a roster from %s: not connected here", sender)
            return
        if call.join_secret is None and isinstance(p.get("join_secret"), str):
            call.join_secret = p["join_secret"]
        lists_me = False
        for m in roster.get("connected") or []:
            if not isinstance(m, dict) or not isinstance(m.get("user"), str):
                continue
            if m["user"] == self.user:
                lists_me = True
            elif m["user"] == sender:
                call.connected[sender].update(audio=bool(m.get("audio")), video=bool(m.get("video")))
            # Others would be a group call: out of this client's scope.
        if call.state == "connected" and not lists_me:
            self.send_payload([sender], self.envelope(call, "enter", audio=True, video=True))

    def on_reject(self, call, sender, p):
        if call is None:
            return
        pending = call.ringing.get(sender)
        if pending is None or pending["invite_id"] != p.get("invite_id"):
            return
        del call.ringing[sender]
        self.answered.add(pending["invite_id"])
        self.cancel_timer(call, f"ring:{sender}")
        busy = bool(p.get("busy"))
        emit("line_busy" if busy else "rejected", call_id=call.call_id, user=sender, busy=busy)
        self.check_end(call, "busy" if busy else "rejected")

    def on_timeout(self, call, sender, p):
        users = p.get("users")
        if call is None or not isinstance(users, list):
            return
        if call.state == "ringing" and self.user in users and sender == call.inviter:
            self.answered.add(call.invite_id)
            emit("calling_timeout", call_id=call.call_id)
            self.end_call("timeout")
            return
        for u in users:
            pending = call.ringing.get(u)
            if pending is not None and (u == sender or pending["inviter"] == sender):
                del call.ringing[u]
                self.cancel_timer(call, f"ring:{u}")
                emit("no_resp", call_id=call.call_id, user=u, reason=p.get("reason"))
        self.check_end(call, "no_answer")

    def on_leave(self, call, sender, p):
        self.mark_over(sender, p["party"])
        if call is not None:
            self.party_gone(call, sender)

    def on_gone(self, call, sender, p):
        upto = p.get("upto")
        if not isinstance(upto, int):
            return
        if call is not None and p.get("dropped") == call.party and sender in call.connected:
            # The sender dropped us for silence: leave the whole call.
            self.send_payload(self.everyone(call), self.envelope(call, "leave"))
            self.end_call("hangup")
            return
        self.mark_over(sender, upto - 1)
        if call is not None:
            self.party_gone(call, sender)

    def on_alive(self, call, sender, p):
        pass  # a sign of life, counted in on_payload

    def on_media_state(self, call, sender, p):
        member = call.connected.get(sender)
        if member is not None and member["party"] == p["party"]:
            member.update(audio=bool(p.get("audio")), video=bool(p.get("video")))
            emit("media_state", user=sender, audio=member["audio"], video=member["video"])

    def on_media_type(self, call, sender, p):
        member = call.connected.get(sender)
        if member is None or member["party"] != p["party"] or p.get("media_type") not in ("audio", "video"):
            return
        if call.media_type != p["media_type"]:
            call.media_type = p["media_type"]
            for peer in call.peers.values():
                self.show_camera(call, peer)
        emit("media_type", user=sender, media=call.media_type)

    def on_switch_request(self, call, sender, p):
        member = call.connected.get(sender)
        if call.state != "connected" or member is None or member["party"] != p["party"]:
            return
        if p.get("media_type") == call.media_type:
            self.send_payload([sender], self.envelope(call, "switch_answer", request_id=p.get("request_id"), accepted=True))
            return
        # The test answers with {"cmd": "switch_answer"}.
        call.switch_in.append((sender, p.get("request_id")))
        emit("switch_request", user=sender, request_id=p.get("request_id"), media=p.get("media_type"))

    def on_switch_answer(self, call, sender, p):
        pass  # this client never asks

    def on_undeliverable(self, sid, users):
        kind, call_id, _ = self.send_kinds.get(sid, (None, None, None))
        call = self.call
        if call is None or call_id != call.call_id:
            return
        if kind == "invite":
            self.invitee_timed_out(call, users, "offline")
        else:
            for u in users:
                self.party_gone(call, u)

    def invitee_timed_out(self, call, users, reason):
        if self.call is not call:
            return
        for u in users:
            pending = call.ringing.pop(u, None)
            if pending is None:
                continue
            self.answered.add(pending["invite_id"])
            self.cancel_timer(call, f"ring:{u}")
            self.send_payload(self.everyone(call) + [u], self.envelope(
                call, "timeout", invite_id=pending["invite_id"], users=[u], reason=reason,
            ))
            emit("no_resp", call_id=call.call_id, user=u, reason=reason)
        self.check_end(call, "no_answer")

    def party_gone(self, call, user):
        if self.call is not call:
            return
        member = call.connected.pop(user, None)
        if member is not None:
            self.mark_over(user, member["party"])
            call.heard.pop(user, None)
            self.close_peer(call, user)
            emit("user_leave", call_id=call.call_id, user=user)
        elif call.state == "ringing" or call.ringing.pop(user, None) is None:
            return
        self.check_end(call, "hangup")

    def check_end(self, call, reason):
        if self.call is not call:
            return
        if call.state == "ringing":
            if not call.connected:
                emit("cancelled", call_id=call.call_id, user=call.inviter)
                self.end_call("cancelled")
            return
        if not call.connected and not call.ringing:
            self.end_call(reason)

    def end_call(self, reason):
        call = self.call
        if call is None:
            return
        self.call = None
        for t in call.timers.values():
            t.cancel()
        call.timers.clear()
        for user in list(call.peers):
            self.close_peer(call, user)
        self.leave_room(call)
        emit("call_end", call_id=call.call_id, reason=reason)
        log.info("call %s ended: %s", call.call_id, reason)

    async def keepalive(self):
        # PROTOCOL "Liveness": alive to every connected member every 5 s;
        # a member silent for 15 s is dropped as if it had left.
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            call = self.call
            if call is None or call.state != "connected" or not call.connected:
                continue
            now = time.monotonic()
            silent = [u for u in call.connected if now - call.heard.get(u, now) > KEEPALIVE_TIMEOUT_S]
            for u in silent:
                log.warning("dropping %s: silent for %.1f s", u, now - call.heard[u])
                if len(call.connected) == 1:
                    self.send_payload([u], self.envelope(call, "leave"))
                else:
                    self.send_payload([u], self.envelope(
                        call, "gone", upto=self.new_party(), dropped=call.connected[u]["party"],
                    ))
                self.party_gone(call, u)
            if self.call is call and call.connected:
                self.send_payload(list(call.connected), self.envelope(call, "alive"))

    # ---- media ------------------------------------------------------------

    def ensure_peer(self, call, user):
        peer = call.peers.get(user)
        if peer is not None:
            return peer
        counter = Counter()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        peer = Peer(user, pc, counter)
        call.peers[user] = peer
        self.last_counter, self.last_peer = counter, user
        audio = ToneTrack(counter)
        peer.tracks.append(audio)
        pc.addTrack(audio)
        # Audio calls keep a sendrecv video m-line, as the Rust side does, so
        # that a switch to video only attaches the camera: no renegotiation.
        transceiver = pc.addTransceiver("video", direction="sendrecv")
        peer.video = transceiver
        self.show_camera(call, peer)
        for t in pc.getTransceivers():
            if t.kind == "audio":
                watch_audio_levels(t.receiver, counter)
        if self.args.vp8_only:
            vp8 = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == "video/VP8"]
            transceiver.setCodecPreferences(vp8)

        @pc.on("track")
        def on_track(track):
            log.info("track %s from %s", track.kind, user)
            peer.tasks.append(asyncio.ensure_future(self.consume(call, peer, track)))

        @pc.on("connectionstatechange")
        def on_state():
            log.info("media with %s: %s", user, pc.connectionState)
            emit("media", user=user, state=pc.connectionState)

        @pc.on("iceconnectionstatechange")
        def on_ice():
            log.info("ice with %s: %s", user, pc.iceConnectionState)

        if self.user.encode() < user.encode():
            asyncio.get_running_loop().create_task(self.offer(call, peer))
        return peer

    def show_camera(self, call, peer):
        """Attaches the camera to the video sender in video calls, detaches it in audio calls."""
        sender = peer.video.sender
        if call.media_type == "video" and sender.track is None:
            camera = PatternTrack(peer.counter)
            peer.tracks.append(camera)
            sender.replaceTrack(camera)
        elif call.media_type == "audio" and sender.track is not None:
            camera = sender.track
            sender.replaceTrack(None)
            camera.stop()

    async def consume(self, call, peer, track):
        kind = track.kind
        try:
            while True:
                await track.recv()
                peer.counter.received[kind] += 1
                if kind not in peer.counter.first:
                    peer.counter.first[kind] = time.monotonic()
                    since = None
                    if call.answered_at is not None:
                        since = round((peer.counter.first[kind] - call.answered_at) * 1000.0, 3)
                    emit("first_frame", call_id=call.call_id, user=peer.user, kind=kind, ms_since_answer=since)
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("receiving %s from %s failed", kind, peer.user)

    async def offer(self, call, peer):
        async with peer.lock:
            try:
                # aiortc gathers all candidates here and puts them in the SDP.
                await peer.pc.setLocalDescription(await peer.pc.createOffer())
                self.send_media(call, peer.user, {"type": "offer", "sdp": peer.pc.localDescription.sdp})
                peer.descriptions += 1
                log.info("offer sent to %s", peer.user)
            except Exception as e:
                log.exception("offer failed")
                emit("error", what=f"offer to {peer.user} failed: {e}")

    def send_media(self, call, user, signal):
        if self.call is call:
            self.send_payload([user], {"version": CALL_VERSION, "call_id": call.call_id, "kind": "media", "signal": signal})

    def on_media(self, sender, p):
        call = self.call
        if call is None or call.call_id != p["call_id"] or call.state != "connected" or sender not in call.connected:
            log.info("dropped media from %s", sender)
            return
        signal = p.get("signal")
        if not isinstance(signal, dict):
            return
        peer = self.ensure_peer(call, sender)
        asyncio.get_running_loop().create_task(self.apply_signal(call, peer, signal))

    async def apply_signal(self, call, peer, s):
        async with peer.lock:
            if peer.pc.connectionState == "closed":
                return
            try:
                kind = s.get("type")
                if kind == "offer" and isinstance(s.get("sdp"), str):
                    log.info("offer from %s", peer.user)
                    await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=s["sdp"], type="offer"))
                    await peer.pc.setLocalDescription(await peer.pc.createAnswer())
                    self.send_media(call, peer.user, {"type": "answer", "sdp": peer.pc.localDescription.sdp})
                    peer.descriptions += 2
                    log.info("answer sent to %s", peer.user)
                    await self.flush_candidates(peer)
                elif kind == "answer" and isinstance(s.get("sdp"), str):
                    await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=s["sdp"], type="answer"))
                    peer.descriptions += 1
                    log.info("answer applied from %s", peer.user)
                    await self.flush_candidates(peer)
                elif kind == "candidate" and isinstance(s.get("candidate"), str):
                    candidate = to_candidate(s)
                    if candidate is None:
                        peer.end_of_candidates = True
                    else:
                        peer.trickled.append((s.get("sdp_mid"), s.get("sdp_mline_index")))
                    if peer.pc.remoteDescription is None:
                        peer.queued.append(candidate)
                    else:
                        await peer.pc.addIceCandidate(candidate)
                    log.debug("candidate from %s: %r", peer.user, s.get("candidate"))
            except Exception as e:
                log.exception("media signal from %s failed", peer.user)
                emit("error", what=f"media negotiation with {peer.user} failed: {e}")

    async def flush_candidates(self, peer):
        queued, peer.queued = peer.queued, []
        for c in queued:
            await peer.pc.addIceCandidate(c)

    def close_peer(self, call, user):
        peer = call.peers.pop(user, None)
        if peer is None:
            return
        for t in peer.tracks:
            t.stop()
        for t in peer.tasks:
            t.cancel()
        asyncio.get_running_loop().create_task(peer.pc.close())


def watch_audio_levels(receiver, counter):
    """Counts the audio level extension on each inbound packet. aiortc parses
    it (under the negotiated id) but keeps it to itself, so this wraps the
    receiver's packet handler, a private method of aiortc 1.16."""
    handle = receiver._handle_rtp_packet

    async def counting(packet, arrival_time_ms):
        counter.audio_packets += 1
        level = packet.extensions.audio_level
        if level is not None:
            counter.audio_levels += 1
            if counter.loudest is None or level[1] < counter.loudest:
                counter.loudest = level[1]
        await handle(packet, arrival_time_ms=arrival_time_ms)

    receiver._handle_rtp_packet = counting


def party_of(p):
    return p.get("party") if isinstance(p.get("party"), int) else 0


def to_candidate(s):
    """A trickled candidate signal as aiortc takes it; None ends candidates."""
    text = s["candidate"]
    if text == "":
        return None
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    candidate = candidate_from_sdp(text)
    candidate.sdpMid = s.get("sdp_mid")
    candidate.sdpMLineIndex = s.get("sdp_mline_index")
    if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
        candidate.sdpMLineIndex = 0
    return candidate


def stdin_lines(loop, client):
    """Reads commands on a thread; end of input quits."""
    try:
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                cmd = json.loads(line)
            except ValueError:
                loop.call_soon_threadsafe(emit, "error", what=f"bad command {line!r}")
                continue
            loop.call_soon_threadsafe(client.command, cmd)
        loop.call_soon_threadsafe(client.done.set)
    except RuntimeError:
        pass  # the loop already closed: the client is exiting anyway


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="ws://host:port/ws of calling-server")
    parser.add_argument("--app", type=int, required=True, help="sdk_app_id")
    parser.add_argument("--user", required=True)
    parser.add_argument("--sig", required=True, help="UserSig for --user")
    parser.add_argument("--vp8-only", action="store_true", help="offer and answer VP8 alone for video")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
        format=f"%(relativeCreated)8.0f [py {args.user}] %(name)s %(levelname)s %(message)s",
    )
    for noisy in ("aioice", "aiortc", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    client = Client(args)
    loop = asyncio.get_running_loop()
    threading.Thread(target=stdin_lines, args=(loop, client), daemon=True).start()
    return await client.run()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
