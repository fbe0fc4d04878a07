"""The AT modem emulator (hal/sim/modem*.py): SIM PIN/PUK counters, call scripting, SMS
storage, unplug/replug under a new pty name, and far-end audio on the PCM pty.

The core is driven with bytes directly (no pty); the emulator tests go through a real
pty as any AT client would.
"""

from __future__ import annotations

import math
import os
import select
import struct
import subprocess
import sys
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.dsp.analysis import dominant_frequency, level_dbfs
from gateway.dsp.dtmf import DtmfDetector
from gateway.modem.sms import decode_deliver, encode_submit
from hal.audio.wav import write_wav
from hal.sim.modem import FRAME_BYTES, ModemEmulator
from hal.sim.modem_at import ModemCore, split_commands
from hal.sim.modem_dialects import get_dialect

FINALS = ("OK", "ERROR", "NO CARRIER", "BUSY", "NO ANSWER", "> ")


class Wire:
    """The host side of ModemCore, bytes in and lines out."""

    def __init__(self, core: ModemCore) -> None:
        self.core = core
        self.now = 0.0

    def at(self, line: str) -> list[str]:
        self.core.receive(line.encode() + b"\r", self.now)
        return self.take()

    def take(self) -> list[str]:
        text = self.core.out.decode("latin-1")
        self.core.out.clear()
        return [ln for ln in text.split("\r\n") if ln]


def core(dialect: str = "ec25", **kw: object) -> Wire:
    wire = Wire(ModemCore(get_dialect(dialect), **kw))  # type: ignore[arg-type]
    wire.at("ATE0")
    wire.take()
    return wire


# ------------------------------------------------------------------ AT basics
def test_ati_and_identity_per_dialect() -> None:
    w = core("ec25", imei="861234567890123")
    assert w.at("ATI") == ["Quectel", "EC25", "Revision: EC25EFAR06A03M4G", "OK"]
    assert w.at("AT+CGSN") == ["861234567890123", "OK"]
    assert w.at("AT+QCCID")[0].startswith("+QCCID: 8949")
    s = core("sim7600")
    assert s.at("ATI")[0] == "Manufacturer: SIMCOM INCORPORATED"
    assert s.at("AT+QCSQ") == ["ERROR"]  # a Quectel command on a SIMCom module
    assert s.at("AT+CPSI?")[0].startswith("+CPSI: LTE,Online,262-01,")
    assert core("sim800").at("ATI") == ["SIM800 R14.18", "OK"]


def test_echo_chaining_and_errors() -> None:
    w = Wire(ModemCore(get_dialect("ec25")))
    assert w.at("AT") == ["AT\r", "OK"]  # echo on after power-up
    assert w.at("ATE0") == ["ATE0\r", "OK"]
    assert w.at("AT+CMGF=1;+CSCS=\"GSM\";+CMGF?") == ["+CMGF: 1", "OK"]
    assert w.at("AT+FOO") == ["ERROR"]
    assert w.at("AT+CMEE=1") == ["OK"]
    assert w.at("AT+FOO") == ["ERROR"]  # unknown stays plain ERROR
    assert w.at("AT+CREG=7") == ["+CME ERROR: 50"]
    assert w.at("AT+CMEE=2") == ["OK"]
    assert w.at("AT+CREG=7") == ["+CME ERROR: Incorrect parameters"]
    assert split_commands("E0V1&FS0=0+CREG=2;D+4930;") == ["E0", "V1", "&F", "S0=0", "+CREG=2", "D+4930;"]


