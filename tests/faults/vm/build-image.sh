#!/bin/sh
# A Debian bookworm root for the cgroup v2 scenarios (tests/faults/test_cgroup_v2.py):
# its own kernel and initrd, systemd booting with the unified hierarchy, Python 3.11.
# Usage: build-image.sh OUT_DIR   (as root; writes OUT_DIR/{root.img,vmlinuz,initrd.img})
# The image is generic: at boot it mounts the 9p share "share" and runs share/boot.sh,
# then powers off, so a changed scenario never needs a new image.
set -eu
out=$1
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=linux-image-amd64,initramfs-tools,systemd,systemd-sysv,udev,kmod,python3,python3-venv,procps
image_mib=2048

work=$(mktemp -d "${TMPDIR:-/tmp}/batchd-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror"

echo batchd-vm > "$root/etc/hostname"
# The root file system comes from the kernel command line; nothing else to mount.
: > "$root/etc/fstab"
# Modules the share needs, loaded before the test unit mounts it.
printf '9p\n9pnet_virtio\n' > "$root/etc/modules-load.d/batchd-share.conf"
cat > "$root/etc/systemd/system/batchd-vmtest.service" <<'UNIT'
[Unit]
Description=batchd cgroup v2 scenarios from the host's share
After=multi-user.target systemd-modules-load.service
Wants=systemd-modules-load.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'mkdir -p /mnt/share && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /mnt/share && sh /mnt/share/boot.sh > /dev/ttyS0 2>&1'
ExecStopPost=/bin/systemctl poweroff --no-block
StandardOutput=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/batchd-vmtest.service \
    "$root/etc/systemd/system/multi-user.target.wants/batchd-vmtest.service"
# No login prompt on the console the results are printed to.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*

cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"
truncate -s "${image_mib}M" "$work/root.img"
mkfs.ext4 -q -F -L batchd-root -d "$root" "$work/root.img"

mkdir -p "$out"
mv "$work/vmlinuz" "$work/initrd.img" "$work/root.img" "$out/"
