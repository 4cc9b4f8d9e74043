#!/bin/sh
# virtio-blk over vhost-user while the host kills and restarts the back-end (test/qemu/blk-reconnect.test.ts).
# Rounds of fio, each one a write phase then a verify phase: 4 jobs on separate 8 MiB regions of /dev/vda
# (0 .. 32 MiB), direct random writes checked with crc32c, 4, 16 or 64 KiB by round. A write that got lost leaves
# a block of an earlier round behind, with a valid header and checksum of its own: fio's verify of a write-only job
# does not compare the header's seed, but with one block size per job it compares the write's sequence number
# (numberio), which differs in a round with another seed; a block of another size fails the header's length.
# The guest's I/O just stalls while the back-end is down (QEMU reconnects when it is back); no request may fail.
# Between rounds the guest looks at 60 MiB for the host's "VW-HOST-DONE" (the host writes it into the image file
# after its last kill), then stops; vw.blk_max_rounds ends it anyway.
# With vw.blk_cache=wt the guest switches the disk to write-through first: the back-end then writes with
# RWF_DSYNC, requests stay in flight for a while, and a kill is likely to find some in the back-end's hands.
# Kernel command line knobs: vw.blk_queues=N vw.blk_max_rounds=N vw.blk_cache=wt|wb
. /lib/vw-lib.sh
want_q=${VW_BLK_QUEUES:-4}
max_rounds=${VW_BLK_MAX_ROUNDS:-60}
DEV=/dev/vda
SYS=/sys/block/vda
MARK_BLOCK=$(( 60 * 256 )) # 4 KiB blocks: 60 MiB

vw_wait_for 30 -b "$DEV" || vw_fail "no $DEV after 30s"
nq=$(ls -d "$SYS"/mq/* 2>/dev/null | wc -l)
[ "$nq" = "$want_q" ] || vw_fail "$DEV has $nq hardware queues, $want_q expected"
command -v fio >/dev/null || vw_fail "fio not in this initramfs (boot initrd-fio.img)"
if [ "${VW_BLK_CACHE:-wb}" = wt ]; then
  echo "write through" >"$SYS/cache_type" || vw_fail "cannot set write through"
fi
vw_log "queues=$nq cache_type='$(cat $SYS/cache_type)' io_timeout=$(cat $SYS/queue/io_timeout 2>/dev/null)ms"

host_done() {
  [ "$(dd if=$DEV bs=4096 skip=$MARK_BLOCK count=1 iflag=direct 2>/dev/null | head -c 12)" = "VW-HOST-DONE" ]
}

round=0
t_all=$(vw_ms)
while :; do
  round=$(( round + 1 ))
  t0=$(vw_ms)
  case $(( round % 3 )) in 1) bs=4k ;; 2) bs=16k ;; *) bs=64k ;; esac
  vw_log "round $round start (bs $bs)"
  fio --name=rc --filename=$DEV --direct=1 --ioengine=libaio --bs=$bs --iodepth=16 \
      --numjobs=4 --size=8M --offset=0 --offset_increment=8M --rw=randwrite --randseed=$round \
      --verify=crc32c --do_verify=1 --verify_fatal=1 --group_reporting \
      --output-format=terse --terse-version=3 >/tmp/fio.out 2>&1 || { cat /tmp/fio.out; vw_fail "round $round: fio failed"; }
  if grep -qiE 'verify:|bad (magic|header)|crc32c' /tmp/fio.out; then cat /tmp/fio.out; vw_fail "round $round: fio reported a verify problem"; fi
  err=$(awk -F';' '$1 == 3 { print $5 }' /tmp/fio.out)
  [ "$err" = 0 ] || { cat /tmp/fio.out; vw_fail "round $round: fio error '$err'"; }
  dmesg | grep -qiE 'blk_update_request|I/O error|virtio_blk.*(error|fail)' && { dmesg | tail -20; vw_fail "round $round: the kernel logged I/O errors"; }
  vw_log "round $round verified in $(( $(vw_ms) - t0 )) ms"
  if host_done; then break; fi
  [ "$round" -ge "$max_rounds" ] && vw_fail "the host never said it was done ($round rounds)"
done
vw_pass "rounds=$round verified=$round queues=$nq ms=$(( $(vw_ms) - t_all ))"
