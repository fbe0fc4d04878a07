"""Pure parts of the SD image build: partition layout, the files the build writes into the
root, and the check that nothing in the root carries a password.

image/build does the I/O (mmdebstrap, mke2fs, mtools, sfdisk, dd); everything here takes data
and returns text or numbers, so tests/unit/test_image_build.py can check it without building.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024
SECTOR = 512
# Partitions start on 1 MiB boundaries (SD erase blocks, 4 KiB sectors) and the first one
# leaves the first MiB for the partition table.
ALIGN = MIB

BOOT_LABEL = "BL-BOOT"
ROOT_LABEL = "bl-root"
DATA_LABEL = "bl-data"

ARCHES = {
    # arch: (Debian kernel package, EFI removable-media file name, systemd-boot binary,
    #        partition table, serial console)
    "amd64": ("linux-image-amd64", "BOOTX64.EFI", "systemd-bootx64.efi", "gpt", "ttyS0,115200"),
    "arm64": ("linux-image-arm64", "BOOTAA64.EFI", "systemd-bootaa64.efi", "dos", "ttyAMA0,115200"),
}


@dataclass(frozen=True)
class Partition:
    """One partition of the image: where it starts and how long it is, in bytes."""

    name: str
    label: str
    start: int
    size: int
    fs: str

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class Layout:
    """The whole disk: the partitions in order, the table type and the file's size."""

    table: str
    partitions: tuple[Partition, ...]
    total: int


def round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def root_size(content_bytes: int, inodes: int = 0) -> int:
    """The root file system's size for a tree of content_bytes: ext4 metadata (inode tables,
    journal) plus 15 % and 64 MiB of slack, so the read-only root still fits a package
    update done at build time; rounded to whole MiB."""
    if content_bytes < 0:
        raise ValueError(f"content_bytes must be >= 0, got {content_bytes}")
    overhead = inodes * 256 + 32 * MIB  # one inode each, plus the journal
    return round_up(int(content_bytes * 1.15) + overhead + 64 * MIB, MIB)


def compute_layout(arch: str, boot_bytes: int, root_bytes: int, data_bytes: int) -> Layout:
    """Place boot (FAT32), root and data (ext4) one after the other on MiB boundaries.

    The data partition is last so first boot can grow it to fill the card. A GPT table needs
    33 sectors at the end for its backup copy, so a GPT disk gets one more MiB.
    """
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {sorted(ARCHES)}, got {arch!r}")
    table = ARCHES[arch][3]
    parts: list[Partition] = []
    at = ALIGN
    for name, label, size, fs in (
        ("boot", BOOT_LABEL, boot_bytes, "vfat"),
        ("root", ROOT_LABEL, root_bytes, "ext4"),
        ("data", DATA_LABEL, data_bytes, "ext4"),
    ):
        if size <= 0:
            raise ValueError(f"{name} partition size must be > 0, got {size}")
        size = round_up(size, ALIGN)
        parts.append(Partition(name, label, at, size, fs))
        at += size
    total = at + (ALIGN if table == "gpt" else 0)
    return Layout(table, tuple(parts), total)


# GPT type GUIDs and MBR type bytes for what each partition holds.
_GPT_TYPES = {
    "boot": "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",  # EFI System
    "root": "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",  # Linux root (x86-64)
    "root-arm64": "B921B045-1DF0-41C3-AF44-4C6F280D3FAE",  # Linux root (ARM64)
    "data": "0FC63DAF-8483-4772-8E79-3D69D8477DE4",  # Linux filesystem
}
_MBR_TYPES = {"boot": "c", "root": "83", "data": "83"}  # FAT32 LBA: the Pi firmware reads it


def sfdisk_script(layout: Layout, arch: str) -> str:
    """The sfdisk input that writes layout's table into a plain file (no loop device)."""
    lines = [f"label: {layout.table}", "unit: sectors"]
    if layout.table == "gpt":
        lines.append(f"last-lba: {layout.total // SECTOR - 34}")
    for p in layout.partitions:
        if layout.table == "gpt":
            key = "root-arm64" if p.name == "root" and arch == "arm64" else p.name
            ptype = _GPT_TYPES[key]
            extra = f', name="{p.label}"'
        else:
            ptype = _MBR_TYPES[p.name]
            extra = ", bootable" if p.name == "boot" else ""
        lines.append(
            f"start={p.start // SECTOR}, size={p.size // SECTOR}, type={ptype}{extra}"
        )
    return "\n".join(lines) + "\n"


