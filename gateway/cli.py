"""`branchline`: run the daemon, check a config, and drive a running daemon over its socket.

Exit codes: 0 success, 1 the command or the daemon failed, 2 usage or config error.
Errors go to stderr as one line each. The formatters are plain functions of result dicts so
they can be tested without a daemon.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TextIO

import gateway.dsp  # noqa: F401  first: pins numpy's BLAS to one thread before numpy can load
from gateway import cli_calls, cli_line_test, cli_reload, cli_security, cli_sms
from gateway.config import Config, ConfigError, load_config, load_default
from gateway.config.schema import DEFAULT_CONTROL_SOCKET, LOG_LEVELS, UNIX_SOCKET_PATH_MAX
from gateway.runtime.control import ControlClient, ControlError

ENV_CONTROL = "BRANCHLINE_CONTROL"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_TIMEOUT = 10.0
MAX_RECORD_SECONDS = 600.0

_DTMF_DIGITS = re.compile(r"[0-9*#A-Da-d]+")
_PULSE_DIGITS = re.compile(r"[0-9]+")


class Client(Protocol):
    """What the CLI needs of a control client (ControlClient, or a fake in tests)."""

    def request(self, cmd: str, **args: Any) -> Any:
        """Send one command and return its result, raising ControlError on failure."""
        ...


ClientFactory = Callable[[str, float], Client]


class UsageError(Exception):
    """A command line that argparse accepted but whose values make no sense."""


# --- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; global --control/--json work before or after the subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--control",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"control socket (default: ${ENV_CONTROL}, else {DEFAULT_CONTROL_SOCKET})",
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print results as JSON"
    )

    parser = argparse.ArgumentParser(
        prog="branchline",
        description="Branchline telephone gateway: run the daemon and talk to it.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the gateway daemon (until SIGTERM/SIGINT)")
    run.add_argument("--config", metavar="FILE", help="config file (default: embedded)")
    run.add_argument(
        "--control",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="control socket path, overriding the config",
    )
    run.add_argument("--log-level", choices=LOG_LEVELS, help="override gateway.log_level")

    check = sub.add_parser("check-config", help="validate a config file", parents=[common])
    check.add_argument("file", metavar="FILE")

    sub.add_parser("schema", help="print the config file's JSON Schema")
    sub.add_parser("status", help="registrations, lines, calls and modems", parents=[common])
    cli_security.add_parser(sub, common)

    trace = sub.add_parser(
        "trace", parents=[common],
        help="watch SIP messages live (Ctrl-C ends), or switch the trace in the log",
    )
    trace.add_argument(
        "action", nargs="?", choices=("watch", "on", "off", "status"), default="watch",
        help="watch (default): stream messages here; on/off: the trace in the debug log",
    )
    trace.add_argument("--call-id", metavar="CALL-ID", help="only this Call-ID")
    trace.add_argument("--address", metavar="HOST[:PORT]",
                       help="only messages to or from this far end")

    phone = sub.add_parser("phone", help="drive a line's (simulated) handset", parents=[common])
    phone.add_argument("line", metavar="LINE", help="line name from the config")
    actions = phone.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("offhook", help="lift the handset", parents=[common])
    actions.add_parser("onhook", help="hang up", parents=[common])
    actions.add_parser("flash", help="hook flash", parents=[common])
    dial = actions.add_parser("dial", help="dial digits (DTMF, or --pulse)", parents=[common])
    dial.add_argument("digits", metavar="DIGITS")
    dial.add_argument("--pulse", action="store_true", help="rotary (pulse) dialling")
    actions.add_parser("hears", help="what the handset hears now", parents=[common])
    play = actions.add_parser("play", help="speak a WAV file into the line", parents=[common])
    play.add_argument("file", metavar="FILE.wav")
    play.add_argument("--once", action="store_true", help="play once instead of looping")
    actions.add_parser("stop", help="stop playing or recording", parents=[common])
    record = actions.add_parser("record", help="record what the handset hears", parents=[common])
    record.add_argument("file", metavar="FILE.wav")
    record.add_argument("seconds", metavar="SECONDS", type=float)
    actions.add_parser("state", help="hook state and call state", parents=[common])
    cli_sms.add_parsers(sub, common)
    cli_reload.add_parser(sub, common)
    cli_calls.add_parsers(sub, common)
    cli_line_test.add_parser(sub, common)
    return parser


def resolve_control_path(option: str | None, env: Mapping[str, str]) -> str:
    """--control, else $BRANCHLINE_CONTROL, else the default config's socket; made absolute."""
    path = option or env.get(ENV_CONTROL) or DEFAULT_CONTROL_SOCKET
    return os.path.abspath(path)