# ------------------------------------------------------------------ SIM
def test_wrong_pins_count_down_to_puk_and_puk_sets_a_new_pin() -> None:
    w = core("ec25", pin="1234")
    assert w.at("AT+CPIN?") == ["+CPIN: SIM PIN", "OK"]
    assert w.at("AT+CMEE=1") == ["OK"]
    assert w.at("AT+CIMI") == ["+CME ERROR: 11"]
    assert w.at("AT+QPINC=\"SC\"") == ['+QPINC: "SC",3,10', "OK"]
    assert w.at('AT+CPIN="0000"') == ["+CME ERROR: 16"]
    assert w.at("AT+QPINC=\"SC\"") == ['+QPINC: "SC",2,10', "OK"]
    assert w.at('AT+CPIN="1111"') == ["+CME ERROR: 16"]
    assert w.at("AT+CPIN?") == ["+CPIN: SIM PIN", "OK"]
    assert w.at('AT+CPIN="2222"') == ["+CME ERROR: 16"]
    assert w.at("AT+CPIN?") == ["+CPIN: SIM PUK", "OK"]
    assert w.at('AT+CPIN="1234"') == ["+CME ERROR: 16"]  # the right PIN is too late
    assert w.at("AT+QPINC=\"SC\"") == ['+QPINC: "SC",0,9', "OK"]
    assert w.at('AT+CPIN="12345678","4321"') == ["OK"]
    assert w.at("AT+CPIN?") == ["+CPIN: READY", "OK"]
    assert w.at("AT+CIMI") == ["262011234567890", "OK"]
    w.core.power_on(1.0)  # power cycle: the new PIN is asked for
    assert w.at("ATE0") == ["ATE0\r", "OK"]  # echo is back on after a power cycle
    assert w.at("AT+CPIN?") == ["+CPIN: SIM PIN", "OK"]
    assert w.at('AT+CPIN="4321"') == ["OK"]


def test_right_pin_unlocks_and_sim7600_reports_spic() -> None:
    w = core("sim7600", pin="1234")
    assert w.at('AT+CPIN="9999"') == ["ERROR"]
    assert w.at("AT+SPIC") == ["+SPIC: 2,10,3,10", "OK"]
    assert w.at('AT+CPIN="1234"') == ["OK"]
    assert w.at("AT+SPIC") == ["+SPIC: 3,10,3,10", "OK"]
    assert w.at('AT+CPIN="1234"') == ["ERROR"]  # no PIN is wanted any more


# ------------------------------------------------------------------ calls
def test_incoming_call_rings_with_clip_every_3_s_until_answered() -> None:
    w = core()
    w.at("AT+CLIP=1")
    w.core.incoming_call("+4915112345")
    assert w.take() == ["RING", '+CLIP: "+4915112345",145,,,,0']
    assert w.core.get_timer() == pytest.approx(3.0)
    w.now = 3.0
    w.core.handle_timer(3.0)
    assert w.take() == ["RING", '+CLIP: "+4915112345",145,,,,0']
    assert w.at("AT+CLCC") == ['+CLCC: 1,1,4,0,0,"+4915112345",145', "OK"]
    assert w.at("ATA") == ["OK"]
    assert w.at("AT+CLCC") == ['+CLCC: 1,1,0,0,0,"+4915112345",145', "OK"]
    assert w.core.get_timer() is None  # no more RING
    w.core.remote_hangup()
    assert w.take() == ["NO CARRIER"]
    assert w.at("AT+CLCC") == ["OK"]


def test_caller_giving_up_ends_the_ringing() -> None:
    w = core()
    w.core.incoming_call("0301234")
    assert w.take() == ["RING"]  # no +CLIP until AT+CLIP=1
    w.core.caller_gave_up()
    assert w.take() == ["NO CARRIER"]
    assert w.core.get_timer() is None
    assert w.at("ATA") == ["NO CARRIER"]


@pytest.mark.parametrize("result", ["BUSY", "NO ANSWER", "NO CARRIER"])
def test_outgoing_call_rejected(result: str) -> None:
    w = core()
    assert w.at("ATD+4930123456;") == ["OK"]
    assert w.at("AT+CLCC") == ['+CLCC: 1,0,2,0,0,"+4930123456",145', "OK"]
    w.core.remote_reject(result)
    assert w.take() == [result]
    assert w.at("AT+CLCC") == ["OK"]
    assert w.at("AT+CEER")[0].startswith('+CEER: "CC INFO",')


