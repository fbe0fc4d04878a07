"""image/build's pure parts (image/lib/imagelib.py) and the files that go into the image.

The full build (mmdebstrap, minutes) is a documented command (image/README.md), not a test.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("imagelib", ROOT / "image" / "lib" / "imagelib.py")
assert _spec and _spec.loader
il = importlib.util.module_from_spec(_spec)
sys.modules["imagelib"] = il
_spec.loader.exec_module(il)

MIB = 1024 * 1024


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_layout_partitions_are_aligned_ordered_and_do_not_overlap(arch: str) -> None:
    layout = il.compute_layout(arch, 256 * MIB, 700 * MIB + 123, 128 * MIB)
    names = [p.name for p in layout.partitions]
    assert names == ["boot", "root", "data"]
    assert layout.partitions[0].start == MIB  # the first MiB holds the table
    for p in layout.partitions:
        assert p.start % MIB == 0 and p.size % MIB == 0
    for a, b in zip(layout.partitions, layout.partitions[1:], strict=False):
        assert a.end == b.start
    assert layout.partitions[1].size == 701 * MIB  # rounded up, never down
    # data is last, so first boot can grow it; GPT needs room for its backup table
    tail = layout.total - layout.partitions[-1].end
    assert tail == (MIB if arch == "amd64" else 0)
    assert layout.table == ("gpt" if arch == "amd64" else "dos")


def test_layout_refuses_unknown_arch_and_empty_partition() -> None:
    with pytest.raises(ValueError, match="arch"):
        il.compute_layout("riscv64", MIB, MIB, MIB)
    with pytest.raises(ValueError, match="root partition"):
        il.compute_layout("amd64", MIB, 0, MIB)


def test_root_size_leaves_room_for_metadata() -> None:
    size = il.root_size(600 * MIB, inodes=30000)
    assert size % MIB == 0
    assert size >= 600 * MIB * 1.15 + 64 * MIB
    with pytest.raises(ValueError):
        il.root_size(-1)


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_sfdisk_script_writes_the_layout_into_a_plain_file(arch: str, tmp_path: Path) -> None:
    """sfdisk on a file (no loop device) produces the partitions the layout asks for."""
    layout = il.compute_layout(arch, 64 * MIB, 40 * MIB, 8 * MIB)
    script = il.sfdisk_script(layout, arch)
    sfdisk = shutil.which("sfdisk") or "/usr/sbin/sfdisk"
    if not Path(sfdisk).exists():
        pytest.fail("sfdisk missing: apt-get install fdisk (image/install-build-deps)")
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(layout.total)
    subprocess.run([sfdisk, "-q", str(img)], input=script, text=True, check=True)
    dump = subprocess.run([sfdisk, "--dump", str(img)], capture_output=True, text=True,
                          check=True).stdout
    starts = [int(line.split("start=")[1].split(",")[0]) for line in dump.splitlines()
              if "start=" in line]
    sizes = [int(line.split("size=")[1].split(",")[0]) for line in dump.splitlines()
             if "size=" in line]
    assert starts == [p.start // 512 for p in layout.partitions]
    assert sizes == [p.size // 512 for p in layout.partitions]
    if arch == "amd64":
        assert "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" in dump  # EFI System Partition
        assert 'name="bl-root"' in dump
    else:
        assert "type=c, bootable" in dump  # FAT32 LBA: what the Pi firmware reads


def test_release_file_records_commit_date_and_arch() -> None:
    text = il.release_file("0aac45a" + "0" * 33, "0.1.0", "2026-12-06T23:00:00Z", "arm64", False)
    fields = dict(line.split("=", 1) for line in text.splitlines())
    assert fields["BRANCHLINE_COMMIT"] == "0aac45a" + "0" * 33
    assert fields["BUILD_DATE"] == "2026-12-06T23:00:00Z"
    assert fields["ARCH"] == "arm64"
    assert fields["BRANCHLINE_VERSION"] == "0.1.0"
    assert fields["BRANCHLINE_COMMIT_DIRTY"] == "no"
    with pytest.raises(ValueError, match="commit"):
        il.release_file("HEAD", "0.1.0", "2026-12-06T23:00:00Z", "arm64", False)


def test_image_name_carries_version_commit_day_and_arch() -> None:
    name = il.image_name("0.1.0", "0aac45a1234567890", "2026-12-06T23:00:00Z", "amd64")
    assert name == "branchline-0.1.0-0aac45a12345-20261206-amd64.img"


def test_fstab_mounts_everything_by_label_and_root_read_only() -> None:
    rows = [line.split() for line in il.fstab().splitlines() if not line.startswith("#")]
    by_mount = {r[1]: r for r in rows}
    assert by_mount["/"][0] == "LABEL=bl-root" and "ro" in by_mount["/"][3].split(",")
    assert by_mount["/boot/firmware"][0] == "LABEL=BL-BOOT"
    assert by_mount["/data"][0] == "LABEL=bl-data"
    assert all(r[0].startswith("LABEL=") for r in rows)


def test_boot_files_name_the_root_by_label() -> None:
    cmdline = il.kernel_cmdline("arm64", "systemd.show_status=1")
    assert cmdline.split()[:2] == ["root=LABEL=bl-root", "ro"]
    assert "console=ttyAMA0,115200" in cmdline and cmdline.endswith("systemd.show_status=1")
    entry = il.loader_entry(il.kernel_cmdline("amd64"))
    assert "linux   /vmlinuz" in entry and "options root=LABEL=bl-root ro" in entry
    assert "arm_64bit=1" in il.pi_config_txt()


def test_password_hashes_finds_usable_passwords_only() -> None:
    shadow = (
        "root:!*:19000:0:99999:7:::\n"
        "daemon:*:19000:0:99999:7:::\n"
        "branchline:!:19000::::::\n"
        "pi:$6$salt$hash:19000:0:99999:7:::\n"
        "guest::19000:0:99999:7:::\n"
    )
    assert il.password_hashes(shadow) == ["pi", "guest"]
    assert il.password_hashes("root:x:0:0:root:/root:/bin/bash\n") == []


def test_overlay_tree_carries_no_password_hashes(tmp_path: Path) -> None:
    """Whatever lane I2 puts under image/rootfs/ holds no crypt(3) hash; the checker itself
    finds one planted in a scratch tree."""
    overlay = ROOT / "image" / "rootfs"
    if overlay.is_dir():
        assert il.files_with_password_hashes(overlay) == []
        shadow = overlay / "etc" / "shadow"
        if shadow.exists():
            assert il.password_hashes(shadow.read_text()) == []
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "chpasswd.list").write_text("pi:$y$j9T$abc$def\n")
    assert il.files_with_password_hashes(tmp_path) == [tmp_path / "etc" / "chpasswd.list"]


def test_customize_hook_locks_root_and_forbids_password_logins() -> None:
    """The hook that shapes the root: root locked, sshd key-only, no shipped host keys."""
    hook = (ROOT / "image" / "lib" / "customize.sh").read_text()
    assert "passwd -l root" in hook
    assert "PasswordAuthentication no" in hook
    assert "KbdInteractiveAuthentication no" in hook
    assert 'rm -f "$R"/etc/ssh/ssh_host_*' in hook
    assert "chpasswd" not in hook


def test_root_problems_refuses_passwords_and_shipped_host_keys(tmp_path: Path) -> None:
    """The gate image/build runs on the finished root before making file systems."""
    (tmp_path / "etc" / "ssh").mkdir(parents=True)
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "etc" / "shadow").write_text("root:!*:19000:0:99999:7:::\n")
    assert il.root_problems(tmp_path) == []
    (tmp_path / "etc" / "shadow").write_text("root:$y$j9T$salt$hash:19000:0:99999:7:::\n")
    (tmp_path / "etc" / "ssh" / "ssh_host_ed25519_key").write_text("secret")
    problems = il.root_problems(tmp_path)
    assert any("password to root" in p for p in problems)
    assert any("ssh_host_ed25519_key" in p for p in problems)