def phone_request(args: argparse.Namespace) -> tuple[dict[str, Any], float]:
    """The "phone" request arguments for parsed args, and the client timeout it needs."""
    request: dict[str, Any] = {"line": args.line, "action": args.action}
    timeout = DEFAULT_TIMEOUT
    if args.action == "dial":
        pattern = _PULSE_DIGITS if args.pulse else _DTMF_DIGITS
        if not pattern.fullmatch(args.digits):
            allowed = "0-9" if args.pulse else "0-9, *, #, A-D"
            raise UsageError(f"cannot dial {args.digits!r}: digits must be {allowed}")
        request["digits"] = args.digits.upper()
        request["mode"] = "pulse" if args.pulse else "dtmf"
        timeout += len(args.digits) * (1.5 if args.pulse else 0.2)
    elif args.action == "play":
        path = os.path.abspath(args.file)
        if not os.path.isfile(path):
            raise UsageError(f"no such file: {path}")
        request["path"] = path
        request["mode"] = "once" if args.once else "loop"
        request["once"] = bool(args.once)  # the daemon's handler reads this flag
    elif args.action == "record":
        path = os.path.abspath(args.file)
        if not os.path.isdir(os.path.dirname(path)):
            raise UsageError(f"no such directory: {os.path.dirname(path)}")
        if not 0 < args.seconds <= MAX_RECORD_SECONDS:
            raise UsageError(f"SECONDS must be above 0 and at most {MAX_RECORD_SECONDS:g}")
        request["path"] = path
        request["seconds"] = args.seconds
        timeout += args.seconds
    return request, timeout