def test_outgoing_call_answered_dtmf_and_hangup() -> None:
    w = core("sim7600")
    seen: list[str] = []
    w.core.call_listeners.append(lambda what, call: seen.append(what))
    assert w.at("AT+CLCC=1") == ["OK"]
    assert w.at("ATD0301234;") == ['+CLCC: 1,0,2,0,0,"0301234",129', "OK"]
    assert w.at("AT+VTS=1") == ["ERROR"]  # no active call yet
    w.core.remote_alerting()
    w.core.remote_answer()
    w.core.handle_timer(0.0)
    assert w.take() == [
        '+CLCC: 1,0,3,0,0,"0301234",129',
        '+CLCC: 1,0,0,0,0,"0301234",129',
        "VOICE CALL: BEGIN",
    ]
    assert w.at('AT+VTS="5";+VTS=#') == ["OK"]
    assert w.core.dtmf_sent == ["5", "#"]
    assert w.at("AT+CHUP") == ['+CLCC: 1,0,6,0,0,"0301234",129', "OK"]
    assert seen == ["dialing", "alerting", "answered", "ended"]


def test_no_call_without_network() -> None:
    w = core()
    w.at("AT+CREG=1")
    w.core.set_network("searching", 99)
    assert w.take() == ["+CREG: 2"]
    assert w.at("AT+CSQ") == ["+CSQ: 99,99", "OK"]
    assert w.at("AT+QCSQ") == ['+QCSQ: "NOSERVICE"', "OK"]
    assert w.at("ATD112;") == ["NO CARRIER"]
    w.core.set_network("home", 20)
    assert w.take() == ["+CREG: 1"]
    assert w.at("AT+CREG=2;+CREG?") == ['+CREG: 2,1,"1A2B","01A2B3C4",7', "OK"]
    assert w.at("AT+CSQ") == ["+CSQ: 20,99", "OK"]


# ------------------------------------------------------------------ SMS
def test_multipart_sms_out_of_order_with_cmti_then_read_in_pdu_mode() -> None:
    w = core()
    w.at("AT+CNMI=2,1,0,0,0")
    text = "x" * 400  # three GSM-7 parts of at most 153 septets
    slots = w.core.deliver_sms("+4917612345678", text, order=[2, 0, 1])
    assert w.take() == [f'+CMTI: "SM",{i}' for i in slots]
    parts = [decode_deliver(w.at(f"AT+CMGR={i}")[1]) for i in slots]
    assert [p.concat.seq for p in parts if p.concat] == [3, 1, 2]
    assert "".join(p.text for p in sorted(parts, key=lambda p: p.concat.seq if p.concat else 0)) == text
    assert w.at("AT+CMGL=0") == ["OK"]  # all read now
    assert w.at("AT+CMGD=0,4") == ["OK"]
    assert w.at("AT+CPMS?") == ['+CPMS: "SM",0,30,"SM",0,30,"SM",0,30', "OK"]


def test_sms_in_text_mode_and_cmt_routing() -> None:
    w = core()
    w.at("AT+CMGF=1")
    w.core.deliver_sms("+4930111", "hallo")
    assert w.take() == []  # CNMI 0,0: stored silently
    assert w.at('AT+CMGL="ALL"') == [
        '+CMGL: 0,"REC UNREAD","+4930111",,"26/12/06,12:00:00+04"', "hallo", "OK"]
    w.at("AT+CNMI=2,2")
    w.core.deliver_sms("+4930111", "direkt")
    assert w.take() == ['+CMT: "+4930111",,"26/12/06,12:00:00+04"', "direkt"]


