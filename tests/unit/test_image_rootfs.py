"""Static checks of the SD image's root overlay (image/rootfs) and the first-boot script's
file handling, run on a temporary directory with the real `branchline check-config`.

The boot itself (qemu) is image/test-boot, a documented command outside CI.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
ROOTFS = REPO / "image" / "rootfs"
FIRSTBOOT = ROOTFS / "usr" / "lib" / "branchline" / "firstboot"
BRANCHLINE = str(Path(sys.executable).parent / "branchline")

PUBKEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAhTBPiESUGZjxM9+1z0mzymrsyfzmwHFAx0IGdVBU7Y "
          "installer@laptop")

GOOD_CONFIG = """\
gateway: {name: box, country: US}
sip: {listen: "0.0.0.0:5060"}
trunks:
  - {name: main, registrar: "192.0.2.10"}
lines:
  - {name: "1", type: fxs, backend: sim, number: "201"}
dialplan:
  routes:
    - {pattern: '2\\d\\d', to: local}
"""
BAD_CONFIG = "lines:\n  - {name: 1, backend: sim, number: 201, colour: blue}\nnope: [\n"


def load_firstboot() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("bl_firstboot", str(FIRSTBOOT))
    spec = importlib.util.spec_from_loader("bl_firstboot", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bl_firstboot"] = module
    loader.exec_module(module)
    return module


fb = load_firstboot()


def conf_values(path: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            key, _, value = line.partition(" ")
            values.setdefault(key.lower(), []).append(value.strip())
    return values


def unit_values(path: Path) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).extend(value.split())
    return values


# --- static checks of the overlay --------------------------------------------------------

def test_no_password_hash_or_private_key_in_the_overlay() -> None:
    crypt = re.compile(r"^[^:#\s]+:\$(1|2[abxy]?|5|6|y|gy)\$")
    for path in ROOTFS.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        assert not any(crypt.match(line) for line in text.splitlines()), path
        assert "PRIVATE KEY-----" not in text, path
        assert not path.name.startswith("ssh_host_"), path
    for name in ("etc/shadow", "etc/passwd", "etc/group"):
        assert not (ROOTFS / name).exists(), f"{name} belongs to the build, not the overlay"


def test_sshd_keys_only_and_host_keys_on_data() -> None:
    conf = conf_values(ROOTFS / "etc/ssh/sshd_config.d/10-branchline.conf")
    assert conf["passwordauthentication"] == ["no"]
    assert conf["kbdinteractiveauthentication"] == ["no"]
    assert conf["permitrootlogin"] == ["prohibit-password"]
    assert conf["authenticationmethods"] == ["publickey"]
    assert conf["hostkey"] and all(k.startswith("/data/etc/ssh/") for k in conf["hostkey"])
    assert conf["authorizedkeysfile"][0].split()[0] == "/data/etc/ssh/authorized_keys/%u"
    # The path the first-boot script writes is the one sshd reads.
    assert str(fb.Paths().authorized_keys) == "/data/etc/ssh/authorized_keys/branchline-admin"


def test_admin_user_has_no_password_and_sudo_needs_none() -> None:
    sysusers = (ROOTFS / "usr/lib/sysusers.d/branchline-admin.conf").read_text()
    row = next(line.split() for line in sysusers.splitlines()
               if line.startswith("u ") and "branchline-admin" in line)
    assert row[2] == "-"  # sysusers gives a locked password; nothing here can set one
    sudoers = ROOTFS / "etc/sudoers.d/branchline-admin"
    assert "NOPASSWD" in sudoers.read_text()
    # git stores no modes but the executable bit, so the build sets 0440 in the image.
    customize = (ROOTFS.parent / "lib" / "customize.sh").read_text()
    assert 'chmod 0440 "$R"/etc/sudoers.d/*' in customize
    if shutil.which("visudo"):
        subprocess.run(["visudo", "-c", "-f", str(sudoers)], check=True, capture_output=True)


def test_fstab_root_read_only_tmpfs_and_binds_on_data() -> None:
    rows = [line.split() for line in (ROOTFS / "etc/fstab").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    by_mount = {r[1]: r for r in rows}
    assert by_mount["/"][0] == "LABEL=bl-root"
    assert "ro" in by_mount["/"][3].split(",")
    for scratch in ("/tmp", "/var/tmp", "/var/log"):
        assert by_mount[scratch][2] == "tmpfs", scratch
    assert by_mount["/data"][0] == "LABEL=bl-data"
    assert "nofail" in by_mount["/data"][3].split(",")
    assert by_mount["/boot/firmware"][2] == "vfat"
    assert "noauto" in by_mount["/boot/firmware"][3].split(",")
    # No fstab bind hangs off data.mount: with the data partition missing such a bind
    # fails and takes branchline.service and logind with it (seen in a qemu boot).
    assert not [r for r in rows if "bind" in r[3].split(",")]


def test_state_is_bound_from_data_by_the_layout_step(tmp_path: Path) -> None:
    p = fb.Paths(data=tmp_path / "data", etc_branchline=tmp_path / "etc/branchline",
                 var_lib_systemd=tmp_path / "var/lib/systemd",
                 var_lib_branchline=tmp_path / "var/lib/branchline")
    calls: list[list[str]] = []

    def runner(argv: list[str], input_text: str | None = None
               ) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, "", "")

    fb.bind_state(p, runner, mounted=lambda path: path == p.var_lib_systemd)
    assert calls == [
        ["mount", "--bind", str(p.data / "etc/branchline"), str(p.etc_branchline)],
        ["mount", "--bind", str(p.data / "lib/branchline"), str(p.var_lib_branchline)],
    ]  # /var/lib/systemd was already a mount point: not bound twice
    made = {p.data / rel for rel, _ in fb.DATA_DIRS}
    assert {src for src, _ in fb.state_binds(p)} <= made
    unit = unit_values(ROOTFS / "etc/systemd/system/branchline-data.service")
    assert {"systemd-logind.service", "systemd-random-seed.service",
            "branchline-firstboot.service"} <= set(unit["Before"])


def test_units_order_provisioning_before_sshd_and_branchline() -> None:
    system = ROOTFS / "etc/systemd/system"
    first = unit_values(system / "branchline-firstboot.service")
    assert {"ssh.service", "branchline.service", "systemd-networkd.service"} <= set(
        first["Before"])
    assert "branchline-data.service" in first["After"]
    assert "network-online.target" not in first.get("After", [])
    data = unit_values(system / "branchline-data.service")
    assert "ssh.service" in data["Before"]
    assert data.get("Requires") is None  # runs without /data too (tmpfs fallback)
    drop = unit_values(system / "branchline.service.d/image.conf")
    assert drop["ConditionPathExists"] == ["/etc/branchline/branchline.yaml"]
    assert "branchline-firstboot.service" in drop["After"]
    ssh = unit_values(system / "ssh.service.d/branchline.conf")
    assert "branchline-firstboot.service" in ssh["After"]
    assert os.readlink(system / "systemd-firstboot.service") == "/dev/null"


def test_branchline_does_not_wait_for_time_sync_or_long_for_the_network() -> None:
    """The product unit orders after time-sync.target and network-online.target; in the
    image neither may hold it up: no time-wait-sync is shipped or enabled, and the
    wait-online drop-in returns on any link or after at most 10 s."""
    assert not list(ROOTFS.rglob("systemd-time-wait-sync*"))
    wait = (ROOTFS / "etc/systemd/system/systemd-networkd-wait-online.service.d"
            / "branchline.conf").read_text()
    cmd = [line for line in wait.splitlines() if line.startswith("ExecStart=/")]
    assert len(cmd) == 1 and "--any" in cmd[0]
    timeout = int(re.search(r"--timeout=(\d+)", cmd[0]).group(1))  # type: ignore[union-attr]
    assert 0 < timeout <= 10
    product = unit_values(REPO / "systemd/branchline.service")
    assert "Requires" not in product  # a failed wait-online must not stop it


def test_journal_is_volatile() -> None:
    text = (ROOTFS / "etc/systemd/journald.conf.d/branchline.conf").read_text()
    assert re.search(r"^Storage=volatile$", text, re.M)


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="needs systemd-analyze")
def test_overlay_units_parse(tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    shutil.copytree(ROOTFS / "etc/systemd/system", unit_dir, symlinks=True)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", "--recursive-errors=no",
         str(unit_dir / "branchline-firstboot.service"), str(unit_dir / "branchline-data.service")],
        capture_output=True, text=True)
    # Only the unit files' own syntax counts here: ExecStart binaries exist only in the image.
    errors = [line for line in done.stderr.splitlines()
              if "branchline-" in line and "is not executable" not in line
              and "No such file" not in line and "Command " not in line]
    assert errors == []


def test_firstboot_script_runs_on_the_python_the_image_has() -> None:
    assert os.access(FIRSTBOOT, os.X_OK)
    assert FIRSTBOOT.read_text().startswith("#!/usr/bin/python3\n")
    imports = re.findall(r"^\s*(?:import|from) (\w+)", FIRSTBOOT.read_text(), re.M)
    assert set(imports) <= set(sys.stdlib_module_names) | {"__future__"}


# --- first-boot file handling on a temp dir ----------------------------------------------

def make_paths(tmp_path: Path) -> object:
    boot = tmp_path / "boot"
    boot.mkdir()
    data = tmp_path / "data"
    etc = data / "etc" / "branchline"
    etc.mkdir(parents=True)
    return fb.Paths(boot=boot, data=data, etc_branchline=etc,
                    run_network=tmp_path / "run-network", machine_id=tmp_path / "machine-id",
                    var_lib_systemd=tmp_path / "var-lib-systemd", branchline=BRANCHLINE)


def test_provision_installs_good_files_and_moves_them_aside(tmp_path: Path) -> None:
    p = make_paths(tmp_path)
    (p.boot / "branchline.yaml").write_text(GOOD_CONFIG)
    (p.boot / "authorized_keys").write_text(PUBKEY + "\r\n")
    (p.boot / "hostname").write_text("Office-3\n")
    (p.boot / "network.yaml").write_text(
        "address: 192.168.1.50/24\ngateway: 192.168.1.1\ndns: [192.168.1.1, 9.9.9.9]\n")
    (p.boot / "config.txt").write_text("arm_64bit=1\n")
    errors = fb.provision(p, stamp="20261206-1200", apply_now=False)
    assert errors == []
    assert p.config.read_text() == GOOD_CONFIG
    assert oct(p.config.stat().st_mode & 0o777) == "0o640"
    assert p.authorized_keys.read_text() == PUBKEY + "\n"
    assert p.hostname.read_text() == "office-3\n"
    unit = (p.run_network / "10-branchline-static.network").read_text()
    assert "Address=192.168.1.50/24" in unit and "Gateway=192.168.1.1" in unit
    assert "DNS=9.9.9.9" in unit
    assert (p.network_dir / "10-branchline-static.network").read_text() == unit
    aside = p.boot / "provisioned-20261206-1200"
    assert sorted(x.name for x in aside.iterdir()) == [
        "authorized_keys", "branchline.yaml", "hostname", "network.yaml"]
    assert (p.boot / "config.txt").exists()  # not ours: untouched
    assert not list(p.etc_branchline.glob(".*.tmp"))
    # A reboot finds nothing to apply.
    assert fb.provision(p, stamp="20261206-1300", apply_now=False) == []
    assert not (p.boot / "provisioned-20261206-1300").exists()


def test_bad_config_is_refused_keys_still_installed_running_config_kept(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = make_paths(tmp_path)
    p.config.write_text(GOOD_CONFIG)
    (p.boot / "branchline.yaml").write_text(BAD_CONFIG)
    (p.boot / "authorized_keys").write_text(PUBKEY + "\n")
    errors = fb.provision(p, stamp="s1", apply_now=False)
    assert len(errors) == 1 and errors[0].startswith("branchline.yaml refused")
    assert p.config.read_text() == GOOD_CONFIG  # the running config stays
    assert p.authorized_keys.read_text() == PUBKEY + "\n"  # the box stays reachable
    report = (p.boot / "provisioned-s1" / fb.ERRORS_NAME).read_text()
    assert "branchline.yaml" in report and "line" in report
    out = capsys.readouterr().out
    assert "<3>branchline-firstboot: branchline.yaml refused" in out
    assert "keeps running with the config it had" in out
    # The same stamp again gets a fresh directory rather than mixing two provisionings.
    (p.boot / "branchline.yaml").write_text(BAD_CONFIG)
    fb.provision(p, stamp="s1", apply_now=False)
    assert (p.boot / "provisioned-s1-2" / "branchline.yaml").exists()


def test_bad_config_on_a_fresh_box_leaves_no_config(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    p = make_paths(tmp_path)
    (p.boot / "branchline.yaml").write_text(BAD_CONFIG)
    fb.provision(p, stamp="s", apply_now=False)
    assert not p.config.exists()  # branchline.service's ConditionPathExists keeps it stopped
    assert "will not start until a valid branchline.yaml" in capsys.readouterr().out


def test_install_config_is_atomic_and_checks_first(tmp_path: Path) -> None:
    p = make_paths(tmp_path)
    p.config.write_text(GOOD_CONFIG)
    before = p.config.stat().st_ino
    new = tmp_path / "new.yaml"
    new.write_text(GOOD_CONFIG.replace("201", "202"))
    fb.install_config(new, p)
    assert "202" in p.config.read_text()
    assert p.config.stat().st_ino != before  # replaced by rename, never rewritten in place
    new.write_text(BAD_CONFIG)
    with pytest.raises(fb.ProvisionError):
        fb.install_config(new, p)
    assert "202" in p.config.read_text()
    assert sorted(x.name for x in p.etc_branchline.iterdir()) == ["branchline.yaml"]


@pytest.mark.parametrize("text, problem", [
    ("", "no public key"),
    ("# just a comment\n", "no public key"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n", "private key"),
    ("ssh-ed25519 not-base64!!\n", "not base64"),
    ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIAhTBPiESUGZjxM9+1z0mzymrsyfzmwHFAx0IGdVBU7Y\n",
     "does not match"),
    (PUBKEY + "\nhello world\n", "line 2"),
])
def test_authorized_keys_refused(text: str, problem: str) -> None:
    with pytest.raises(fb.ProvisionError, match=problem):
        fb.check_authorized_keys(text)


def test_authorized_keys_with_options_and_bom() -> None:
    line = 'from="10.0.0.0/8",no-pty ' + PUBKEY
    assert fb.check_authorized_keys("\ufeff" + line + "\n\n") == [line]


@pytest.mark.parametrize("good", ["office-3", "branch.example.net", "A1\n"])
def test_hostname_accepted(good: str) -> None:
    assert fb.check_hostname(good) == good.strip().lower()


@pytest.mark.parametrize("bad", ["", "two\nnames", "under_score", "-lead", "x" * 64,
                                 "a b"])
def test_hostname_refused(bad: str) -> None:
    with pytest.raises(fb.ProvisionError):
        fb.check_hostname(bad)


@pytest.mark.parametrize("text, problem", [
    ("gateway: 10.0.0.1\n", "address is required"),
    ("address: 10.0.0.5\n", "prefix"),
    ("address: 10.0.0.5/24\ngateway: 10.1.0.1\n", "outside"),
    ("address: 10.0.0.5/24\nmtu: 1400\n", "line 2"),
    ("address: 10.0.0.5/24\naddress: 10.0.0.6/24\n", "twice"),
    ("address: 10.0.0.5/24\ninterface: eth0; rm -rf\n", "not a name"),
])
def test_network_yaml_refused(text: str, problem: str) -> None:
    with pytest.raises(fb.ProvisionError, match=problem):
        fb.parse_network(text)


def test_network_yaml_ipv6_and_interface() -> None:
    s = fb.parse_network("interface: eth1\naddress: 2001:db8::5/64\ngateway: 2001:db8::1\n")
    unit = fb.network_unit(s)
    assert "Name=eth1" in unit and "Address=2001:db8::5/64" in unit
    assert "Gateway=2001:db8::1" in unit and "DNS=" not in unit


def test_layout_keeps_machine_id_makes_host_keys_once(tmp_path: Path) -> None:
    p = make_paths(tmp_path)
    shutil.rmtree(p.etc_branchline)
    p.machine_id.write_text("0123456789abcdef0123456789abcdef\n")
    p.var_lib_systemd.mkdir()
    (p.var_lib_systemd / "catalog").mkdir()
    calls: list[list[str]] = []

    def runner(argv: list[str]) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        if argv[0] == "ssh-keygen":
            (p.ssh_dir / "ssh_host_ed25519_key").write_text("key")
        return subprocess.CompletedProcess(argv, 0, "", "")

    (tmp_path / "data/etc/branchline").mkdir(parents=True)
    (tmp_path / "data/etc/branchline/.branchline.yaml.abc.tmp").write_text("half")
    (tmp_path / "data/etc/network").mkdir(parents=True)
    (tmp_path / "data/etc/network/10-branchline-static.network").write_text("[Match]\n")
    fb.layout(p, runner, real_system=False)
    for rel, _ in fb.DATA_DIRS:
        assert (p.data / rel).is_dir(), rel
    assert oct((p.data / "lib/branchline").stat().st_mode & 0o777) == "0o700"
    assert p.data_machine_id.read_text() == "0123456789abcdef0123456789abcdef\n"
    assert (p.data / "lib/systemd/catalog").is_dir()
    assert not list((p.data / "etc/branchline").glob(".*.tmp"))
    assert (p.run_network / "10-branchline-static.network").exists()
    assert calls == [["ssh-keygen", "-A", "-f", str(p.data)]]
    # Next boot: a new transient machine ID from systemd, same kept one; no new host keys.
    p.machine_id.write_text("ffffffffffffffffffffffffffffffff\n")
    fb.layout(p, runner, real_system=False)
    assert p.data_machine_id.read_text() == "0123456789abcdef0123456789abcdef\n"
    assert len(calls) == 1


# --- growing the data partition ----------------------------------------------------------

def fake_blocks(tmp_path: Path, disk_mib: int, label: str = "bl-data",
                root: str = "vda2") -> object:
    """A sysfs/dev/mountinfo tree for one disk "vda" with the image's three partitions
    (boot 256 MiB at 1 MiB, root 900 MiB, data 128 MiB last), in 512-byte sectors."""
    sysb = tmp_path / "sys" / "class" / "block"
    devices = tmp_path / "sys" / "devices" / "vda"
    devices.mkdir(parents=True)
    (devices / "size").write_text(f"{disk_mib * 2048}\n")
    sysb.mkdir(parents=True)
    (sysb / "vda").symlink_to(devices)
    start = 2048
    for n, mib in ((1, 256), (2, 900), (3, 128)):
        part = devices / f"vda{n}"
        part.mkdir()
        (part / "partition").write_text(f"{n}\n")
        (part / "start").write_text(f"{start}\n")
        (part / "size").write_text(f"{mib * 2048}\n")
        (sysb / f"vda{n}").symlink_to(part)
        start += mib * 2048
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("vda", "vda1", "vda2", "vda3"):
        (dev / name).write_text("")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        f"22 1 254:2 / / ro,noatime shared:1 - ext4 {dev / root} ro\n"
        "23 22 0:21 / /proc rw shared:2 - proc proc rw\n")
    return fb.BlockPaths(sys_block=sysb, dev=dev, mountinfo=mountinfo), label


class FakeRunner:
    def __init__(self, label: str, table: str = "dos") -> None:
        self.calls: list[tuple[list[str], str | None]] = []
        self.label = label
        self.table = table

    def __call__(self, argv: list[str], input_text: str | None = None
                 ) -> subprocess.CompletedProcess[str]:
        self.calls.append((list(argv), input_text))
        out = ""
        if argv[0] == "blkid":
            out = self.label + "\n"
        elif argv[:2] == ["sfdisk", "--dump"]:
            out = f"label: {self.table}\n"
        return subprocess.CompletedProcess(argv, 0, out, "")


@pytest.mark.parametrize("table", ["dos", "gpt"])
def test_grow_extends_the_last_partition_when_bl_data(tmp_path: Path, table: str) -> None:
    blocks, label = fake_blocks(tmp_path, disk_mib=8192)
    runner = FakeRunner(label, table)
    assert fb.grow(blocks, runner) is True
    argvs = [c[0] for c in runner.calls]
    grow_call = next(c for c in runner.calls if "-N" in c[0])
    assert grow_call[0][-3:] == ["-N", "3", str(tmp_path / "dev" / "vda")]
    assert grow_call[1] == ", +\n"  # same start, to the end of the disk
    assert ["partx", "-u", "-n", "3", str(tmp_path / "dev" / "vda")] in argvs
    relocated = ["sfdisk", "--relocate", "gpt-bak-std", str(tmp_path / "dev" / "vda")] in argvs
    assert relocated == (table == "gpt")
    # the backup GPT header moves before the partition grows into where it was
    if table == "gpt":
        assert argvs.index(["sfdisk", "--relocate", "gpt-bak-std",
                            str(tmp_path / "dev" / "vda")]) < argvs.index(grow_call[0])


def test_grow_does_nothing_on_a_card_the_image_fills(tmp_path: Path) -> None:
    blocks, label = fake_blocks(tmp_path, disk_mib=1 + 256 + 900 + 128 + 16)
    runner = FakeRunner(label)
    assert fb.grow(blocks, runner) is False
    assert runner.calls == []  # 16 MiB free: below the threshold, nothing run


def test_grow_never_touches_a_last_partition_that_is_not_bl_data(tmp_path: Path) -> None:
    blocks, _ = fake_blocks(tmp_path, disk_mib=8192)
    runner = FakeRunner("something-else")
    assert fb.grow(blocks, runner) is False
    assert not any(c[0][0] in ("sfdisk", "partx") for c in runner.calls)


def test_grow_unit_runs_before_data_is_mounted_and_fstab_grows_the_fs() -> None:
    unit = unit_values(ROOTFS / "etc/systemd/system/branchline-grow-data.service")
    assert "data.mount" in " ".join(unit["Before"])
    assert unit["ExecStart"] == ["/usr/lib/branchline/firstboot", "grow"]
    data_line = next(line for line in (ROOTFS / "etc/fstab").read_text().splitlines()
                     if line.startswith("LABEL=bl-data"))
    assert "x-systemd.growfs" in data_line and "nofail" in data_line
