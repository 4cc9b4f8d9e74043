#!/bin/sh
# virtio-rng through the hw_random core: the device must become the current
# hwrng and /dev/hwrng must deliver VW_RNG_BYTES (default 1 MiB) of data that
# does not look constant or compressible.
# Kernel command line knobs: vw.rng_bytes=N, vw.rng_wait=SECONDS
. /lib/vw-lib.sh
HW=/sys/class/misc/hw_random
want=${VW_RNG_BYTES:-1048576}
wait_s=${VW_RNG_WAIT:-20}

vw_wait_for "$wait_s" -e "$HW/rng_current" || vw_fail "no $HW/rng_current after ${wait_s}s"
# rng_current reads "none" until a driver registers; wait for virtio_rng.
t0=$(vw_ms)
while :; do
  cur="$(cat "$HW/rng_current" 2>/dev/null)"
  case "$cur" in virtio_rng*) break ;; esac
  [ $(( $(vw_ms) - t0 )) -ge $(( wait_s * 1000 )) ] && vw_fail "rng_current is '$cur', not virtio_rng.* after ${wait_s}s (virtio devices: $(ls /sys/bus/virtio/devices 2>/dev/null | tr '\n' ' '))"
  sleep 0.1
done
avail="$(cat "$HW/rng_available" 2>/dev/null)"
vw_log "rng_current=$cur rng_available=$avail"
case " $avail " in *" $cur "*) ;; *) vw_fail "rng_available '$avail' does not list '$cur'" ;; esac
[ -c /dev/hwrng ] || vw_fail "/dev/hwrng missing"

# Read until `want` bytes are collected: hwrng reads can be short, so count what
# actually arrived rather than trusting bs*count.
out=/tmp/rng.bin
: >"$out"
got=0
start=$(vw_ms)
reads=0
while [ "$got" -lt "$want" ]; do
  left=$(( want - got ))
  dd if=/dev/hwrng bs=65536 count=$(( (left + 65535) / 65536 )) iflag=fullblock 2>/dev/null >>"$out" \
    || vw_fail "read from /dev/hwrng failed after $got bytes"
  reads=$(( reads + 1 ))
  got=$(stat -c %s "$out")
  [ $(( $(vw_ms) - start )) -ge 90000 ] && vw_fail "only $got of $want bytes in 90s"
  [ "$reads" -ge 10000 ] && vw_fail "only $got of $want bytes after $reads reads"
done
ms=$(( $(vw_ms) - start ))
[ "$ms" -gt 0 ] || ms=1
kib_s=$(( got * 1000 / 1024 / ms ))
vw_log "read $got bytes in ${ms}ms (${kib_s} KiB/s, $reads dd runs)"

# Crude randomness checks: gzip must not shrink it below 99%, and it must not be
# one repeated byte (or a repeated short block).
gz=$(gzip -c "$out" | wc -c)
[ $(( gz * 100 )) -gt $(( got * 99 )) ] || vw_fail "data compresses: $got -> $gz bytes"
distinct=$(head -c 4096 "$out" | od -An -v -tx1 | tr -s ' ' '\n' | grep -v '^$' | sort -u | wc -l)
[ "$distinct" -ge 200 ] || vw_fail "only $distinct distinct byte values in the first 4 KiB"
h1=$(head -c 65536 "$out" | md5sum | cut -d' ' -f1)
h2=$(tail -c 65536 "$out" | md5sum | cut -d' ' -f1)
[ "$h1" != "$h2" ] || vw_fail "first and last 64 KiB are identical"
vw_pass "bytes=$got ms=$ms kib_per_s=$kib_s gzip=$gz distinct=$distinct current=$cur"