def test_cmgs_in_pdu_and_text_mode_reaches_the_far_end() -> None:
    w = core()
    pdu = encode_submit("+4912345", "hello")
    assert w.at(f"AT+CMGS={pdu.length}") == ["> "]
    w.core.receive(pdu.hex.encode() + b"\x1a", 0.0)
    assert w.take() == ["+CMGS: 1", "OK"]
    w.at("AT+CMGF=1")
    assert w.at('AT+CMGS="+4954321"') == ["> "]
    w.core.receive(b"second\x1a", 0.0)
    assert w.take() == ["+CMGS: 2", "OK"]
    assert w.core.far_end_texts() == [("+4912345", "hello"), ("+4954321", "second")]
    assert w.at(f"AT+CMGF=0;+CMGS={pdu.length + 1}") == ["> "]
    w.core.receive(pdu.hex.encode() + b"\x1a", 0.0)
    assert w.take() == ["ERROR"]  # a length that does not match the PDU


# ------------------------------------------------------------------ over the pty
class Client:
    """An AT client on the emulator's pty."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self.buf = b""

    def read_until(self, token: bytes, timeout: float = 2.0) -> bytes:
        end = time.monotonic() + timeout
        while token not in self.buf:
            left = end - time.monotonic()
            assert left > 0, f"no {token!r} within {timeout} s; got {self.buf!r}"
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                self.buf += os.read(self.fd, 4096)
        head, _, self.buf = self.buf.partition(token)
        return head + token

    def at(self, line: str) -> bytes:
        os.write(self.fd, line.encode() + b"\r")
        return self.read_until(b"OK\r\n")

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def emu() -> Iterator[ModemEmulator]:
    with ModemEmulator("ec25", imei="861234567890123") as e:
        yield e


def test_unplug_gives_eio_and_replug_is_a_new_pty_with_the_same_imei(emu: ModemEmulator) -> None:
    first = emu.at_path
    client = Client(first)
    assert b"861234567890123" in client.at("AT+CGSN")
    emu.unplug()
    with pytest.raises(OSError):
        for _ in range(50):  # the pending read sees the hang-up at once
            if not os.read(client.fd, 100):
                raise OSError("EOF")
    client.close()
    second = emu.replug()
    assert second != first
    assert emu.at_path == second
    again = Client(second)
    assert b"861234567890123" in again.at("AT+CGSN")
    assert b"+CPIN: READY" in again.at("AT+CPIN?")
    again.close()


def test_replug_reboots_the_module_sim_pin_again() -> None:
    with ModemEmulator("sim800", pin="1234") as e:
        c = Client(e.at_path)
        c.at('AT+CPIN="1234"')
        assert b"READY" in c.at("AT+CPIN?")
        c.close()
        e.unplug()
        c = Client(e.replug())
        assert b"SIM PIN" in c.at("AT+CPIN?")
        c.close()


def test_ring_urcs_arrive_on_the_pty(emu: ModemEmulator) -> None:
    c = Client(emu.at_path)
    c.at("ATE0;+CLIP=1")
    emu.incoming_call("+4915112345")
    assert c.read_until(b'+CLIP: "+4915112345",145,,,,0\r\n').endswith(b"\r\n")
    c.at("ATA")
    assert emu.calls[0].state == "active"
    c.close()


def tone(freq: float, seconds: float, dbfs: float = -12.0) -> bytes:
    """A sine whose RMS level is `dbfs` (gateway.dsp.analysis.level_dbfs's scale)."""
    n = int(8000 * seconds)
    amp = 10 ** (dbfs / 20) * 32767 * math.sqrt(2)
    return struct.pack(f"<{n}h", *(int(amp * math.sin(2 * math.pi * freq * i / 8000)) for i in range(n)))


def test_serial_pcm_carries_far_end_audio_both_ways_at_real_time_pace(emu: ModemEmulator) -> None:
    assert emu.pcm_path is not None
    c = Client(emu.at_path)
    pcm = Client(emu.pcm_path)
    c.at("ATE0;+QPCMV=1,0")
    c.at("ATD+4930123;")
    emu.remote_answer()
    emu.play_pcm(tone(1000, 0.4))
    got = b""
    t0 = time.monotonic()
    while len(got) < 8000 * 2 * 0.4:
        ready, _, _ = select.select([pcm.fd], [], [], 2.0)
        assert ready, "no PCM from the emulator"
        got += os.read(pcm.fd, 4096)
        os.write(pcm.fd, tone(440, 0.02, -20.0))
    elapsed = time.monotonic() - t0
    assert elapsed > 0.25  # paced, not dumped (0.4 s of audio; generous for a loaded box)
    speech = got[FRAME_BYTES:int(8000 * 2 * 0.35)]
    assert abs(dominant_frequency(speech) - 1000) < 20
    assert abs(level_dbfs(speech) - -12.0) < 1.5
    heard = emu.heard()
    assert len(heard) >= 10 * FRAME_BYTES
    assert abs(dominant_frequency(heard) - 440) < 20
    assert abs(level_dbfs(heard) - -20.0) < 1.5
    c.at("ATH")
    emu.clear_heard()
    os.write(pcm.fd, tone(440, 0.1))
    time.sleep(0.1)
    assert emu.heard() == b""  # no call, no voice path
    c.close()
    pcm.close()


def test_cmt_in_pdu_mode_carries_the_deliver_pdu() -> None:
    w = core()
    w.at("AT+CNMI=2,2,0,0,0")
    assert w.core.deliver_sms("+4930111", "sofort") == []
    header, pdu = w.take()
    sms = decode_deliver(pdu)
    assert header == f"+CMT: ,{sms.tpdu_length}"
    assert (sms.originator, sms.text) == ("+4930111", "sofort")


def test_far_end_plays_a_wav_file(emu: ModemEmulator, tmp_path: Path) -> None:
    wav = tmp_path / "far.wav"
    write_wav(wav, tone(697, 0.2, -18.0))
    emu.play_wav(wav)
    c = Client(emu.at_path)
    pcm = Client(emu.pcm_path or "")
    c.at("AT+QPCMV=1,0;D+4930123;")
    emu.remote_answer()
    got = b""
    while len(got) < 8000 * 2 * 0.2:
        ready, _, _ = select.select([pcm.fd], [], [], 2.0)
        assert ready, "no PCM from the emulator"
        got += os.read(pcm.fd, 4096)
    assert abs(dominant_frequency(got[:3200]) - 697) < 15
    assert abs(level_dbfs(got[:3200]) - -18.0) < 1.5
    c.close()
    pcm.close()


def test_runs_on_its_own_and_prints_its_pty_paths() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hal.sim.modem", "--dialect", "sim7600", "--imei", "350000000000017"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        at_line = proc.stdout.readline()
        pcm_line = proc.stdout.readline()
        assert at_line.startswith("AT port: /dev/pts/"), at_line
        assert pcm_line.startswith("PCM port: /dev/pts/"), pcm_line
        c = Client(at_line.split()[2])
        reply = c.at("ATI")
        assert b"Manufacturer: SIMCOM INCORPORATED" in reply
        assert b"IMEI: 350000000000017" in reply
        c.close()
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_echo_is_per_character_and_a_slash_repeats() -> None:
    w = Wire(ModemCore(get_dialect("ec25")))
    w.core.receive(b"AT+CS", 0.0)
    assert bytes(w.core.out) == b"AT+CS"  # echoed before the line is complete
    w.core.receive(b"Q\r", 0.0)
    assert w.take() == ["AT+CSQ\r", "+CSQ: 24,99", "OK"]
    w.core.receive(b"A/", 0.0)
    assert w.take() == ["A/", "+CSQ: 24,99", "OK"]


def test_withheld_caller_and_dtmf_from_the_far_end() -> None:
    w = core("ec25")
    w.at("AT+CLIP=1;+QTONEDET=1")
    w.core.incoming_call("")
    assert w.take() == ["RING", '+CLIP: "",128,,,,1']
    with pytest.raises(RuntimeError):
        w.core.far_end_dtmf("5")  # not before the call is answered
    w.at("ATA")
    w.core.far_end_dtmf("5")
    w.core.far_end_dtmf("#")
    assert w.take() == ["+QTONEDET: 53", "+QTONEDET: 35"]
    s = core("sim800")
    assert s.at("AT+QTONEDET=1") == ["ERROR"]
    s.at("AT+DDET=1")
    s.core.incoming_call("+4930")
    s.at("ATA")
    s.take()
    s.core.far_end_dtmf("7")
    assert s.take() == ["+DTMF: 7"]


def test_ussd_reply_arrives_as_urc_after_ok() -> None:
    w = core("sim7600")
    w.core.ussd_replies["*100#"] = "Guthaben: 12,34 EUR"
    assert w.at('AT+CUSD=1,"*100#",15') == ["OK"]
    assert w.core.get_timer() is not None
    w.core.handle_timer(1.0)
    assert w.take() == ['+CUSD: 0,"Guthaben: 12,34 EUR",15']


def test_far_end_dtmf_is_in_band_on_the_pcm_pty(emu: ModemEmulator) -> None:
    c = Client(emu.at_path)
    pcm = Client(emu.pcm_path or "")
    c.at("ATE0;+QPCMV=1,0;+QTONEDET=1")
    emu.incoming_call("+4930999")
    c.at("ATA")
    emu.far_end_dtmf("19")
    assert b"+QTONEDET: 49" in c.read_until(b"+QTONEDET: 57\r\n")
    detector = DtmfDetector()
    audio = b""
    while len(audio) < 8000 * 2 * 0.5:
        ready, _, _ = select.select([pcm.fd], [], [], 2.0)
        assert ready, "no PCM from the emulator"
        audio += os.read(pcm.fd, 4096)
    digits = "".join(detector.feed(audio[: len(audio) // 2 * 2]))
    assert digits == "19"
    c.close()
    pcm.close()


def test_information_text_is_one_block_and_urcs_stand_alone() -> None:
    """Byte-exact framing as modules print it: ATI's lines are one block (one CR LF
    before, one after each line), a chained command's answers are separate blocks, URCs
    and the final result are CR LF on both sides."""
    c = ModemCore(get_dialect("ec25"))
    c.receive(b"ATI\r", 0.0)
    assert bytes(c.out) == b"ATI\r\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A03M4G\r\n\r\nOK\r\n"
    c.out.clear()
    c.receive(b"ATE0;+CMGF?;+CSCS?\r", 0.0)
    assert bytes(c.out) == b'ATE0;+CMGF?;+CSCS?\r\r\n+CMGF: 0\r\n\r\n+CSCS: "GSM"\r\n\r\nOK\r\n'
    c.out.clear()
    c.receive(b"AT+CMGS=18\r", 0.0)
    assert bytes(c.out) == b"\r\n> "
    c.out.clear()
    c.receive(b"\x1b", 0.0)  # cancelled
    c.incoming_call("+4930")
    assert bytes(c.out) == b"\r\nOK\r\n\r\nRING\r\n"


def test_dial_modifiers_are_not_part_of_the_number() -> None:
    w = core()
    assert w.at("ATDT+49,30W123;") == ["OK"]
    assert w.core.calls[0].number == "+4930123"


def test_ussd_string_follows_cscs() -> None:
    w = core()
    w.core.ussd_replies["*100#"] = "5 €"
    assert w.at('AT+CSCS="UCS2";+CUSD=1,"002A0031003000300023",15') == ["OK"]
    w.core.handle_timer(1.0)
    assert w.take() == ['+CUSD: 0,"0035002020AC",15']
