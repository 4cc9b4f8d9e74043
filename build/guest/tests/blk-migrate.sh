#!/bin/sh
# virtio-blk over vhost-user across a live migration (test/qemu/blk-migrate.test.ts): a pattern goes to /dev/vda
# and stays in guest RAM (/tmp/pat, tmpfs), then the guest keeps reading the disk back (the back-end writes guest
# memory all through the migration: dirty logging must carry it over) until the host writes MIGRATED at 32 MiB,
# after the destination took over. There it checks the RAM copy, the disk, and a fresh write; PASS says how
# many rounds ran before and after.  Knob: vw.migrate_wait=S (default 120) for the marker.
. /lib/vw-lib.sh
DEV=/dev/vda
wait_s=${VW_MIGRATE_WAIT:-120}
vw_wait_for 30 -b "$DEV" || vw_fail "no $DEV after 30s"
dd if=/dev/urandom of=/tmp/pat bs=1M count=4 2>/dev/null || vw_fail "no pattern"
want=$(md5sum </tmp/pat | cut -d' ' -f1)
dd if=/tmp/pat of="$DEV" bs=1M count=4 oflag=direct 2>/dev/null || vw_fail "writing the pattern failed"
echo "VW-MIGRATE-READY md5=$want"
rounds=0
end=$(( $(vw_ms) + wait_s * 1000 ))
while :; do
  got=$(dd if="$DEV" bs=1M count=4 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || vw_fail "round $rounds: disk reads back $got, $want written"
  rounds=$(( rounds + 1 ))
  marker=$(dd if="$DEV" bs=4096 skip=8192 count=1 iflag=direct 2>/dev/null | head -c 8)
  [ "$marker" = "MIGRATED" ] && break
  [ "$(vw_ms)" -lt "$end" ] || vw_fail "no MIGRATED marker after ${wait_s}s ($rounds rounds)"
done
vw_log "marker seen after $rounds rounds"
ram=$(md5sum </tmp/pat | cut -d' ' -f1)
[ "$ram" = "$want" ] || vw_fail "the RAM copy changed across the migration: $ram, $want before"
got=$(dd if="$DEV" bs=1M count=4 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$got" = "$want" ] || vw_fail "after the migration the disk reads back $got, $want written"
dd if=/dev/urandom of=/tmp/pat2 bs=1M count=2 2>/dev/null
want2=$(md5sum </tmp/pat2 | cut -d' ' -f1)
dd if=/tmp/pat2 of="$DEV" bs=1M seek=8 count=2 oflag=direct 2>/dev/null || vw_fail "writing after the migration failed"
got2=$(dd if="$DEV" bs=1M skip=8 count=2 iflag=direct 2>/dev/null | md5sum | cut -d' ' -f1)
[ "$got2" = "$want2" ] || vw_fail "a write after the migration reads back $got2, $want2 written"
vw_pass "rounds=$rounds md5=$want md5_after=$want2"