def release_file(commit: str, version: str, build_date: str, arch: str, dirty: bool) -> str:
    """/etc/branchline-release: what was built, from which commit, when, for which CPU.

    Shell-sourceable KEY=value lines, like /etc/os-release."""
    if not re.fullmatch(r"[0-9a-f]{7,40}", commit):
        raise ValueError(f"commit must be a hex git hash, got {commit!r}")
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {sorted(ARCHES)}, got {arch!r}")
    return (
        f"BRANCHLINE_VERSION={version}\n"
        f"BRANCHLINE_COMMIT={commit}\n"
        f"BRANCHLINE_COMMIT_DIRTY={'yes' if dirty else 'no'}\n"
        f"BUILD_DATE={build_date}\n"
        f"ARCH={arch}\n"
        "DEBIAN=bookworm\n"
    )


def image_name(version: str, commit: str, build_date: str, arch: str) -> str:
    """branchline-0.1.0-<12 hex>-20261206-arm64.img: version, commit, day and arch in the name."""
    day = build_date[:10].replace("-", "")
    return f"branchline-{version}-{commit[:12]}-{day}-{arch}.img"


def fstab() -> str:
    """Root read-only by label; boot and data by label too, so the same image works from an
    SD card, a USB stick or a virtio disk. Data is nofail: a box with a broken data
    partition still boots and stays reachable."""
    return (
        "# <device>            <mount>         <type> <options>                      <dump> <pass>\n"
        f"LABEL={ROOT_LABEL}     /               ext4   ro,noatime                     0 1\n"
        f"LABEL={BOOT_LABEL}     /boot/firmware  vfat   rw,noatime,umask=0077,nofail   0 2\n"
        f"LABEL={DATA_LABEL}     /data           ext4   rw,noatime,nofail,x-systemd.device-timeout=10s 0 2\n"
    )


def kernel_cmdline(arch: str, extra: str = "") -> str:
    """The kernel command line: root by label, read-only, serial and screen consoles."""
    console = ARCHES[arch][4]
    tty = "tty1" if arch == "amd64" else "tty0"
    words = [f"root=LABEL={ROOT_LABEL}", "ro", "rootwait", f"console={tty}", f"console={console}"]
    words += extra.split()
    return " ".join(words)


def loader_entry(cmdline: str) -> str:
    """systemd-boot's entry for the kernel and initrd copied to the FAT partition."""
    return (
        "title   Branchline\n"
        "linux   /vmlinuz\n"
        "initrd  /initrd.img\n"
        f"options {cmdline}\n"
    )


def loader_conf() -> str:
    return "default branchline.conf\ntimeout 0\nconsole-mode keep\n"


def pi_config_txt() -> str:
    """config.txt for the Raspberry Pi firmware: 64-bit, Debian's kernel and initrd."""
    return (
        "# Branchline: Debian's arm64 kernel on the Raspberry Pi firmware.\n"
        "arm_64bit=1\n"
        "enable_uart=1\n"
        "upstream_kernel=1\n"
        "disable_overscan=1\n"
        "kernel=vmlinuz\n"
        "initramfs initrd.img followkernel\n"
    )


# A crypt(3) hash in a shadow/passwd-like field: $id$..., or a DES hash of 13 chars.
_HASH = re.compile(r"^\$(1|2[abxy]?|5|6|7|y|gy|sha1|md5)\$")


def password_hashes(shadow_text: str) -> list[str]:
    """The accounts in a shadow (or passwd) file that have a usable password: anything in
    the password field other than empty-and-locked markers ('*', '!', '!*', 'x') counts.
    An empty field means 'no password needed' and counts too."""
    found = []
    for line in shadow_text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < 2:
            continue
        user, pw = fields[0], fields[1]
        if pw in ("*", "!", "!*", "x", "!!") or pw.startswith("!"):
            continue
        found.append(user)
    return found


def files_with_password_hashes(root: Path, names: Iterable[str] = ()) -> list[Path]:
    """Files under root whose lines look like crypt(3) password entries (user:$6$...),
    besides the shadow files checked by password_hashes. Used on the overlay tree."""
    hits = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            fields = line.split(":")
            if len(fields) >= 2 and _HASH.match(fields[1]):
                hits.append(path)
                break
    extra = [root / n for n in names if (root / n).is_file()]
    return hits + [p for p in extra if p not in hits]


def root_problems(root: Path) -> list[str]:
    """Why a built root must not ship: an account with a password, or SSH host keys (every
    box must make its own at first boot). Empty when the root is fit to ship."""
    problems = []
    for name in ("etc/shadow", "etc/passwd"):
        f = root / name
        if not f.is_file():
            problems.append(f"{name} is missing")
            continue
        users = password_hashes(f.read_text())
        if users:
            problems.append(f"{name} gives a password to {', '.join(users)}")
    keys = sorted(p.name for p in (root / "etc" / "ssh").glob("ssh_host_*"))
    if keys:
        problems.append(f"SSH host keys would ship in the image: {', '.join(keys)}")
    return problems
