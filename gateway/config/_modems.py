"""The `modems:` and `gsm_groups:` sections: GSM/LTE modules, their audio paths and route groups."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import MappingProxyType

from yaml.nodes import MappingNode, Node, ScalarNode

from gateway.config import modems as m
from gateway.config._convert import (
    _NULL,
    _abs_path,
    _Bad,
    _choice,
    _describe,
    _float_range,
    _int_range,
    _one_of,
    _optional,
    _pattern,
    _scalar_text,
    _suggest,
    _text,
)
from gateway.config._reader import RouteProbe, _Fields, _NodeReader
from gateway.config.modems import PREFIX_PATTERN as PREFIX_OR_NUMBER
from gateway.config.modems import (
    GsmGroup,
    ModemAudio,
    ModemConfig,
    ModemMatch,
    ModemSms,
    PowerGpio,
)


def _serial_port(node: Node) -> str:
    """A device path ("/dev/serial/by-id/...") or a pyserial URL ("socket://host:port")."""
    expected = "a device path such as /dev/ttyUSB2, or a URL such as socket://127.0.0.1:7000"
    value = _text(nonempty=True)(node)
    if value.startswith("/"):
        if "\0" in value:
            raise _Bad("path contains a NUL character", expected)
        return value
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme and scheme in m.SERIAL_URL_SCHEMES:
        return value
    if scheme:
        hint = _suggest(scheme, m.SERIAL_URL_SCHEMES)
        raise _Bad(f"unknown serial URL scheme {scheme!r}{hint}", expected)
    raise _Bad(f"{value!r} is neither an absolute device path nor a URL", expected)


def _sip_uri(node: Node) -> str:
    from gateway.sip.uri import SipUri

    expected = "a SIP URI such as sip:sms@pbx.example.com"
    value = _text(nonempty=True)(node)
    try:
        SipUri.parse(value)
    except Exception as exc:  # the URI parser's own error names the problem
        raise _Bad(f"invalid SIP URI {value!r}: {exc}", expected) from exc
    return value


def _web_url(node: Node) -> str:
    expected = "an http:// or https:// URL"
    value = _text(nonempty=True)(node)
    if not re.fullmatch(r"https?://[^\s/?#]+([/?#]\S*)?", value):
        raise _Bad(f"invalid URL {value!r}", expected)
    return value


def _gpio_pin(node: Node) -> int | str:
    expected = (
        f"a BCM number from {m.GPIO_PIN_MIN} to {m.GPIO_PIN_MAX}, or a name such as 'GPIO17'"
    )
    if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:int":
        return _int_range(m.GPIO_PIN_MIN, m.GPIO_PIN_MAX)(node)
    value = _scalar_text(node, expected)
    if not re.fullmatch(m.GPIO_NAME_PATTERN, value):
        raise _Bad(f"invalid GPIO pin {value!r}", expected)
    return value


class _ModemReader(_NodeReader):
    """Section readers for modems and GSM groups (mixed into the full reader)."""

    def __init__(self, route_probe: RouteProbe) -> None:
        super().__init__(route_probe)
        #: "gsm_groups[i].prefixes.<modem>" -> the key node, for the cross-check with modems.
        self.prefix_nodes: dict[str, Node] = {}

    def gsm_groups(self, node: Node | None) -> tuple[list[GsmGroup] | None, dict[str, Node]]:
        """The `gsm_groups:` list (prefixes checked later, once modems are known)."""
        items = self.sequence(node, "gsm_groups")
        before = len(self.issues)
        groups: list[GsmGroup] = []
        names: dict[str, Node] = {}
        for index, item in enumerate(items):
            group = self.gsm_group(item, f"gsm_groups[{index}]", names)
            if group is not None:
                groups.append(group)
        return (None if len(self.issues) > before else groups), names

    def gsm_group(self, node: Node, path: str, names: dict[str, Node]) -> GsmGroup | None:
        """One group: a name, a strategy, and for `prefix` the prefixes of each modem."""
        f = self.mapping(node, path, m.GSM_GROUP_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        name = self.require(
            f, "name", _pattern(m.MODEM_NAME_PATTERN, "lower-case letters, digits, '_' and '-'"),
            "", "a group name",
        )
        if name:
            self._unique(names, name, f, "group name")
        strategy = self.take(f, "strategy", _choice(m.GSM_STRATEGIES), m.DEFAULT_GSM_STRATEGY)
        no_prefixes: dict[str, tuple[str, ...]] = {}
        prefixes = self.take(f, "prefixes", self.prefix_map(f.child("prefixes")), no_prefixes)
        if len(self.issues) == before:
            if strategy == "prefix" and not prefixes:
                self.issue(f.node_of("prefixes"), f.child("prefixes"),
                           "strategy prefix needs prefixes",
                           "prefixes: {<modem name>: [<prefix>, ...]}")
            elif strategy != "prefix" and prefixes:
                self.issue(f.node_of("prefixes"), f.child("prefixes"),
                           f"prefixes are only read with strategy prefix, not {strategy!r}",
                           "strategy: prefix, or no prefixes")
        if len(self.issues) > before:
            return None
        return GsmGroup(name, strategy, MappingProxyType(prefixes))

    def prefix_map(self, path: str) -> Callable[[Node], dict[str, tuple[str, ...]]]:
        """A converter for `prefixes:`: modem name -> list of prefixes, each prefix once."""

        def convert(node: Node) -> dict[str, tuple[str, ...]]:
            if isinstance(node, ScalarNode) and node.tag == _NULL:
                return {}
            if not isinstance(node, MappingNode):
                raise _Bad(f"expected a mapping, got {_describe(node)}",
                           "a mapping of modem name to a list of prefixes")
            out: dict[str, tuple[str, ...]] = {}
            owner: dict[str, str] = {}
            for key_node, value_node in node.value:
                key = _scalar_text(key_node, "a modem name")
                where = f"{path}.{key}"
                self.prefix_nodes[where] = key_node
                prefix = _pattern(m.PREFIX_PATTERN, "digits, optionally with '+', '*', '#'")
                items = self.list_of(value_node, where, prefix)
                for index, item in enumerate(items):
                    if item in owner:
                        self.issue(value_node.value[index], f"{where}[{index}]",
                                   f"prefix {item!r} is already given to {owner[item]!r}",
                                   "each prefix on one modem only")
                    owner[item] = key
                if key in out:
                    self.issue(key_node, where, f"modem {key!r} is listed twice", "each once")
                out[key] = tuple(items)
            return out

        return convert

    def modems(
        self, node: Node | None, groups: list[GsmGroup] | None, group_names: dict[str, Node]
    ) -> list[ModemConfig] | None:
        """The `modems:` list: unique names, ports and IMEIs, groups that exist."""
        items = self.sequence(node, "modems")
        before = len(self.issues)
        names: dict[str, Node] = {}
        ports: dict[str, Node] = {}
        imeis: dict[str, Node] = {}
        modems: list[ModemConfig] = []
        for index, item in enumerate(items):
            modem = self.modem(item, f"modems[{index}]", group_names, names, ports, imeis)
            if modem is not None:
                modems.append(modem)
        if len(self.issues) > before:
            return None
        if groups is not None:
            self.check_prefix_owners(groups, modems, group_names)
        return None if len(self.issues) > before else modems

    def _unique(self, seen: dict[str, Node], value: str, f: _Fields, label: str,
                key: str = "name") -> None:
        node = f.node_of(key)
        if value in seen:
            first = seen[value].start_mark.line + 1
            self.issue(node, f.child(key), f"{label} {value!r} is already used on line {first}",
                       "a unique value")
        else:
            seen[value] = node

    def modem(
        self,
        node: Node,
        path: str,
        group_names: dict[str, Node],
        names: dict[str, Node],
        ports: dict[str, Node],
        imeis: dict[str, Node],
    ) -> ModemConfig | None:
        """One modem; its audio is checked against what its profile can carry."""
        f = self.mapping(node, path, m.MODEM_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        name = self.require(
            f, "name", _pattern(m.MODEM_NAME_PATTERN, "lower-case letters, digits, '_' and '-'"),
            "", "a modem name",
        )
        if name:
            self._unique(names, name, f, "modem name")
        profile = self.require(f, "profile", _choice(m.MODEM_PROFILES), "",
                               _one_of(m.MODEM_PROFILES))
        before_port = len(self.issues)
        port = self.take(f, "port", _optional(_serial_port), None)
        port_bad = len(self.issues) > before_port
        if port is not None:
            self._unique(ports, port, f, "port", key="port")
        before_match = len(self.issues)
        match = self.modem_match(f.values.get("match"), f.child("match"))
        match_bad = len(self.issues) > before_match
        if match is not None and match.imei is not None:
            where = f.node_of("match")
            imei_node = next((v for k, v in getattr(where, "value", ())
                              if isinstance(k, ScalarNode) and k.value == "imei"), where)
            if match.imei in imeis:
                first = imeis[match.imei].start_mark.line + 1
                self.issue(imei_node, f.child("match.imei"),
                           f"IMEI {match.imei!r} is already used on line {first}", "a unique IMEI")
            else:
                imeis[match.imei] = imei_node
        if port is None and match is None and not port_bad and not match_bad:
            self.issue(f.node, f.child("port"), "a modem needs a port or a match",
                       "port: /dev/serial/by-id/..., or match: {imei: ..., usb: vid:pid}")
        audio = self.modem_audio(f, profile)
        if audio is not None and port is not None and audio.pcm_port == port:
            self.issue(f.node_of("audio"), f.child("audio.pcm_port"),
                       f"pcm_port {port!r} is the AT port", "the module's voice port")
        pin = self.take(f, "pin", _optional(_pattern(m.SIM_PIN_PATTERN, "4 to 8 digits")), None)
        group = self.take(f, "group", _optional(_text(nonempty=True)), None)
        if group is not None and group not in group_names:
            known = ", ".join(group_names) or "none are defined"
            self.issue(f.node_of("group"), f.child("group"),
                       f"no GSM group named {group!r}{_suggest(group, group_names)}",
                       f"a name from gsm_groups ({known})")
        number = self.take(f, "number",
                           _optional(_pattern(m.MSISDN_PATTERN, "digits, optionally with '+'")),
                           None)
        sms = self.modem_sms(f.values.get("sms"), f.child("sms"))
        cap = self.take(f, "minute_cap",
                        _optional(_int_range(m.MINUTE_CAP_MIN, m.MINUTE_CAP_MAX)), None)
        power = self.power_gpio(f.values.get("power_gpio"), f.child("power_gpio"))
        probe = self.take(f, "probe_interval", _float_range(m.PROBE_MIN, m.PROBE_MAX),
                          m.DEFAULT_PROBE_INTERVAL)
        unresponsive = self.take(
            f, "unresponsive_after", _float_range(m.UNRESPONSIVE_MIN, m.UNRESPONSIVE_MAX),
            m.DEFAULT_UNRESPONSIVE_AFTER,
        )
        if len(self.issues) == before and unresponsive < probe:
            where_key = "unresponsive_after" if f.has("unresponsive_after") else "probe_interval"
            self.issue(f.node_of(where_key), f.child(where_key),
                       f"unresponsive_after {unresponsive:g} s is shorter than probe_interval "
                       f"{probe:g} s", "unresponsive_after >= probe_interval")
        inbound = self.take(f, "inbound", _optional(_pattern(
            m.INBOUND_PATTERN, "line:<name> or trunk:<name>")), None)
        inbound_number = self.take(f, "inbound_number", _optional(_pattern(
            PREFIX_OR_NUMBER, "digits, optionally with '+', '*', '#'")), None)
        if len(self.issues) > before or audio is None:
            return None
        return ModemConfig(name, profile, audio, port, match, pin, group, number, sms, cap,
                           power, probe, unresponsive, inbound, inbound_number)

    def modem_match(self, node: Node | None, path: str) -> ModemMatch | None:
        """`match:` how the modem is found again: IMEI (15 digits) and/or USB vid:pid."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return None
        f = self.mapping(node, path, m.MODEM_MATCH_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        imei = self.take(f, "imei", _optional(_pattern(m.IMEI_PATTERN, "15 digits")), None)
        usb = self.take(f, "usb", _optional(_pattern(m.USB_ID_PATTERN,
                                                     "vendor:product in hex, e.g. 2c7c:0125")),
                        None)
        if len(self.issues) == before and imei is None and usb is None:
            self.issue(f.node, path, "match names neither imei nor usb", "imei and/or usb")
        if len(self.issues) > before:
            return None
        return ModemMatch(imei, usb.lower() if usb else None)

    def modem_audio(self, parent: _Fields, profile: str) -> ModemAudio | None:
        """`audio:` the voice path, which must be one the profile has, with its device/port."""
        path = parent.child("audio")
        if not parent.has("audio") or (
            isinstance(parent.node_of("audio"), ScalarNode)
            and parent.node_of("audio").tag == _NULL
        ):
            if profile == "sim":
                return ModemAudio("sim")
            if not profile:
                return None
            allowed = m.PROFILE_AUDIO[profile]
            self.issue(parent.node, path, f"missing required key 'audio' for profile {profile!r}",
                       "audio: {type: " + " | ".join(allowed) + ", ...}")
            return None
        f = self.mapping(parent.node_of("audio"), path, m.MODEM_AUDIO_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        kind = self.require(f, "type", _choice(m.AUDIO_TYPES), "", _one_of(m.AUDIO_TYPES))
        device = self.take(f, "device", _optional(_pattern(
            m.ALSA_DEVICE_PATTERN, "an ALSA device such as hw:CARD=Android,DEV=0")), None)
        pcm_port = self.take(f, "pcm_port", _optional(_serial_port), None)
        if len(self.issues) > before or not kind:
            return None
        possible = m.PROFILE_AUDIO.get(profile)
        if possible is not None and kind not in possible:
            self.issue(f.node_of("type"), f.child("type"),
                       f"profile {profile!r} cannot carry audio type {kind!r}", _one_of(possible))
        if kind in m.AUDIO_NEEDS_DEVICE and device is None:
            self.issue(f.node, f.child("device"), f"audio type {kind!r} needs a device",
                       "an ALSA device such as hw:CARD=Android,DEV=0")
        if kind not in m.AUDIO_NEEDS_DEVICE and f.has("device") and device is not None:
            self.issue(f.node_of("device"), f.child("device"),
                       f"audio type {kind!r} does not use a device",
                       "device only with " + " or ".join(m.AUDIO_NEEDS_DEVICE))
        if kind in m.AUDIO_NEEDS_PCM_PORT and pcm_port is None:
            self.issue(f.node, f.child("pcm_port"), f"audio type {kind!r} needs a pcm_port",
                       "the serial port that carries PCM, e.g. /dev/ttyUSB4")
        if kind not in m.AUDIO_NEEDS_PCM_PORT and f.has("pcm_port") and pcm_port is not None:
            self.issue(f.node_of("pcm_port"), f.child("pcm_port"),
                       f"audio type {kind!r} does not use a pcm_port", "pcm_port only with serial-pcm")
        if len(self.issues) > before:
            return None
        return ModemAudio(kind, device, pcm_port)

    def modem_sms(self, node: Node | None, path: str) -> ModemSms | None:
        """`sms:` where received messages go; the queue defaults to the state directory."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return None
        f = self.mapping(node, path, m.MODEM_SMS_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        to_sip = self.take(f, "to_sip", _optional(_sip_uri), None)
        webhook = self.take(f, "webhook", _optional(_web_url), None)
        queue = self.take(f, "queue", _optional(_abs_path), None)
        if len(self.issues) > before:
            return None
        return ModemSms(to_sip, webhook, queue)

    def power_gpio(self, node: Node | None, path: str) -> PowerGpio | None:
        """`power_gpio:` the pin that power-cycles a modem that stays dead."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return None
        f = self.mapping(node, path, m.POWER_GPIO_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        no_pin: int | str = 0
        pin = self.require(f, "pin", _gpio_pin, no_pin, "a GPIO pin such as 17 or 'GPIO17'")
        off = self.take(f, "off_seconds", _float_range(m.OFF_SECONDS_MIN, m.OFF_SECONDS_MAX),
                        m.DEFAULT_OFF_SECONDS)
        if len(self.issues) > before:
            return None
        return PowerGpio(pin, off)

    def check_prefix_owners(
        self, groups: list[GsmGroup], modems: list[ModemConfig], group_names: dict[str, Node]
    ) -> None:
        """Each modem named in a group's prefixes must exist and be in that group."""
        group_of = {modem.name: modem.group for modem in modems}
        for index, group in enumerate(groups):
            for modem_name in group.prefixes:
                if modem_name not in group_of:
                    message = f"no modem named {modem_name!r}{_suggest(modem_name, group_of)}"
                elif group_of[modem_name] != group.name:
                    message = f"modem {modem_name!r} is not in group {group.name!r}"
                else:
                    continue
                path = f"gsm_groups[{index}].prefixes.{modem_name}"
                where = self.prefix_nodes.get(path) or group_names.get(group.name)
                if where is not None:
                    self.issue(where, path, message, f"a modem with group: {group.name}")