# --- formatting ----------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces; "(none)" for an empty table."""
    if not rows:
        return "  (none)"
    widths = [len(h) for h in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def _text(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _mwi(value: Any) -> str:
    """A line's message waiting: "yes 2/8" (new/old), "no", and "(unsubscribed)" when a
    subscription is configured but not active; "-" when MWI is not set up."""
    if not isinstance(value, Mapping):
        return "-"
    text = "yes" if value.get("waiting") else "no"
    if value.get("new") is not None:
        text += f" {value.get('new')}/{value.get('old')}"
    if value.get("server") and not value.get("subscribed"):
        text += " (unsubscribed)"
    return text


def _forward(value: Any) -> str:
    """A line's call forward and DND: "dnd", "always>555", "busy>2001 noans>300", or "-"."""
    if not isinstance(value, Mapping):
        return "-"
    parts = ["dnd"] if value.get("dnd") else []
    for key, label in (("always", "always"), ("busy", "busy"), ("no_answer", "noans")):
        if value.get(key):
            parts.append(f"{label}>{value[key]}")
    return " ".join(parts) or "-"


def _hook(value: Any) -> str:
    if isinstance(value, bool):
        return "off-hook" if value else "on-hook"
    text = str(value).lower().replace("_", "-")
    if text in ("off", "offhook", "off-hook"):
        return "off-hook"
    if text in ("on", "onhook", "on-hook"):
        return "on-hook"
    return str(value)


def format_duration(seconds: Any) -> str:
    """Call duration as M:SS or H:MM:SS."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    total = int(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _stats(stats: Any) -> str:
    if not isinstance(stats, Mapping) or not stats:
        return "-"
    return " ".join(f"{key}={_text(value)}" for key, value in stats.items())


def format_status(result: Mapping[str, Any]) -> str:
    """The `status` answer as three aligned tables: registrations, lines, calls."""
    registrations = [
        [
            _text(r.get("account")),
            _text(r.get("trunk")),
            _text(r.get("aor")),
            "registered" if r.get("registered") else "not registered",
            f"{r['expires']}s" if isinstance(r.get("expires"), int | float) else "-",
            _text(r.get("reason")),
        ]
        for r in result.get("registrations") or []
    ]
    lines = [
        [
            _text(line.get("name")),
            _text(line.get("number")),
            _hook(line.get("hook")),
            _text(line.get("state")),
            "ringing" if line.get("ringing") else "-",
            _mwi(line.get("mwi")),
            _forward(line.get("forwarding")),
        ]
        for line in result.get("lines") or []
    ]
    calls = [
        [
            _text(c.get("call_id")),
            _text(c.get("line")),
            _text(c.get("direction")),
            _text(c.get("remote")),
            _text(c.get("state")),
            _text(c.get("codec")),
            format_duration(c.get("duration")),
            _stats(c.get("stats")),
            _stats(c.get("rtcp")),
        ]
        for c in result.get("calls") or []
    ]
    return "\n".join(
        [
            "Registrations",
            format_table(["ACCOUNT", "TRUNK", "AOR", "STATE", "EXPIRES", "REASON"], registrations),
            *format_trunks(result),
            "",
            "Lines",
            format_table(["NAME", "NUMBER", "HOOK", "STATE", "RINGING", "MWI", "FORWARD"],
                         lines),
            "",
            "Calls",
            format_table(
                ["CALL-ID", "LINE", "DIRECTION", "REMOTE", "STATE", "CODEC", "DURATION", "STATS",
                 "RTCP"],
                calls,
            ),
            *format_modems(result),
            *format_fxo(result),
            *format_phones(result),
            *format_transport(result),
            *format_push(result),
        ]
    )


def format_trunks(result: Mapping[str, Any]) -> list[str]:
    """Each trunk's health: state, for how long, the last transition and why (none: nothing)."""
    trunks = result.get("trunks") or []
    if not trunks:
        return []
    rows = []
    for t in trunks:
        h = t.get("health") or {}
        last = h.get("last_transition") or {}
        detected = last.get("detection_time")
        loss = h.get("loss")
        rows.append([
            _text(t.get("name")), _text(h.get("state")), format_duration(h.get("for")),
            f"{last.get('from')} -> {last.get('to')}" if last else "-",
            _text(last.get("cause")) if last else "-",
            f"{detected:.2f} s" if isinstance(detected, int | float) else "-",
            f"{h.get('probes_answered', 0)}/{h.get('probes_sent', 0)}",
            f"{loss:.0%}" if isinstance(loss, int | float) else "-",
            f"{h['rtt_ms']} ms" if isinstance(h.get("rtt_ms"), int | float) else "-",
        ])
    return ["", "Trunks", format_table(
        ["TRUNK", "HEALTH", "FOR", "LAST CHANGE", "CAUSE", "DETECTED IN", "PROBES", "LOSS",
         "RTT"], rows)]


def format_push(result: Mapping[str, Any]) -> list[str]:
    """The call push, when configured: where to, queue, counts, last success and error."""
    push = result.get("push")
    if not isinstance(push, Mapping):
        return []
    retry = push.get("retry_in")
    return ["", "Push", format_table(
        ["URL", "QUEUE", "DELIVERED", "DROPPED", "OVERFLOWED", "LAST SUCCESS", "LAST ERROR",
         "RETRY IN"],
        [[_text(push.get("url")), _text(push.get("queue")), _text(push.get("delivered")),
          _text(push.get("dropped")), _text(push.get("overflowed")),
          _text(push.get("last_success_at")),
          f"{push['last_error']} ({push.get('last_error_at')})" if push.get("last_error")
          else "-",
          f"{retry:g} s" if isinstance(retry, int | float) else "-"]])]


def _dbm(value: Any) -> str:
    return "-" if not isinstance(value, int | float) or isinstance(value, bool) else f"{value:g}"


def format_modems(result: Mapping[str, Any]) -> list[str]:
    """The `modems` section as a table (nothing when no modem is configured)."""
    modems = result.get("modems") or []
    if not modems:
        return []
    rows = []
    for m in modems:
        sim = m.get("sim") or {}
        net = m.get("network") or {}
        sig = m.get("signal") or {}
        rows.append([
            _text(m.get("name")), _text(m.get("state")), _text(m.get("device")),
            _text(m.get("imei")), _text(sim.get("state")), _text(net.get("registration")),
            _text(net.get("operator")), _text(net.get("technology")),
            _dbm(sig.get("rssi_dbm")), _dbm(sig.get("rsrp_dbm")), _text(m.get("last_error")),
        ])
    return ["", "Modems", format_table(
        ["NAME", "STATE", "DEVICE", "IMEI", "SIM", "NETWORK", "OPERATOR", "TECH", "RSSI",
         "RSRP", "LAST ERROR"], rows)]


def format_fxo(result: Mapping[str, Any]) -> list[str]:
    """Exchange lines (FXO): state, hook, polarity, loop current, last caller ID and why the
    last call ended (nothing when none is configured)."""
    rows = []
    for f in result.get("fxo") or []:
        cid = f.get("last_caller_id") or {}
        loop = f.get("loop")
        rows.append([
            _text(f.get("name")), _text(f.get("number")), _text(f.get("state")),
            _hook(f.get("hook")), "reversed" if f.get("reversed") else "normal",
            "-" if loop is None else ("yes" if loop else "no"),
            _text(cid.get("number") or cid.get("name")) if cid else "-",
            _text(f.get("end_reason")),
        ])
    if not rows:
        return []
    return ["", "Exchange lines", format_table(
        ["NAME", "NUMBER", "STATE", "HOOK", "POLARITY", "LOOP", "LAST CALLER", "LAST END"],
        rows)]


def format_phones(result: Mapping[str, Any]) -> list[str]:
    """Local SIP phones and their registered contacts (nothing when none is configured)."""
    phones = result.get("phones") or []
    if not phones:
        return []
    rows = []
    for p in phones:
        contacts = p.get("contacts") or []
        first = [_text(p.get("user")), _text(p.get("number"))]
        # The phone's call and its upstream relay (gateway.runtime.phones), on its first row.
        up = p.get("upstream")
        relay = "-" if not isinstance(up, Mapping) else (
            f"{up.get('trunk')}: registered" if up.get("registered")
            else f"{up.get('trunk')}: {up.get('relay') or 'not relayed'}")
        last = [_text(p.get("state") or "-"), relay]
        if not contacts:
            rows.append([*first, "not registered", "-", "-", "-", *last])
        for i, c in enumerate(contacts):
            rows.append([*(first if i == 0 else ["", ""]), _text(c.get("contact")),
                         _text(c.get("source")), _text(c.get("transport")),
                         f"{c['expires_in']}s" if isinstance(c.get("expires_in"), int) else "-",
                         *(last if i == 0 else ["", ""])])
    return ["", "Phones", format_table(
        ["USER", "NUMBER", "CONTACT", "SOURCE", "TRANSPORT", "EXPIRES", "CALL", "UPSTREAM"],
        rows)]


def format_transport(result: Mapping[str, Any]) -> list[str]:
    """The SIP socket as the kernel sees it, and the trace; nothing when not reported."""
    transport = result.get("transport")
    if not isinstance(transport, Mapping) or "kernel_drops" not in transport:
        return []
    buffer = transport.get("udp_receive_buffer")
    trace = result.get("sip_trace")
    trace = trace if isinstance(trace, Mapping) else {}
    return [
        "",
        "SIP transport",
        f"  UDP receive buffer {_text(buffer)} bytes, kernel drops {transport['kernel_drops']}, "
        f"queued {_text(transport.get('udp_rx_queue'))} bytes; "
        f"trace in log {'on' if trace.get('log') else 'off'}, "
        f"{trace.get('watchers', 0)} watcher(s)",
    ]


#: Words for the tone classes and line states the daemon reports.
_TONE_WORDS = {
    "dial": "dial tone",
    "stutter": "stutter dial tone",
    "busy": "busy tone",
    "reorder": "reorder tone",
    "call_waiting": "call-waiting tone",
    "dtmf": "DTMF",
    "tone": "a tone",
}
_STATE_WORDS = {
    "connected": "in call",
    "dial-tone": "dial tone",
    "collecting": "collecting digits",
    "early-media": "early media",
    "wait-onhook": "waiting for on-hook",
}


def format_hears(line: str, result: Mapping[str, Any]) -> str:
    """E.g. "line 1 hears: dial tone (350 Hz + 440 Hz), -16.2 dBFS".

    Reads "tone" (or the classifier's "what"), "frequencies" (or "dominant_hz"),
    "level_dbfs" and "digits"; missing fields are left out.
    """
    tone = result.get("tone") or result.get("what")
    tone = _TONE_WORDS.get(str(tone), str(tone)) if tone else None
    freqs = result.get("frequencies")
    if not isinstance(freqs, list):
        freqs = [result["dominant_hz"]] if result.get("dominant_hz") else []
    freq_text = " + ".join(f"{f:.0f} Hz" for f in freqs if isinstance(f, int | float))
    level = result.get("level_dbfs")
    if tone == "silence" or (not tone and not freq_text):
        what = "silence"
    elif tone and freq_text:
        what = f"{tone} ({freq_text})"
    else:
        what = tone or freq_text
    if isinstance(level, int | float) and what != "silence":
        what += f", {level:.1f} dBFS"
    if result.get("digits"):
        what += f", digits {result['digits']}"
    return f"line {line} hears: {what}"


def format_line_state(line: str, result: Mapping[str, Any]) -> str:
    """E.g. "line 1: off-hook, in call with sip:102@127.0.0.1"."""
    parts = [_hook(result.get("hook"))] if result.get("hook") is not None else []
    raw = str(result.get("state") or "")
    state = _STATE_WORDS.get(raw, raw.replace("_", " ").replace("-", " "))
    call = result.get("call")
    remote = result.get("remote") or (call.get("remote") if isinstance(call, Mapping) else None)
    if state:
        if raw == "collecting" and result.get("digits"):
            state += f" ({result['digits']})"
        if remote:
            state += f" from {remote}" if raw in ("ringing", "incoming") else f" with {remote}"
        parts.append(state)
    if result.get("ringing") and "ring" not in raw:
        parts.append("ringing")
    return f"line {line}: " + (", ".join(parts) or "unknown")


def format_phone_result(request: Mapping[str, Any], result: Any) -> str:
    """One line confirming a phone action (hears/state get their own wording)."""
    line, action = request["line"], request["action"]
    if action == "hears" and isinstance(result, Mapping):
        return format_hears(line, result)
    if isinstance(result, Mapping) and isinstance(result.get("message"), str):
        return f"line {line}: {result['message']}"
    if action == "dial":
        return f"line {line}: dialled {request['digits']} ({request['mode']})"
    if action == "play":
        return f"line {line}: playing {request['path']} ({request['mode']})"
    if action == "record":
        return f"line {line}: recorded {request['seconds']:g} s to {request['path']}"
    if isinstance(result, Mapping) and ("hook" in result or "state" in result):
        return format_line_state(line, result)
    done = {"offhook": "off-hook", "onhook": "on-hook", "flash": "hook flash sent"}
    return f"line {line}: {done.get(action, action + ' done')}"


def format_check_ok(source: str, config: Config) -> str:
    """E.g. "office.yaml: OK (2 lines, 1 trunks)"."""
    return f"{source}: OK ({len(config.lines)} lines, {len(config.trunks)} trunks)"


# --- commands --------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace, err: TextIO) -> int:
    try:
        config = load_config(args.config) if args.config else load_default()
    except ConfigError as exc:
        print(str(exc), file=err)
        return EXIT_USAGE
    control = getattr(args, "control", None) or os.environ.get(ENV_CONTROL)
    gateway = config.gateway
    overrides: dict[str, Any] = {}  # kept when `branchline reload` reads the file again
    if control:
        control = os.path.abspath(control)
        if len(control.encode("utf-8")) > UNIX_SOCKET_PATH_MAX:
            print(f"branchline: control socket path too long: {control}", file=err)
            return EXIT_USAGE
        gateway = dataclasses.replace(gateway, control_socket=control)
        overrides["control_socket"] = control
    if args.log_level:
        gateway = dataclasses.replace(gateway, log_level=args.log_level)
        overrides["log_level"] = args.log_level
    config = dataclasses.replace(config, gateway=gateway)
    try:
        from gateway.runtime.app import run as run_app
    except ImportError as exc:
        print(f"branchline: the gateway runtime is not available: {exc}", file=err)
        return EXIT_FAILED
    path = os.path.abspath(args.config) if args.config else None
    return int(run_app(config, config_path=path, overrides=overrides))


def _cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    as_json = getattr(args, "json", False)
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        if as_json:
            errors = [dataclasses.asdict(issue) for issue in exc.errors]
            print(
                json.dumps({"file": args.file, "ok": False, "errors": errors}, indent=2), file=out
            )
        else:
            print(str(exc), file=err)
        return EXIT_FAILED
    if as_json:
        summary = {
            "file": args.file,
            "ok": True,
            "lines": len(config.lines),
            "trunks": len(config.trunks),
        }
        print(json.dumps(summary, indent=2), file=out)
    else:
        print(format_check_ok(args.file, config), file=out)
    return EXIT_OK


def _cmd_trace(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from gateway.runtime.trace import format_record
    from gateway.sip.trace import parse_address

    path = resolve_control_path(getattr(args, "control", None), os.environ)
    as_json = getattr(args, "json", False)
    client = ControlClient(path, DEFAULT_TIMEOUT)
    if args.action != "watch":
        if args.call_id or args.address:
            raise UsageError("--call-id and --address filter `trace` (watch) only")
        result = client.request("trace", action=args.action)
        if as_json:
            print(json.dumps(result, indent=2), file=out)
        else:
            state = "on" if result.get("log") else "off"
            print(f"SIP trace in the debug log: {state}; {result.get('watchers', 0)} live "
                  "watcher(s)", file=out)
            if result.get("note"):
                print(f"note: {result['note']}", file=err)
        return EXIT_OK
    request: dict[str, Any] = {"action": "watch"}
    if args.call_id:
        request["call_id"] = args.call_id
    if args.address:
        try:
            parse_address(args.address)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        request["address"] = args.address
    stream = client.stream("trace", **request)
    try:
        head = next(stream)
        print(f"tracing SIP ({head.get('filter', 'all messages')}); Ctrl-C to stop",
              file=err, flush=True)
        for record in stream:
            text = json.dumps(record) if as_json else format_record(record)
            print(text, file=out, flush=True)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    finally:
        stream.close()
    return EXIT_OK


def _cmd_daemon(args: argparse.Namespace, factory: ClientFactory, out: TextIO) -> int:
    path = resolve_control_path(getattr(args, "control", None), os.environ)
    as_json = getattr(args, "json", False)
    if args.command == "status":
        result = factory(path, DEFAULT_TIMEOUT).request("status")
        if as_json:
            print(json.dumps(result, indent=2), file=out)
        elif isinstance(result, Mapping):
            print(format_status(result), file=out)
        else:
            raise ControlError(f"unexpected status answer: {result!r}")
        return EXIT_OK
    request, timeout = phone_request(args)
    result = factory(path, timeout).request("phone", **request)
    if as_json:
        print(json.dumps(result, indent=2), file=out)
    else:
        print(format_phone_result(request, result), file=out)
    return EXIT_OK


def main(
    argv: Sequence[str] | None = None,
    *,
    client_factory: ClientFactory | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Entry point of the `branchline` console script; returns the exit code."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(cli_calls.relative_times(argv))  # --since -1h
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    factory: ClientFactory = client_factory or ControlClient
    try:
        if args.command == "run":
            return _cmd_run(args, err)
        if args.command == "check-config":
            return _cmd_check(args, out, err)
        if args.command == "schema":
            from gateway.config.jsonschema import export_json_schema

            print(json.dumps(export_json_schema(), indent=2), file=out)
            return EXIT_OK
        if args.command == "security":
            path = resolve_control_path(getattr(args, "control", None), os.environ)
            return cli_security.run(args, factory(path, DEFAULT_TIMEOUT), out)
        if args.command in ("status", "phone"):
            return _cmd_daemon(args, factory, out)
        if args.command == "trace":
            return _cmd_trace(args, out, err)
        if args.command == "reload":
            path = resolve_control_path(getattr(args, "control", None), os.environ)
            return cli_reload.run(factory(path, cli_reload.RELOAD_TIMEOUT), out, err,
                                  as_json=getattr(args, "json", False))
        if args.command == "calls":
            path = resolve_control_path(getattr(args, "control", None), os.environ)
            return cli_calls.run(args, factory(path, DEFAULT_TIMEOUT), out)
        if args.command == "line-test":
            path = resolve_control_path(getattr(args, "control", None), os.environ)
            return cli_line_test.run(args, factory(path, cli_line_test.timeout(args)), out,
                                     as_json=getattr(args, "json", False))
        if args.command in ("sms", "ussd"):
            path = resolve_control_path(getattr(args, "control", None), os.environ)
            return cli_sms.run(args, factory(path, cli_sms.client_timeout(args)), out)
        parser.print_help(err)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"branchline: {exc}", file=err)
        return EXIT_USAGE
    except ControlError as exc:
        print(f"branchline: {exc}", file=err)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
