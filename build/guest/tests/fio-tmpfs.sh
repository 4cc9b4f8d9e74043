#!/bin/sh
# The host's fio runs inside the guest (boot with initrd-fio.img): a small
# verified random read/write job on a tmpfs file.
. /lib/vw-lib.sh
command -v fio >/dev/null || vw_fail "fio not in this initramfs (boot initrd-fio.img)"
ver="$(fio --version 2>&1)" || vw_fail "fio --version failed: $ver"
vw_log "$ver"
fio --name=vw --filename=/tmp/fio.dat --size=8M --bs=4k --rw=randwrite --ioengine=psync \
    --verify=crc32c --do_verify=1 --output-format=terse --terse-version=3 >/tmp/fio.out 2>&1 \
  || { cat /tmp/fio.out; vw_fail "fio job failed"; }
grep -qi 'verify' /tmp/fio.out && { cat /tmp/fio.out; vw_fail "fio reported a verify problem"; }
vw_pass "fio=$ver"
