#!/bin/sh
# mmdebstrap --customize-hook for image/build: runs on the build host with the new root in $1.
# Inputs come from image/build through the environment:
#   BL_SRC      a `git archive` export of the commit being built (systemd/, docs/)
#   BL_WHEELS   Branchline's wheel and its dependencies' wheels for the target CPU
#   BL_OVERLAY  lane I2's tree (image/rootfs), copied over the root last; may be absent
#   BL_RELEASE  the text of /etc/branchline-release
#   BL_FSTAB    the text of /etc/fstab
set -eu
R="$1"
in_root() { chroot "$R" "$@"; }

# --- Branchline in a venv. --system-site-packages: python3-systemd (journald) comes from
# Debian, everything else from the wheels (PyPI), installed offline.
mkdir -p "$R/tmp/bl-wheels"
cp "$BL_WHEELS"/*.whl "$R/tmp/bl-wheels/"
in_root python3 -m venv --system-site-packages /opt/branchline
in_root /opt/branchline/bin/pip install --no-index --find-links /tmp/bl-wheels \
    --no-cache-dir --disable-pip-version-check -q branchline
rm -rf "$R/tmp/bl-wheels"
ln -sf /opt/branchline/bin/branchline "$R/usr/bin/branchline"
in_root branchline --help >/dev/null

# --- The units and their companions (docs/systemd.md), as the vendor's files.
install -D -m 644 "$BL_SRC/systemd/branchline.service" "$R/usr/lib/systemd/system/branchline.service"
install -D -m 644 "$BL_SRC/systemd/sysusers.d/branchline.conf" "$R/usr/lib/sysusers.d/branchline.conf"
install -D -m 644 "$BL_SRC/systemd/tmpfiles.d/branchline.conf" "$R/usr/lib/tmpfiles.d/branchline.conf"
for f in "$BL_SRC"/systemd/udev/rules.d/*.rules; do
    install -D -m 644 "$f" "$R/usr/lib/udev/rules.d/$(basename "$f")"
done
install -D -m 644 "$BL_SRC/docs/systemd.md" "$R/usr/share/doc/branchline/systemd.md"
in_root systemd-sysusers
in_root systemctl enable branchline.service

# --- SSH: keys only; host keys are made per box at first boot, never shipped.
mkdir -p "$R/etc/ssh/sshd_config.d"
cat > "$R/etc/ssh/sshd_config.d/10-branchline.conf" <<'EOF'
# Branchline: log in with a key from authorized_keys (dropped on the boot partition), never
# with a password.
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PermitRootLogin prohibit-password
AuthenticationMethods publickey
EOF
rm -f "$R"/etc/ssh/ssh_host_*

# --- Accounts: root locked, no password anywhere.
in_root passwd -l root >/dev/null
in_root usermod -p '!*' root

# --- Network: DHCP on any wired port until first boot provisions a static one.
mkdir -p "$R/etc/systemd/network"
cat > "$R/etc/systemd/network/80-branchline-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=yes
LinkLocalAddressing=yes
EOF
in_root systemctl enable systemd-networkd.service
echo branchline > "$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tbranchline\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"

# --- Version, mounts, machine identity (empty: each box makes its own at first boot).
printf '%s' "$BL_RELEASE" > "$R/etc/branchline-release"
printf '%s' "$BL_FSTAB" > "$R/etc/fstab"
mkdir -p "$R/boot/firmware" "$R/data"
: > "$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"

# --- Lane I2's overlay, owned by root whatever the checkout's owners; its units enabled.
if [ -n "${BL_OVERLAY:-}" ] && [ -d "$BL_OVERLAY" ]; then
    tar -C "$BL_OVERLAY" --owner=0 --group=0 --numeric-owner -cf - . | tar -C "$R" -xpf -
    # git keeps only the executable bit: the modes that matter are set here, not in the tree.
    if [ -d "$R/etc/sudoers.d" ]; then chmod 0440 "$R"/etc/sudoers.d/*; fi
    for dir in etc/systemd/system usr/lib/systemd/system; do
        [ -d "$BL_OVERLAY/$dir" ] || continue
        for unit in "$BL_OVERLAY/$dir"/*; do
            [ -f "$unit" ] || continue
            if grep -q '^\[Install\]' "$unit"; then
                in_root systemctl enable "$(basename "$unit")"
            fi
        done
    done
    # The overlay's sysusers.d entries (e.g. the admin login) must exist in the image: the
    # root is read-only at boot, so systemd-sysusers cannot add them there.
    in_root systemd-sysusers
fi

# --- Kernel modules a telephone gateway never loads (TV tuners, InfiniBand, sensors,
# Bluetooth; on amd64 also graphics and Wi-Fi), then the module index and initrd again.
prune="drivers/media drivers/infiniband drivers/staging drivers/iio drivers/target drivers/isdn
       drivers/bluetooth net/bluetooth"
[ "$(in_root dpkg --print-architecture)" = amd64 ] && prune="$prune drivers/gpu drivers/net/wireless net/wireless net/mac80211"
for kdir in "$R"/usr/lib/modules/*; do
    for sub in $prune; do rm -rf "$kdir/kernel/$sub"; done
    kver=$(basename "$kdir")
    in_root depmod -a "$kver"
done
# The initrd, once, after the pruning. image/build's essential hook diverted
# update-initramfs to a stub, so the kernel's postinst and the triggers did not build it
# three times over (each run takes minutes under qemu-user).
if [ -e "$R/usr/sbin/update-initramfs.real" ]; then
    rm -f "$R/usr/sbin/update-initramfs"
    in_root dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs
    for kdir in "$R"/usr/lib/modules/*; do
        in_root update-initramfs -c -k "$(basename "$kdir")"
    done
elif [ "$(in_root dpkg --print-architecture)" = "$(dpkg --print-architecture)" ]; then
    in_root update-initramfs -u -k all
fi

# --- Smaller: package lists and caches are rebuilt by apt if ever needed.
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb
rm -rf "$R"/var/log/*.log "$R"/var/log/apt/* "$R"/tmp/* "$R"/root/.cache
