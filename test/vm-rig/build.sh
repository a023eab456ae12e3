#!/usr/bin/env bash
# Builds the VM rig image: a Debian bookworm guest with systemd as PID 1 on a
# pure cgroup v2 hierarchy (every controller on cgroup2), a tiny busybox
# initramfs and an ext4 root image. run.sh caches the result under a
# directory named after this script's hash, so editing this file rebuilds.
# Root only; uses the machine's own Debian mirror (as apt is configured).
#
#   usage: build.sh OUTDIR      # ~90 s; ~300 MB rootfs in a 1 GiB sparse image
#
# Adapted from the reference rig (../shared/reference/vm-rig/build-rig.sh).
set -euo pipefail
OUT=${1:?usage: build.sh OUTDIR}
MIRROR=${MIRROR:-$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
mkdir -p "$OUT"
R="$OUT/rootfs"
rm -rf "$R"
# The kernel package would build a full initramfs (minutes of mkinitramfs)
# that the rig never uses: update-initramfs is diverted to a no-op first.
mmdebstrap --variant=minbase \
  --include=systemd,systemd-sysv,dbus,udev,kmod,python3,iproute2,procps,linux-image-amd64,busybox-static \
  --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && printf "#!/bin/sh\nexit 0\n" > "$1/usr/sbin/update-initramfs" && chmod 755 "$1/usr/sbin/update-initramfs"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  bookworm "$R" "$MIRROR"

echo snakepit-rig > "$R/etc/hostname"
cat > "$R/etc/fstab" <<'EOF'
/dev/vda / ext4 rw,relatime 0 1
host /mnt/host 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0
EOF
mkdir -p "$R/mnt/host"
chroot "$R" passwd -d root
# The guest runs /mnt/host/run.sh once, writes its output and exit code to
# the share, and powers off.
cat > "$R/etc/systemd/system/rig-run.service" <<'EOF'
[Unit]
Description=snakepit VM rig: run /mnt/host/run.sh and power off
ConditionKernelCommandLine=rig.run=1
Requires=mnt-host.mount dbus.socket
After=mnt-host.mount dbus.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'cd /mnt/host && ./run.sh > /mnt/host/out.log 2>&1; echo $? > /mnt/host/exitcode; sync'
ExecStopPost=/bin/systemctl --no-block poweroff
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
printf '9pnet_virtio\n9p\n' > "$R/etc/modules-load.d/rig.conf"
chroot "$R" systemctl enable rig-run.service
chroot "$R" systemctl mask e2scrub_reap.service apt-daily.timer apt-daily-upgrade.timer \
  dpkg-db-backup.timer e2scrub_all.timer fstrim.timer getty@tty1.service serial-getty@ttyS0.service \
  systemd-update-utmp.service systemd-update-utmp-runlevel.service

# Kernel, and only the modules a virtio guest needs.
KV=$(ls "$R/usr/lib/modules")
cp "$R/boot/vmlinuz-$KV" "$OUT/vmlinuz"
K="$R/usr/lib/modules/$KV/kernel"
rm -rf "$K/sound"
find "$K/drivers" -mindepth 1 -maxdepth 1 -type d ! -name virtio ! -name block ! -name char ! -name net -exec rm -rf {} +
find "$K/drivers/net" -mindepth 1 -maxdepth 1 ! -name virtio_net.ko ! -name net_failover.ko -exec rm -rf {} +
find "$K/net" -mindepth 1 -maxdepth 1 -type d ! -name 9p ! -name vmw_vsock ! -name core ! -name ipv4 ! -name ipv6 ! -name netfilter -exec rm -rf {} +
chroot "$R" depmod -a "$KV"
rm -f "$R"/boot/initrd.img-*

# Tiny initramfs: busybox and the virtio/ext4 modules; mount /dev/vda and
# switch_root to systemd.
I="$OUT/initrd.d"; rm -rf "$I"; mkdir -p "$I"/{bin,proc,sys,dev,newroot,mods}
cp "$R/bin/busybox" "$I/bin/"
MODS="virtio virtio_ring virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk crc32c_generic crc16 mbcache jbd2 ext4"
for m in $MODS; do cp "$(find "$K" -name "$m.ko*" | head -1)" "$I/mods/"; done
cat > "$I/init" <<EOF
#!/bin/busybox sh
B=/bin/busybox
\$B mount -t proc proc /proc; \$B mount -t sysfs sys /sys; \$B mount -t devtmpfs dev /dev
for m in $MODS; do \$B insmod /mods/\$m.ko || echo "initrd: insmod \$m failed"; done
i=0; while [ ! -b /dev/vda ] && [ \$i -lt 200 ]; do \$B sleep 0.05; i=\$((i+1)); done
\$B mount -t ext4 -o rw /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; exec \$B sh; }
\$B umount /proc /sys
\$B mount --move /dev /newroot/dev
exec \$B switch_root /newroot /sbin/init
EOF
chmod +x "$I/init"
(cd "$I" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$OUT/initrd.img")
rm -rf "$I"

rm -f "$OUT/rootfs.ext4"
mke2fs -q -t ext4 -d "$R" -L rigroot "$OUT/rootfs.ext4" 1G
rm -rf "$R"
echo "build.sh: built $OUT/vmlinuz $OUT/initrd.img $OUT/rootfs.ext4"
