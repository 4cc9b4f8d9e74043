#!/bin/sh
# ivshmem-doorbell through vfio-pci (the guest has a virtual IOMMU: -device intel-iommu, intel_iommu=on):
# /usr/bin/vw-ivshmem maps the device's BARs through vfio and takes its MSI-X vectors as eventfds.
# Kernel command line knobs:
#   vw.ivshmem_role=recv|send|recv-send   recv: publish "ready" in the mailbox slot, wait for the doorbell's
#                                         interrupt, report the message; send: wait for "ready", leave the
#                                         message, ring the receiver; recv-send: recv on slot, then send on slot+1
#   vw.ivshmem_slot=N  vw.ivshmem_vector=V  vw.ivshmem_text=T (no spaces)  vw.ivshmem_wait=SECONDS
. /lib/vw-lib.sh
role=${VW_IVSHMEM_ROLE:-recv}
slot=${VW_IVSHMEM_SLOT:-0}
vector=${VW_IVSHMEM_VECTOR:-0}
text=${VW_IVSHMEM_TEXT:-hello}
wait_s=${VW_IVSHMEM_WAIT:-60}

command -v vw-ivshmem >/dev/null || vw_fail "vw-ivshmem helper missing from the initramfs (no static gcc at build time?)"
modprobe vfio_iommu_type1 allow_unsafe_interrupts=1 || vw_fail "modprobe vfio_iommu_type1 failed"
modprobe vfio-pci || vw_fail "modprobe vfio-pci failed"

dev=""
for d in /sys/bus/pci/devices/*; do
  [ "$(cat "$d/vendor")" = 0x1af4 ] && [ "$(cat "$d/device")" = 0x1110 ] && dev="$d"
done
[ -n "$dev" ] || vw_fail "no ivshmem device (1af4:1110) on the PCI bus"
bdf="$(basename "$dev")"
[ -e "$dev/iommu_group" ] || vw_fail "$bdf has no IOMMU group (is intel_iommu=on and -device intel-iommu given?)"
group="$(basename "$(readlink "$dev/iommu_group")")"
echo vfio-pci >"$dev/driver_override"
echo "$bdf" >/sys/bus/pci/drivers_probe 2>/dev/null
vw_wait_for 10 -c "/dev/vfio/$group" || vw_fail "/dev/vfio/$group did not appear (driver: $(basename "$(readlink "$dev/driver" 2>/dev/null)"))"
vw_log "ivshmem at $bdf, iommu group $group, driver $(basename "$(readlink "$dev/driver")")"

# each sets $result to the helper's result fields, or fails the test
recv() { # slot
  vw-ivshmem "$group" "$bdf" recv "$1" "$wait_s" >/tmp/ivs.out 2>&1; rc=$?
  cat /tmp/ivs.out
  [ $rc = 0 ] || vw_fail "recv: $(tail -1 /tmp/ivs.out)"
  result="$(grep '^vw-ivshmem: received' /tmp/ivs.out | sed 's/^vw-ivshmem: received //')"
  [ -n "$result" ] || vw_fail "recv: no message line"
}
send() { # slot
  vw-ivshmem "$group" "$bdf" send "$1" "$vector" "$text" "$wait_s" >/tmp/ivs.out 2>&1; rc=$?
  cat /tmp/ivs.out
  [ $rc = 0 ] || vw_fail "send: $(tail -1 /tmp/ivs.out)"
  result="$(grep '^vw-ivshmem: sent' /tmp/ivs.out | sed 's/^vw-ivshmem: sent //')"
}

case "$role" in
  recv) recv "$slot"; vw_pass "$result" ;;
  send) send "$slot"; vw_pass "$result" ;;
  recv-send)
    recv "$slot"; got="$result"
    send $((slot + 1)); vw_pass "$got $(echo "$result" | sed 's/\([a-z]*\)=/sent_\1=/g')" ;;
  *) vw_fail "unknown vw.ivshmem_role=$role" ;;
esac
