"""The SMS half of the emulated module: message storage and the +CMGx commands.

Messages are kept as the PDUs a SIM stores (TS 23.040, via gateway.modem.sms), in PDU
mode shown as they are and in text mode decoded, so both modes read the same store.
What the host sends (AT+CMGS, AT+CMSS) is decoded and handed to the far end.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.modem.sms import (
    SmsDeliver,
    SmsSubmit,
    decode_pdu,
    decode_submit,
    encode_deliver_parts,
    encode_submit,
)
from hal.sim.modem_syntax import CommandError

if TYPE_CHECKING:
    from hal.sim.modem_at import Settings

STORE_SIZE = 30
STAT_NAMES = ("REC UNREAD", "REC READ", "STO UNSENT", "STO SENT")


@dataclass
class StoredSms:
    """One occupied storage slot: its status (0-3 as in AT+CMGL) and the PDU."""

    stat: int
    pdu: str
    """Hex, led by the SMSC address octets as +CMGR shows it."""
    length: int
    """TPDU length in octets (without the SMSC part)."""


def _error(code: int) -> CommandError:
    return CommandError(code, sms=True)


def _stamp(when: dt.datetime) -> str:
    offset = when.utcoffset() or dt.timedelta(0)
    quarters = int(offset.total_seconds() // 900)
    return when.strftime("%y/%m/%d,%H:%M:%S") + f"{quarters:+03d}"


class SmsSide:
    """Mixin for :class:`hal.sim.modem_at.ModemCore`: SMS state and commands."""

    settings: Settings
    emit: Callable[..., None]
    need_sim: Callable[[], None]

    def __init__(self) -> None:
        self.stores: dict[str, dict[int, StoredSms]] = {"SM": {}, "ME": {}}
        self.smsc = "+491710760000"
        self.sent_sms: list[SmsSubmit] = []
        self.on_sms_sent: list[Callable[[SmsSubmit], None]] = []
        self._mr = 0
        self._concat_ref = 0
        self.sms_reset()

    def sms_reset(self) -> None:
        self.cmgf = 0
        self.cscs = "GSM"
        self.cnmi = (0, 0, 0, 0, 0)
        self.mems = ["SM", "SM", "SM"]
        self._body: bytearray | None = None
        self._body_for: tuple[str, str] = ("", "")

    # ------------------------------------------------------------- settings
    def _c_cmgf(self, op: str, arg: str) -> str | None:
        if op == "?":
            self.emit(f"+CMGF: {self.cmgf}")
        elif op == "=?":
            self.emit("+CMGF: (0,1)")
        elif op == "=":
            if arg not in ("0", "1"):
                raise _error(302)
            self.cmgf = int(arg)
        return None

    def _c_cscs(self, op: str, arg: str) -> str | None:
        if op == "?":
            self.emit(f'+CSCS: "{self.cscs}"')
        elif op == "=?":
            self.emit('+CSCS: ("IRA","GSM","UCS2")')
        elif op == "=":
            name = arg.strip('"').upper()
            if name not in ("IRA", "GSM", "UCS2"):
                raise CommandError(4)
            self.cscs = name
        return None

    def _c_csms(self, op: str, arg: str) -> str | None:
        if op == "?":
            self.emit("+CSMS: 0,1,1,1")
        elif op == "=?":
            self.emit("+CSMS: (0,1)")
        else:
            self.emit("+CSMS: 1,1,1")
        return None

    def _c_cnmi(self, op: str, arg: str) -> str | None:
        if op == "?":
            self.emit("+CNMI: " + ",".join(map(str, self.cnmi)))
        elif op == "=?":
            self.emit("+CNMI: (0-2),(0-3),(0,2),(0-2),(0,1)")
        elif op == "=":
            vals = [v.strip() for v in arg.split(",")]
            if not all(v.isdigit() or v == "" for v in vals) or len(vals) > 5:
                raise _error(303)
            cur = list(self.cnmi)
            for i, v in enumerate(vals):
                if v:
                    cur[i] = int(v)
            if cur[1] > 3:
                raise _error(303)
            self.cnmi = (cur[0], cur[1], cur[2], cur[3], cur[4])
        return None

    def _c_csca(self, op: str, arg: str) -> str | None:
        if op == "?":
            self.need_sim()
            kind = 145 if self.smsc.startswith("+") else 129
            self.emit(f'+CSCA: "{self.smsc}",{kind}')
        elif op == "=":
            self.smsc = arg.split(",")[0].strip().strip('"')
        return None

    def _c_cpms(self, op: str, arg: str) -> str | None:
        if op == "=?":
            self.emit('+CPMS: ("SM","ME"),("SM","ME"),("SM","ME")')
            return None
        self.need_sim()
        if op == "?":
            parts = [f'"{m}",{len(self.stores[m])},{STORE_SIZE}' for m in self.mems]
            self.emit("+CPMS: " + ",".join(parts))
            return None
        names = [a.strip().strip('"').upper() for a in arg.split(",") if a.strip()]
        if not names or any(n not in self.stores for n in names):
            raise _error(302)
        for i, name in enumerate(names[:3]):
            self.mems[i] = name
        counts = [f"{len(self.stores[m])},{STORE_SIZE}" for m in self.mems]
        self.emit("+CPMS: " + ",".join(counts))
        return None

    # ------------------------------------------------------------- reading
    def _header(self, kind: str, idx: int | None, sms: StoredSms) -> str:
        lead = f"{kind}: " + (f"{idx}," if idx is not None else "")
        if self.cmgf == 0:
            return f"{lead}{sms.stat},,{sms.length}"
        msg = decode_pdu(sms.pdu)
        stat = f'"{STAT_NAMES[sms.stat]}"'
        if isinstance(msg, SmsDeliver):
            return f'{lead}{stat},"{msg.originator}",,"{_stamp(msg.timestamp)}"'
        return f'{lead}{stat},"{msg.destination}",'

    def _body_text(self, sms: StoredSms) -> str:
        if self.cmgf == 0:
            return sms.pdu
        text = decode_pdu(sms.pdu).text
        if self.cscs == "UCS2":
            return text.encode("utf-16-be").hex().upper()
        return text

    def _show(self, kind: str, idx: int | None, sms: StoredSms) -> None:
        self.emit(self._header(kind, idx, sms))
        self.out += self._body_text(sms).encode("latin-1", "replace") + b"\r\n"  # type: ignore[attr-defined]
        if sms.stat == 0:
            sms.stat = 1

    def _c_cmgl(self, op: str, arg: str) -> str | None:
        self.need_sim()
        if op == "=?":
            if self.cmgf:
                self.emit('+CMGL: ("REC UNREAD","REC READ","STO UNSENT","STO SENT","ALL")')
            else:
                self.emit("+CMGL: (0-4)")
            return None
        want = arg.strip().strip('"').upper() or ("REC UNREAD" if self.cmgf else "0")
        if self.cmgf:
            names = {*STAT_NAMES, "ALL"}
            if want not in names:
                raise _error(302)
            stat = 4 if want == "ALL" else STAT_NAMES.index(want)
        else:
            if want not in ("0", "1", "2", "3", "4"):
                raise _error(302)
            stat = int(want)
        store = self.stores[self.mems[0]]
        for idx in sorted(store):
            if stat == 4 or store[idx].stat == stat:
                self._show("+CMGL", idx, store[idx])
        return None

    def _index(self, arg: str) -> int:
        first = arg.split(",")[0].strip()
        if not first.isdigit():
            raise _error(302)
        idx = int(first)
        if not 0 <= idx < STORE_SIZE:
            raise _error(321)
        return idx

    def _c_cmgr(self, op: str, arg: str) -> str | None:
        self.need_sim()
        if op != "=":
            return None
        sms = self.stores[self.mems[0]].get(self._index(arg))
        if sms is not None:
            self._show("+CMGR", None, sms)
        return None

    def _c_cmgd(self, op: str, arg: str) -> str | None:
        self.need_sim()
        if op == "=?":
            self.emit("+CMGD: (" + ",".join(map(str, sorted(self.stores[self.mems[0]]))) + "),(0-4)")
            return None
        idx = self._index(arg)
        parts = arg.split(",")
        flag = int(parts[1]) if len(parts) > 1 and parts[1].strip().isdigit() else 0
        store = self.stores[self.mems[0]]
        if flag == 0:
            store.pop(idx, None)
        else:
            drop = {1: {1}, 2: {1, 3}, 3: {1, 2, 3}, 4: {0, 1, 2, 3}}.get(flag, set())
            for i in [i for i, s in store.items() if s.stat in drop]:
                del store[i]
        return None

    # ------------------------------------------------------------- writing
    def _c_cmgs(self, op: str, arg: str) -> str | None:
        return self._start_body("+CMGS", op, arg)

    def _c_cmgw(self, op: str, arg: str) -> str | None:
        if op == "":
            op, arg = "=", ""
        return self._start_body("+CMGW", op, arg)

    def _start_body(self, cmd: str, op: str, arg: str) -> str | None:
        self.need_sim()
        if op == "=?":
            return None
        if op != "=":
            raise _error(302)
        if self.cmgf == 0 and not arg.strip().isdigit() and not (cmd == "+CMGW" and arg == ""):
            raise _error(304)
        if self.cmgf == 1 and cmd == "+CMGS" and not arg.strip():
            raise _error(304)
        self._body = bytearray()
        self._body_for = (cmd, arg)
        self.out += b"\r\n> "  # type: ignore[attr-defined]
        return ""

    def sms_collecting(self) -> bool:
        return self._body is not None

    def sms_body_byte(self, b: int) -> None:
        assert self._body is not None
        if b == 0x1B:  # ESC: the host changed its mind
            self._body = None
            self.emit("OK")
        elif b == 0x1A:
            body, (cmd, arg) = self._body.decode("latin-1"), self._body_for
            self._body = None
            try:
                self._finish_body(cmd, arg, body)
            except Exception as exc:  # noqa: BLE001 - a bad PDU is the host's error
                self.error(exc if isinstance(exc, CommandError) else _error(304))  # type: ignore[attr-defined]
        elif b == 0x0D and self.cmgf == 1:
            self._body.extend(b"\n")
            self.out += b"\r\n> "  # type: ignore[attr-defined]
        elif b not in (0x0A, 0x0D):
            self._body.append(b)

    def _finish_body(self, cmd: str, arg: str, body: str) -> None:
        if self.cmgf == 0:
            hexpdu = "".join(body.split())
            length = int(arg.split(",")[0]) if arg.strip() else len(hexpdu) // 2
            decoded = decode_pdu(hexpdu)
            if len(bytes.fromhex(hexpdu)) - (bytes.fromhex(hexpdu)[0] + 1) != length:
                raise _error(304)
            stored = StoredSms(2, hexpdu, length)
        else:
            args = [a.strip().strip('"') for a in arg.split(",")] if arg.strip() else [""]
            text = body
            if self.cscs == "UCS2":
                text = bytes.fromhex(body).decode("utf-16-be")
            pdu = encode_submit(args[0], text)
            stored = StoredSms(2, pdu.hex, pdu.length)
            decoded = decode_pdu(pdu.hex)
        if cmd == "+CMGS":
            if not isinstance(decoded, SmsSubmit):
                raise _error(304)
            self._mr = (self._mr + 1) % 256
            self.emit(f"+CMGS: {self._mr}", "OK")
            self._far_end_gets(stored.pdu)
        else:
            idx = self._free_slot(self.mems[1])
            self.stores[self.mems[1]][idx] = stored
            self.emit(f"+CMGW: {idx}", "OK")

    def _c_cmss(self, op: str, arg: str) -> str | None:
        self.need_sim()
        sms = self.stores[self.mems[1]].get(self._index(arg))
        if sms is None:
            raise _error(321)
        self._mr = (self._mr + 1) % 256
        self.emit(f"+CMSS: {self._mr}")
        sms.stat = 3
        self._far_end_gets(sms.pdu)
        return None

    def _far_end_gets(self, pdu: str) -> None:
        msg = decode_submit(pdu)
        self.sent_sms.append(msg)
        for listener in list(self.on_sms_sent):
            listener(msg)

    def _free_slot(self, mem: str) -> int:
        store = self.stores[mem]
        for i in range(STORE_SIZE):
            if i not in store:
                return i
        raise _error(322)

    # ------------------------------------------------------------- network side
    def deliver_sms(
        self,
        sender: str,
        text: str,
        *,
        order: list[int] | None = None,
        when: dt.datetime | None = None,
    ) -> list[int]:
        """The network delivers `text` from `sender`, as one or several concatenated parts
        sent in `order` (0-based part numbers). Returns the storage slots used (empty when
        +CNMI routes them straight to the host as +CMT)."""
        stamp = when or dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
        self._concat_ref = (self._concat_ref + 1) % 256
        parts = encode_deliver_parts(sender, text, stamp, reference=self._concat_ref,
                                     smsc=self.smsc)
        chosen = order if order is not None else list(range(len(parts)))
        if sorted(chosen) != list(range(len(parts))):
            raise ValueError(f"order {chosen} is not a permutation of {len(parts)} parts")
        slots: list[int] = []
        for n in chosen:
            pdu = parts[n]
            if self.cnmi[1] in (2, 3) and self.cnmi[0] != 0:
                self._cmt(pdu.hex, pdu.length)
                continue
            mem = self.mems[2]
            idx = self._free_slot(mem)
            self.stores[mem][idx] = StoredSms(0, pdu.hex, pdu.length)
            slots.append(idx)
            if self.cnmi[1] == 1 and self.cnmi[0] != 0:
                self.emit(f'+CMTI: "{mem}",{idx}')
        return slots

    def _cmt(self, pdu: str, length: int) -> None:
        if self.cmgf == 0:
            self.emit(f"+CMT: ,{length}")
            self.out += pdu.encode() + b"\r\n"  # type: ignore[attr-defined]
        else:
            msg = decode_pdu(pdu)
            assert isinstance(msg, SmsDeliver)
            self.emit(f'+CMT: "{msg.originator}",,"{_stamp(msg.timestamp)}"')
            self.out += msg.text.encode("latin-1", "replace") + b"\r\n"  # type: ignore[attr-defined]

    def far_end_texts(self) -> list[tuple[str, str]]:
        """(number, text) of each message the far end got, concatenated parts joined."""
        whole: list[tuple[str, str]] = []
        pending: dict[tuple[str, int], dict[int, str]] = {}
        for msg in self.sent_sms:
            if msg.concat is None:
                whole.append((msg.destination, msg.text))
                continue
            key = (msg.destination, msg.concat.reference)
            got = pending.setdefault(key, {})
            got[msg.concat.seq] = msg.text
            if len(got) == msg.concat.total:
                whole.append((msg.destination, "".join(got[i] for i in sorted(got))))
                del pending[key]
        return whole
