#!/bin/sh
# virtio-blk over vhost-user (vhost-wasm blk): /dev/vda must have VW_BLK_QUEUES hardware queues and the
# serial VW_BLK_SERIAL; then, on separate parts of the disk:
#   0 .. 24 MiB   ext4 (host mke2fs when the initramfs has it, else busybox mke2fs: ext2), files written,
#                 md5sum'd, unmounted, checked with e2fsck, remounted and verified; fstrim (discard)
#   24 .. 56 MiB  fio: 4 jobs x 8 MiB, direct random writes verified with crc32c, then timed random I/O
#   60 MiB        1 MiB random pattern written with O_DIRECT; its md5 goes into the PASS line so that the
#                 host can check the image after QEMU exits
# Boot with initrd-fio.img. Kernel command line knobs: vw.blk_queues=N vw.blk_serial=S vw.blk_seconds=S
. /lib/vw-lib.sh
want_q=${VW_BLK_QUEUES:-4}
serial_want=${VW_BLK_SERIAL:-}
secs=${VW_BLK_SECONDS:-4}
DEV=/dev/vda
SYS=/sys/block/vda

vw_wait_for 30 -b "$DEV" || vw_fail "no $DEV after 30s (virtio devices: $(ls /sys/bus/virtio/devices 2>/dev/null | tr '\n' ' '))"
nq=$(ls -d "$SYS"/mq/* 2>/dev/null | wc -l)
[ "$nq" = "$want_q" ] || vw_fail "$DEV has $nq hardware queues, $want_q expected"
sectors=$(cat "$SYS/size")
[ "$sectors" -ge $(( 64 * 2048 )) ] || vw_fail "$DEV has $sectors sectors, 64 MiB expected"
serial=$(cat "$SYS/serial" 2>/dev/null)
[ -z "$serial_want" ] || [ "$serial" = "$serial_want" ] || vw_fail "serial '$serial', '$serial_want' expected"
ro=$(cat "$SYS/ro")
[ "$ro" = 0 ] || vw_fail "$DEV is read-only"
dmax=$(cat "$SYS/queue/discard_max_bytes")
wzmax=$(cat "$SYS/queue/write_zeroes_max_bytes")
cache=$(cat "$SYS/queue/write_cache")
vw_log "queues=$nq sectors=$sectors serial=$serial discard_max=$dmax write_zeroes_max=$wzmax write_cache='$cache'" \
  "max_segments=$(cat $SYS/queue/max_segments) max_hw_kb=$(cat $SYS/queue/max_hw_sectors_kb) phys=$(cat $SYS/queue/physical_block_size)"
[ "$dmax" -gt 0 ] || vw_fail "no discard support on $DEV"

# ---- file system ----
MKFS=""
if [ -x /usr/bin/mke2fs ]; then MKFS="/usr/bin/mke2fs -q -F -t ext4"; FST=ext4
else MKFS="mke2fs -F"; FST=ext2; fi
t0=$(vw_ms)
$MKFS "$DEV" 24M >/tmp/mkfs.out 2>&1 || { cat /tmp/mkfs.out; vw_fail "mkfs ($MKFS) failed"; }
mkfs_ms=$(( $(vw_ms) - t0 ))
mkdir -p /mnt/d
mount -t "$FST" "$DEV" /mnt/d || mount -t ext4 "$DEV" /mnt/d || vw_fail "mount -t $FST $DEV failed: $(dmesg | tail -5)"
i=0
while [ $i -lt 6 ]; do
  dd if=/dev/urandom of=/mnt/d/f$i bs=64k count=$(( (i + 1) * 4 )) 2>/dev/null || vw_fail "writing /mnt/d/f$i failed"
  i=$(( i + 1 ))
done
mkdir -p /mnt/d/dir && cp /mnt/d/f1 /mnt/d/dir/copy
(cd /mnt/d && md5sum f0 f1 f2 f3 f4 f5 dir/copy) >/tmp/sums || vw_fail "md5sum failed"
sync
umount /mnt/d || vw_fail "umount failed"
echo 3 >/proc/sys/vm/drop_caches
if [ -x /usr/bin/e2fsck ]; then
  /usr/bin/e2fsck -f -n "$DEV" >/tmp/fsck.out 2>&1 || { cat /tmp/fsck.out; vw_fail "e2fsck found problems"; }
fi
mount -t "$FST" "$DEV" /mnt/d || mount -t ext4 "$DEV" /mnt/d || vw_fail "remount failed"
(cd /mnt/d && md5sum -c /tmp/sums) >/tmp/check.out 2>&1 || { cat /tmp/check.out; vw_fail "files differ after remount"; }
rm /mnt/d/f4 /mnt/d/f5
trim=""
if command -v fstrim >/dev/null; then
  trim=$(fstrim -v /mnt/d 2>&1) || vw_fail "fstrim failed: $trim"
fi
umount /mnt/d || vw_fail "second umount failed"
vw_log "fs=$FST mkfs_ms=$mkfs_ms files verified after remount; fstrim: $trim"

# ---- cache mode: writethrough and back (SET_CONFIG to the back-end through QEMU) ----
if [ -w "$SYS/cache_type" ]; then
  echo "write through" >"$SYS/cache_type" || vw_fail "cannot set write through"
  ct=$(cat "$SYS/cache_type")
  [ "$ct" = "write through" ] || vw_fail "cache_type is '$ct' after setting write through"
  dd if=/dev/urandom of=/tmp/wt bs=4k count=16 2>/dev/null
  dd if=/tmp/wt of="$DEV" bs=4k seek=$(( 58 * 256 )) oflag=direct 2>/dev/null || vw_fail "writethrough write failed"
  echo "write back" >"$SYS/cache_type" || vw_fail "cannot set write back"
  back=$(dd if="$DEV" bs=4k skip=$(( 58 * 256 )) count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
  [ "$back" = "$(md5sum /tmp/wt | cut -d' ' -f1)" ] || vw_fail "writethrough data read back differently"
  vw_log "cache_type: write through (SET_CONFIG accepted), 64 KiB written and read back, write back again"
else
  vw_log "cache_type not writable: writeback switching not tried"
fi

# ---- fio: 4 jobs on separate 8 MiB regions, verified ----
command -v fio >/dev/null || vw_fail "fio not in this initramfs (boot initrd-fio.img)"
COMMON="--filename=$DEV --direct=1 --ioengine=libaio --bs=4k --size=8M --offset=24M --offset_increment=8M --numjobs=4 --group_reporting"
fio --name=verify $COMMON --iodepth=16 --rw=randwrite --verify=crc32c --do_verify=1 --verify_fatal=1 \
    --output-format=terse --terse-version=3 >/tmp/fio.out 2>&1 || { cat /tmp/fio.out; vw_fail "fio verify job failed"; }
grep -qi 'verify:' /tmp/fio.out && { cat /tmp/fio.out; vw_fail "fio reported a verify problem"; }
fio --name=rr $COMMON --iodepth=32 --rw=randread --time_based --runtime="$secs" \
    --output-format=terse --terse-version=3 >/tmp/fio-rr.out 2>&1 || { cat /tmp/fio-rr.out; vw_fail "fio randread failed"; }
fio --name=rw $COMMON --iodepth=32 --rw=randwrite --time_based --runtime="$secs" \
    --output-format=terse --terse-version=3 >/tmp/fio-rw.out 2>&1 || { cat /tmp/fio-rw.out; vw_fail "fio randwrite failed"; }
rr_iops=$(grep '^3;' /tmp/fio-rr.out | awk -F';' '{print $8}' | cut -d. -f1)
rw_iops=$(grep '^3;' /tmp/fio-rw.out | awk -F';' '{print $49}' | cut -d. -f1)
vw_log "fio verify ok; randread ${rr_iops} IOPS, randwrite ${rw_iops} IOPS (4k, 4 jobs, iodepth 32, ${secs}s each)"

# ---- a pattern for the host to check ----
dd if=/dev/urandom of=/tmp/pat bs=64k count=16 2>/dev/null
pmd5=$(md5sum /tmp/pat | cut -d' ' -f1)
dd if=/tmp/pat of="$DEV" bs=64k seek=$(( 60 * 16 )) oflag=direct conv=fsync 2>/dev/null || vw_fail "pattern write failed"
sync
echo 3 >/proc/sys/vm/drop_caches
back=$(dd if="$DEV" bs=64k skip=$(( 60 * 16 )) count=16 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$back" = "$pmd5" ] || vw_fail "pattern read back as $back, wrote $pmd5"
vw_pass "queues=$nq serial=$serial fs=$FST fio=verified randread_iops=$rr_iops randwrite_iops=$rw_iops pattern_md5=$pmd5 pattern_off=62914560 pattern_len=1048576"
