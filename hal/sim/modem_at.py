"""The module's side of the AT wire: a small, literal command interpreter with state.

This is the other end of the driver's engine (gateway/modem/at.py) and shares nothing
with it: it reads command lines the way a module's firmware does (S3 = CR ends a line,
echo when E1, several commands chained after one "AT"), answers with V1 verbose result
codes framed in CR LF, and emits unsolicited result codes when the simulated network
changes something.

Bytes in (:meth:`ModemCore.receive`), bytes out (:attr:`ModemCore.out`), time only as
the `now` passed in; the pty adapter in :mod:`hal.sim.modem` does the I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hal.sim.modem_calls import RING_PERIOD_S, Call, CallSide
from hal.sim.modem_dialects import Dialect
from hal.sim.modem_sms import SmsSide
from hal.sim.modem_syntax import UNKNOWN, CommandError, parse_extended, split_args, split_commands

__all__ = ["RING_PERIOD_S", "Call", "CommandError", "ModemCore", "Settings", "split_commands"]

CME_TEXT = {
    3: "operation not allowed",
    4: "operation not supported",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    16: "incorrect password",
    30: "no network service",
    50: "Incorrect parameters",
    100: "unknown",
}

REG_STATES = {"home": 1, "roaming": 5, "searching": 2, "denied": 3, "none": 0}


@dataclass
class Settings:
    """What ATZ / AT&F / a power cycle put back."""

    echo: bool = True
    cmee: int = 0
    creg: int = 0
    cereg: int = 0
    cgreg: int = 0
    clip: int = 0
    clcc_urc: int = 0
    cops_format: int = 0
    pcm: tuple[int, int] = (0, 0)
    dtmf_urc: int = 0
    extra: dict[str, str] = field(default_factory=dict)


class ModemCore(CallSide, SmsSide):
    """A GSM/LTE module's AT interpreter and its view of the network and SIM."""

    def __init__(
        self,
        dialect: Dialect,
        *,
        imei: str = "867698041234567",
        imsi: str = "262011234567890",
        iccid: str = "89490200001234567890",
        pin: str | None = None,
        puk: str = "12345678",
        operator: tuple[str, str, str] = ("Telekom.de", "TDG", "26201"),
        own_number: str = "+4915100000001",
    ) -> None:
        super().__init__()
        self.dialect = dialect
        self.imei = imei
        self.imsi = imsi
        self.iccid = iccid
        self.pin = pin
        self.puk = puk
        self.operator = operator
        self.own_number = own_number
        self.out = bytearray()
        self.settings = Settings()
        self.pin_attempts = 3
        self.puk_attempts = 10
        self.sim_state = "READY"
        self.cfun = 1
        self.reg = "home"
        self.rssi = 24  # +CSQ units: -113 + 2*24 = -65 dBm
        self.calls: list[Call] = []
        self.last_end_cause = "No cause information available"
        self.dtmf_sent: list[str] = []
        self.ussd_replies: dict[str, str] = {}
        self.call_listeners: list[Callable[[str, Call], None]] = []
        self._line = bytearray()
        self._last_command = ""
        self._current = ""
        self._info_open: bool | None = None
        """None outside a command; False/True: in one, before/after its first info line."""
        self._ring_at: float | None = None
        self._pending_urcs: list[tuple[float, str]] = []
        self._now = 0.0
        self.power_on(0.0)

    # ----------------------------------------------------------------- framing
    def power_on(self, now: float) -> None:
        """A module that just booted: defaults back, the SIM locked again if it has a PIN."""
        self._now = now
        self.settings = Settings()
        self.calls.clear()
        self._ring_at = None
        self._line.clear()
        self.sms_reset()
        if self.sim_state != "BLOCKED":
            self.sim_state = "SIM PIN" if self.pin is not None else "READY"
            if self.puk_attempts and self.pin_attempts == 0:
                self.sim_state = "SIM PUK"

    def receive(self, data: bytes, now: float) -> None:
        """Bytes the host wrote to the AT port."""
        self._now = now
        for b in data:
            if self.sms_collecting():
                if self.settings.echo and b not in (0x1A, 0x1B):
                    self.out.append(b)
                self.sms_body_byte(b)
                continue
            if self.settings.echo and b != 0x0A:
                self.out.append(b)  # firmware echoes each character as it arrives
            if b == 0x0D:
                line = self._line.decode("latin-1")
                self._line.clear()
                self._line_done(line)
            elif b == 0x0A:
                continue
            elif b == 0x08:
                del self._line[-1:]
            else:
                self._line.append(b)
                if len(self._line) == 2 and bytes(self._line).upper() == b"A/":
                    self._line.clear()
                    self._line_done(self._last_command)

    def _line_done(self, line: str) -> None:
        text = line.strip()
        if len(text) < 2 or text[:2].upper() != "AT":
            return  # a module ignores what does not start with AT
        self._last_command = text
        self.execute(text[2:])

    def emit(self, *lines: str) -> None:
        """Lines for the host. Inside a command's answer they are information text: one
        CR LF opens the block, each line ends with CR LF (V.250 5.7.1, as real modules
        print ATI or +CMGL). Anything else is an unsolicited result code, CR LF both sides."""
        for line in lines:
            data = line.encode("latin-1") + b"\r\n"
            if self._info_open is None:
                self.out += b"\r\n" + data
            else:
                if not self._info_open:
                    self.out += b"\r\n"
                    self._info_open = True
                self.out += data

    def final(self, result: str) -> None:
        self._info_open = None
        self.out += b"\r\n" + result.encode("latin-1") + b"\r\n"

    def error(self, exc: CommandError) -> None:
        if self.settings.cmee == 0 or exc.code == UNKNOWN:
            self.final("ERROR")
            return
        kind = "+CMS ERROR" if exc.sms else "+CME ERROR"
        if self.settings.cmee == 2 and not exc.sms:
            self.final(f"{kind}: {CME_TEXT.get(exc.code, 'unknown')}")
        else:
            self.final(f"{kind}: {exc.code}")

    # ----------------------------------------------------------------- timers
    def get_timer(self) -> float | None:
        times = [t for t, _ in self._pending_urcs]
        if self._ring_at is not None:
            times.append(self._ring_at)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        self._now = now
        due = [u for u in self._pending_urcs if u[0] <= now]
        self._pending_urcs = [u for u in self._pending_urcs if u[0] > now]
        for _, line in due:
            self.emit(line)
        if self._ring_at is not None and now >= self._ring_at:
            self._ring()

    # ----------------------------------------------------------------- commands
    def execute(self, body: str) -> None:
        """One command line after "AT": each command in turn, one final result."""
        try:
            commands = split_commands(body)
        except ValueError:
            self.final("ERROR")
            return
        if not commands:
            self.final("OK")
            return
        for cmd in commands:
            self._info_open = False  # each command's answer is its own block
            try:
                result = self.run_one(cmd)
            except CommandError as exc:
                self.error(exc)
                return
            if result is not None:  # the command gave its own final (prompt, NO CARRIER)
                self._info_open = None
                if result:
                    self.final(result)
                return
        self.final("OK")

    def run_one(self, cmd: str) -> str | None:
        """Run one command; None means carry on (OK so far), a string is a final result
        ("" for a final already written, e.g. the SMS prompt)."""
        head = cmd[:1].upper()
        if head in "+^$%&":
            if head == "&":
                name, op, arg = "&" + cmd[1:2].upper(), "=", cmd[2:]
            else:
                name, op, arg = parse_extended(cmd)
            handler = self._handlers().get(name)
            self._current = name
            if handler is None or (name in VENDOR and name not in self.dialect.vendor):
                raise CommandError(UNKNOWN)
            return handler(op, arg)
        return self._basic(head, cmd[1:])

    def _basic(self, letter: str, arg: str) -> str | None:
        if letter == "E":
            self.settings.echo = arg != "0"
        elif letter in "QVXS":
            pass
        elif letter == "Z":
            self.settings = Settings()
        elif letter == "I":
            imei = self.imei
            self.emit(*(line.format(imei=imei) for line in self.dialect.ati))
        elif letter == "D":
            return self._dial(arg)
        elif letter == "A":
            return self._answer()
        elif letter == "H":
            self._hang_up_all()
        else:
            raise CommandError(UNKNOWN)
        return None

    def _handlers(self) -> dict[str, Callable[[str, str], str | None]]:
        return {
            "&F": self._c_factory, "&W": self._c_ok, "&D": self._c_ok, "&C": self._c_ok,
            "+CGMI": self._ident("cgmi"), "+GMI": self._ident("cgmi"),
            "+CGMM": self._ident("cgmm"), "+GMM": self._ident("cgmm"),
            "+CGMR": self._ident("cgmr"), "+GMR": self._ident("gmr"),
            "+CGSN": self._c_imei, "+GSN": self._c_imei,
            "+GCAP": self._c_gcap,
            "+CIMI": self._c_cimi, "+CCID": self._c_ccid, "+QCCID": self._c_ccid,
            "+ICCID": self._c_ccid, "+CICCID": self._c_ccid,
            "+CPIN": self._c_cpin, "+QPINC": self._c_qpinc, "+SPIC": self._c_spic,
            "+CLCK": self._c_clck, "+QINISTAT": self._c_qinistat,
            "+CSQ": self._c_csq, "+QCSQ": self._c_qcsq, "+CPSI": self._c_cpsi,
            "+QNWINFO": self._c_qnwinfo, "+CNSMOD": self._c_cnsmod,
            "+CREG": self._reg_cmd("creg"), "+CGREG": self._reg_cmd("cgreg"),
            "+CEREG": self._reg_cmd("cereg"),
            "+COPS": self._c_cops, "+CFUN": self._c_cfun, "+CMEE": self._c_cmee,
            "+CLIP": self._c_clip, "+CLCC": self._c_clcc, "+CHUP": self._c_chup,
            "+VTS": self._c_vts, "+QTONEDET": self._c_dtmf_det, "+DDET": self._c_dtmf_det, "+CUSD": self._c_cusd, "+CEER": self._c_ceer,
            "+QPCMV": self._c_pcm, "+CPCMREG": self._c_pcm,
            "+COLP": self._c_ok, "+CRC": self._c_ok, "+CVHU": self._c_ok,
            "+CSCS": self._c_cscs, "+CMGF": self._c_cmgf, "+CNMI": self._c_cnmi,
            "+CPMS": self._c_cpms, "+CMGL": self._c_cmgl, "+CMGR": self._c_cmgr,
            "+CMGD": self._c_cmgd, "+CMGS": self._c_cmgs, "+CMGW": self._c_cmgw,
            "+CMSS": self._c_cmss, "+CSCA": self._c_csca, "+CSMS": self._c_csms,
            "+CSMP": self._c_ok, "+CSDH": self._c_ok, "+CNUM": self._c_cnum,
            "+CBC": self._c_cbc, "+CCLK": self._c_cclk, "+CGATT": self._c_cgatt,
        }

    # identity
    def _c_ok(self, op: str, arg: str) -> str | None:
        return None

    def _c_factory(self, op: str, arg: str) -> str | None:
        self.settings = Settings()
        return None

    def _ident(self, attr: str) -> Callable[[str, str], str | None]:
        def run(op: str, arg: str) -> str | None:
            if op == "":
                self.emit(getattr(self.dialect, attr))
            elif op != "=?":
                raise CommandError(4)
            return None
        return run

    def _c_imei(self, op: str, arg: str) -> str | None:
        if op == "":
            self.emit(self.imei)
        elif op != "=?":
            raise CommandError(UNKNOWN)
        return None

    def _c_gcap(self, op: str, arg: str) -> str | None:
        self.emit("+GCAP: +CGSM" + (",+FCLASS,+DS" if self.dialect.name == "sim800" else ""))
        return None

    def _c_cimi(self, op: str, arg: str) -> str | None:
        self.need_sim()
        if op == "":
            self.emit(self.imsi)
        return None

    def _c_ccid(self, op: str, arg: str) -> str | None:
        if self.sim_state == "ABSENT":
            raise CommandError(10)
        prefix = self.dialect.ccid_prefix
        if self.dialect.name == "ec25":
            prefix = "+QCCID: " if self._current == "+QCCID" else "+CCID: "
        self.emit(prefix + self.iccid)
        return None

    # SIM
    def need_sim(self) -> None:
        """Refuse as the module does while the SIM waits for its PIN or PUK."""
        if self.sim_state == "SIM PIN":
            raise CommandError(11)
        if self.sim_state == "SIM PUK":
            raise CommandError(12)
        if self.sim_state in ("BLOCKED", "ABSENT"):
            raise CommandError(13 if self.sim_state == "BLOCKED" else 10)

    def _c_cpin(self, op: str, arg: str) -> str | None:
        if op == "?":
            if self.sim_state in ("BLOCKED", "ABSENT"):
                raise CommandError(13 if self.sim_state == "BLOCKED" else 10)
            self.emit(f"+CPIN: {self.sim_state}")
            return None
        if op == "=?":
            return None
        args = split_args(arg)
        if self.sim_state == "SIM PIN":
            if args and args[0] == self.pin:
                self.sim_state = "READY"
                self.pin_attempts = 3
                self._sim_ready()
                return None
            self.pin_attempts -= 1
            if self.pin_attempts == 0:
                self.sim_state = "SIM PUK"
            raise CommandError(16)
        if self.sim_state == "SIM PUK":
            if len(args) == 2 and args[0] == self.puk:
                self.pin = args[1]
                self.sim_state = "READY"
                self.pin_attempts, self.puk_attempts = 3, 10
                self._sim_ready()
                return None
            self.puk_attempts -= 1
            if self.puk_attempts == 0:
                self.sim_state = "BLOCKED"
            raise CommandError(16)
        raise CommandError(3)

    def _sim_ready(self) -> None:
        if self.dialect.name == "ec25":
            self._pending_urcs.append((self._now, "+CPIN: READY"))
            self._pending_urcs.append((self._now, "+QIND: SMS DONE"))
        elif self.dialect.name == "sim7600":
            self._pending_urcs.append((self._now, "SMS DONE"))

    def _c_qpinc(self, op: str, arg: str) -> str | None:
        if op == "=?":
            self.emit('+QPINC: ("SC","P2")')
            return None
        facs = ["SC", "P2"] if op == "?" else [a for a in split_args(arg)[:1]]
        for fac in facs:
            if fac not in ("SC", "P2"):
                raise CommandError(50)
            pins = self.pin_attempts if fac == "SC" else 3
            puks = self.puk_attempts if fac == "SC" else 10
            self.emit(f'+QPINC: "{fac}",{pins},{puks}')
        return None

    def _c_spic(self, op: str, arg: str) -> str | None:
        self.emit(f"+SPIC: {self.pin_attempts},{self.puk_attempts},3,10")
        return None

    def _c_clck(self, op: str, arg: str) -> str | None:
        args = split_args(arg)
        if op == "=?":
            self.emit('+CLCK: ("SC","AO","OI","AI","PN")')
            return None
        if len(args) >= 2 and args[0] == "SC" and args[1] == "2":
            self.need_sim()
            self.emit(f"+CLCK: {1 if self.pin is not None else 0}")
            return None
        if len(args) >= 3 and args[0] == "SC":
            self.need_sim()
            if args[2] != self.pin and self.pin is not None:
                raise CommandError(16)
            self.pin = args[2] if args[1] == "1" else None
            return None
        raise CommandError(4)

    def _c_qinistat(self, op: str, arg: str) -> str | None:
        self.emit(f"+QINISTAT: {7 if self.sim_state == 'READY' else 0}")
        return None

    # network
    def registered(self) -> bool:
        return self.cfun == 1 and self.sim_state == "READY" and self.reg in ("home", "roaming")

    def reg_stat(self) -> int:
        if self.cfun != 1 or self.sim_state != "READY":
            return 0
        return REG_STATES[self.reg]

    def _c_csq(self, op: str, arg: str) -> str | None:
        if op == "=?":
            self.emit("+CSQ: (0-31,99),(0-7,99)")
        else:
            self.emit(f"+CSQ: {self.rssi if self.registered() else 99},99")
        return None

    def _c_qcsq(self, op: str, arg: str) -> str | None:
        if not self.registered() or self.rssi == 99:
            self.emit('+QCSQ: "NOSERVICE"')
        else:
            dbm = -113 + 2 * self.rssi
            self.emit(f'+QCSQ: "LTE",{dbm},{dbm - 20},180,-9')
        return None

    def _c_cpsi(self, op: str, arg: str) -> str | None:
        if not self.registered() or self.rssi == 99:
            self.emit("+CPSI: NO SERVICE,Online")
        else:
            mcc, mnc = self.operator[2][:3], self.operator[2][3:]
            rsrp = (-113 + 2 * self.rssi - 20) * 10
            self.emit(f"+CPSI: LTE,Online,{mcc}-{mnc},0x1A2B,26881281,274,EUTRAN-BAND3,"
                      f"1300,5,5,-94,{rsrp},-580,15")
        return None

    def _c_qnwinfo(self, op: str, arg: str) -> str | None:
        if self.registered():
            self.emit(f'+QNWINFO: "FDD LTE","{self.operator[2]}","LTE BAND 3",1300')
        else:
            self.emit('+QNWINFO: "No Service"')
        return None

    def _c_cnsmod(self, op: str, arg: str) -> str | None:
        self.emit(f"+CNSMOD: 0,{8 if self.registered() else 0}")
        return None

    def _reg_cmd(self, key: str) -> Callable[[str, str], str | None]:
        tag = "+" + key.upper()

        def run(op: str, arg: str) -> str | None:
            if key == "cereg" and not self.dialect.has_lte:
                raise CommandError(UNKNOWN)  # a 2G module has no EPS registration
            if op == "=?":
                self.emit(f"{tag}: (0-2)")
            elif op == "=":
                if arg not in ("0", "1", "2"):
                    raise CommandError(50)
                setattr(self.settings, key, int(arg))
            elif op == "?":
                n = getattr(self.settings, key)
                self.emit(f"{tag}: {n},{self._reg_value(n)}")
            else:
                raise CommandError(4)
            return None
        return run

    def _reg_value(self, n: int) -> str:
        stat = self.reg_stat()
        if n == 2 and stat in (1, 5):
            act = f",{self.dialect.act}" if self.dialect.has_lte else ""
            return f'{stat},"1A2B","01A2B3C4"{act}'
        return str(stat)

    def registration_changed(self) -> None:
        """Tell the host, through each enabled +CREG/+CGREG/+CEREG, what the network did."""
        for key in ("creg", "cgreg", "cereg"):
            if key == "cereg" and not self.dialect.has_lte:
                continue
            n = getattr(self.settings, key)
            if n:
                self.emit(f"+{key.upper()}: {self._reg_value(n)}")

    def _c_cops(self, op: str, arg: str) -> str | None:
        if op == "=?":
            self.emit(f'+COPS: (2,"{self.operator[0]}","{self.operator[1]}","{self.operator[2]}"'
                      f',{self.dialect.act}),,(0-4),(0-2)')
        elif op == "?":
            if not self.registered():
                self.emit("+COPS: 0")
                return None
            fmt = self.settings.cops_format
            name = self.operator[{0: 0, 1: 1}.get(fmt, 2)]
            act = f",{self.dialect.act}" if self.dialect.has_lte else ""
            self.emit(f'+COPS: 0,{fmt},"{name}"{act}')
        elif op == "=":
            args = split_args(arg)
            if args and args[0] == "3" and len(args) > 1 and args[1] in ("0", "1", "2"):
                self.settings.cops_format = int(args[1])
            elif not args or args[0] not in ("0", "1", "2", "4"):
                raise CommandError(50)
        return None

    def _c_cfun(self, op: str, arg: str) -> str | None:
        if op == "?":
            self.emit(f"+CFUN: {self.cfun}")
        elif op == "=?":
            self.emit("+CFUN: (0,1,4),(0-1)")
        elif op == "=":
            args = split_args(arg)
            if not args or args[0] not in ("0", "1", "4"):
                raise CommandError(50)
            self.cfun = int(args[0])
            if len(args) > 1 and args[1] == "1":
                self.power_on(self._now)
                self.cfun = 1
            self.registration_changed()
        return None

    def _c_cmee(self, op: str, arg: str) -> str | None:
        if op == "?":
            self.emit(f"+CMEE: {self.settings.cmee}")
        elif op == "=?":
            self.emit("+CMEE: (0-2)")
        elif op == "=":
            if arg not in ("0", "1", "2"):
                raise CommandError(50)
            self.settings.cmee = int(arg)
        return None

    def _c_cnum(self, op: str, arg: str) -> str | None:
        self.need_sim()
        self.emit(f'+CNUM: "","{self.own_number}",145')
        return None

    def _c_cgatt(self, op: str, arg: str) -> str | None:
        if op == "?":
            self.emit(f"+CGATT: {1 if self.registered() else 0}")
        elif op == "=?":
            self.emit("+CGATT: (0,1)")
        elif op == "=" and arg not in ("0", "1"):
            raise CommandError(50)
        return None

    def _c_cbc(self, op: str, arg: str) -> str | None:
        self.emit("+CBC: 0,100,4100")
        return None

    def _c_cclk(self, op: str, arg: str) -> str | None:
        if op == "?":
            self.emit('+CCLK: "26/12/06,12:00:00+04"')
        return None

    def set_network(self, reg: str | None = None, rssi: int | None = None) -> None:
        if reg is not None:
            if reg not in REG_STATES:
                raise ValueError(f"registration {reg!r} not one of {sorted(REG_STATES)}")
            changed = reg != self.reg
            self.reg = reg
            if changed:
                self.registration_changed()
        if rssi is not None:
            self.rssi = rssi


VENDOR = frozenset({
    "+QCSQ", "+QCCID", "+QPINC", "+QPCMV", "+QINISTAT", "+QNWINFO",
    "+CPSI", "+CICCID", "+SPIC", "+CPCMREG", "+CNSMOD", "+ICCID", "+QTONEDET", "+DDET",
})
