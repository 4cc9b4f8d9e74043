#!/bin/sh
# Boots, prints the kernel release, passes.
. /lib/vw-lib.sh
kver="$(uname -r)"
vw_log "uname -r: $kver"
vw_log "cpus: $(nproc), mem: $(awk '/MemTotal/ {print $2 $3}' /proc/meminfo)"
vw_log "virtio devices: $(ls /sys/bus/virtio/devices 2>/dev/null | tr '\n' ' ')"
[ -n "$kver" ] || vw_fail "uname -r printed nothing"
vw_pass "kernel=$kver uptime_ms=$(vw_ms)"
