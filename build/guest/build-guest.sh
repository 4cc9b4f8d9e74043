#!/usr/bin/env bash
# Build a tiny Linux guest for QEMU-based tests: Debian's kernel (bookworm) and a
# busybox-static initramfs whose /init runs one test script chosen on the kernel
# command line (vw.test=NAME runs /tests/NAME.sh) and prints markers on the
# serial console:
#   VW-BEGIN NAME
#   VW-PASS NAME key=value ...      or      VW-FAIL NAME reason
# then powers the VM off.
#
# Outputs (build/guest/out/, gitignored):
#   vmlinux         uncompressed kernel (ELF with a PVH entry; boots faster under TCG)
#   vmlinuz         Debian's bzImage
#   initrd.gz       busybox + modules + /init + /tests + /lib/vw-lib.sh
#   initrd-fio.img  initrd.gz followed by an uncompressed cpio layer holding the host's
#                   fio and its libraries (only when fio is included, see VW_GUEST_FIO)
#   kernel-version  e.g. 6.1.0-56-amd64
#   kernel-package  Debian package name and version the kernel came from
#
# Idempotent: a stamp over every input makes a second run a no-op (well under a
# second); the kernel .deb and its extracted tree are cached outside the work tree.
#
# Environment:
#   VW_GUEST_OUT          output dir (default: build/guest/out next to this script)
#   VW_GUEST_CACHE        download/extract cache (default: ~/.cache/vhost-wasm/guest)
#   VW_GUEST_KERNEL_PKG   kernel package to use (default: what linux-image-amd64 depends on)
#   VW_GUEST_FIO          auto (default: build initrd-fio.img if fio is installed) | 1 (require) | 0 (never)
#   VW_GUEST_EXTRA_BINS   space-separated host binaries to copy into initrd.gz (/usr/bin) with their libraries
#   VW_GUEST_FORCE=1      rebuild even when the stamp matches
#   VW_GUEST_COMPRESS     gzip level for initrd.gz (default 6)
#
# Guest helpers: each build/guest/helpers/NAME.c is compiled with `gcc -static` into /usr/bin/NAME (skipped,
# with a note, when no static C toolchain is installed; the tests that need one then fail with a clear reason).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SCRIPT="$HERE/$(basename "${BASH_SOURCE[0]}")"
TESTS_DIR="$HERE/tests"
OUT="${VW_GUEST_OUT:-$HERE/out}"
CACHE="${VW_GUEST_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/vhost-wasm/guest}"
FIO_MODE="${VW_GUEST_FIO:-auto}"
EXTRA_BINS="${VW_GUEST_EXTRA_BINS:-}"
GZIP_LEVEL="${VW_GUEST_COMPRESS:-6}"
export PATH="$PATH:/usr/sbin:/sbin"
export LC_ALL=C

# Modules that /init loads at boot (with their dependencies). Device drivers only:
# they bind to whatever virtio devices the VM has; without a device they are idle.
BOOT_MODULES=(virtio_pci virtio_rng virtio_blk virtio_net virtio_console)
# Present in the initramfs (modprobe-able, and the kernel's own request_module
# finds them, e.g. `mount -t ext4` loads ext4) but not loaded at boot unless a
# test asks (vw.modules=a,b on the command line, or `modprobe NAME` in the test).
EXTRA_MODULES=(ext4 virtio_scsi sd_mod virtiofs vmw_vsock_virtio_transport virtio_input virtio_balloon
               vfio_pci vfio_iommu_type1)
# rng_core (hw_random) is checked too: built into Debian's kernel, a module elsewhere.
CHECK_MODULES=(rng_core)

log() { printf '[build-guest] %s\n' "$*" >&2; }
die() { printf '[build-guest] ERROR: %s\n' "$*" >&2; exit 1; }
T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1fs", b-a}'; }

for tool in apt-get apt-cache dpkg-deb modprobe depmod cpio gzip xz od ldd flock sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || die "missing tool '$tool' (apt-get install kmod cpio xz-utils busybox-static ...)"
done

mkdir -p "$OUT" "$CACHE/debs"
# One build at a time per output dir (test files may call this in parallel), and one
# user of the shared cache at a time (several checkouts may share it). Same order always.
exec 9>"$OUT/.lock"
flock 9
exec 8>"$CACHE/.lock"
flock 8

as_root_apt_update_once() {
  if [[ "${_APT_UPDATED:-0}" == 1 ]]; then return 1; fi
  _APT_UPDATED=1
  if [[ $EUID -eq 0 ]]; then
    log "refreshing apt lists (apt-get update)"
    apt-get update -qq >&2 || return 1
    return 0
  fi
  return 1
}

# ---------------------------------------------------------------- kernel package
resolve_kernel_pkg() {
  if [[ -n "${VW_GUEST_KERNEL_PKG:-}" ]]; then echo "$VW_GUEST_KERNEL_PKG"; return; fi
  local p
  p="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1=="Depends:" && $2 ~ /^linux-image-/ {print $2; exit}')" || true
  if [[ -z "$p" ]] && as_root_apt_update_once; then
    p="$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1=="Depends:" && $2 ~ /^linux-image-/ {print $2; exit}')" || true
  fi
  if [[ -z "$p" ]]; then
    # Offline fallback: newest kernel package already in the cache.
    p="$(cd "$CACHE/debs" && ls linux-image-*-amd64_*.deb 2>/dev/null | sed 's/_.*//' | sort -V | tail -1)" || true
    [[ -n "$p" ]] && log "apt lists unusable; using cached $p"
  fi
  [[ -n "$p" ]] || die "cannot resolve the kernel package (apt-cache depends linux-image-amd64 gave nothing; run apt-get update)"
  echo "$p"
}

KPKG="$(resolve_kernel_pkg)"
find_cached_deb() { (cd "$CACHE/debs" && ls "${KPKG}"_*_amd64.deb 2>/dev/null | sort -V | tail -1) || true; }
DEB="$(find_cached_deb)"
if [[ -z "$DEB" ]]; then
  log "downloading $KPKG"
  dl() {
    local sandbox=()
    [[ $EUID -eq 0 ]] && sandbox=(-o APT::Sandbox::User=root)
    (cd "$CACHE/debs" && apt-get -q "${sandbox[@]}" download "$KPKG" >&2)
  }
  if dl || { as_root_apt_update_once && dl; }; then
    DEB="$(find_cached_deb)"
    [[ -n "$DEB" ]] || die "downloaded $KPKG but found no .deb in $CACHE/debs"
  else
    # Mirror unreachable: an older cached kernel is better than no guest.
    DEB="$(cd "$CACHE/debs" && ls linux-image-*-amd64_*.deb 2>/dev/null | sort -V | tail -1)" || true
    [[ -n "$DEB" ]] || die "apt-get download $KPKG failed and no kernel is cached in $CACHE/debs"
    log "warning: apt-get download $KPKG failed; using cached $DEB"
    KPKG="${DEB%%_*}"
  fi
fi
DEB_PATH="$CACHE/debs/$DEB"

# Extract once per .deb (the full tree: depmod needs all modules to resolve deps).
KROOT="$CACHE/root/${DEB%.deb}"
if [[ ! -f "$KROOT/.extracted" ]]; then
  log "extracting $DEB"
  rm -rf "$KROOT"; mkdir -p "$KROOT"
  dpkg-deb -x "$DEB_PATH" "$KROOT"
  touch "$KROOT/.extracted"
  # Keep one kernel in the cache: drop older extracted trees and .debs.
  for old in "$CACHE"/root/*/ "$CACHE"/debs/linux-image-*.deb; do
    [[ -e "$old" ]] || continue
    [[ "${old%/}" == "$KROOT" || "$old" == "$DEB_PATH" ]] && continue
    log "pruning old cache entry $(basename "$old")"
    rm -rf "${old%/}"
  done
fi
KVER="$(cd "$KROOT/lib/modules" && ls -d */ | head -1 | tr -d /)"
[[ -n "$KVER" && -f "$KROOT/boot/vmlinuz-$KVER" ]] || die "no vmlinuz-$KVER in $DEB"
if [[ ! -f "$KROOT/lib/modules/$KVER/modules.dep" ]]; then
  depmod -b "$KROOT" "$KVER"
fi
KPKG_VERSION="$(dpkg-deb -f "$DEB_PATH" Version)"

# ---------------------------------------------------------------- vmlinux extraction
# bzImage layout: setup_sects at 0x1f1 (0 means 4); the protected-mode part starts at
# (setup_sects+1)*512; payload_offset (0x248) and payload_length (0x24c) locate the
# compressed kernel inside it; its last 4 bytes are the uncompressed size (le32).
# Fallback: scan for the xz magic like scripts/extract-vmlinux does.
le() { od -An -t "u$2" -j "$1" -N "$2" "$3" | tr -d ' \n'; }
is_elf() { [[ "$(od -An -tx1 -N4 "$1" | tr -d ' \n')" == "7f454c46" ]]; }
decompress_by_magic() { # $1 = file with the compressed stream at offset 0, stdout = data
  local magic; magic="$(od -An -tx1 -N6 "$1" | tr -d ' \n')"
  case "$magic" in
    fd377a585a00*) xz -dc "$1" ;;
    1f8b*) gzip -dc "$1" ;;
    28b52ffd*) command -v zstd >/dev/null || return 1; zstd -dcq "$1" ;;
    5d0000*) xz -dc --format=lzma "$1" ;;
    *) return 1 ;;
  esac
}
extract_vmlinux() { # $1 = bzImage, $2 = destination
  local img="$1" dst="$2" tmp="$2.tmp" pay="$2.payload"
  local ss po pl start usz
  ss="$(le $((0x1f1)) 1 "$img")"; [[ "$ss" == 0 ]] && ss=4
  po="$(le $((0x248)) 4 "$img")"; pl="$(le $((0x24c)) 4 "$img")"
  start=$(( (ss + 1) * 512 + po ))
  if [[ "$(od -An -c -j $((0x202)) -N4 "$img" | tr -d ' \n')" == "HdrS" && "$pl" -gt 4 ]]; then
    tail -c +"$((start + 1))" "$img" | head -c "$((pl - 4))" >"$pay"
    usz="$(tail -c +"$((start + 1))" "$img" | head -c "$pl" | tail -c 4 | od -An -tu4 | tr -d ' \n')"
    if decompress_by_magic "$pay" >"$tmp" 2>/dev/null && is_elf "$tmp" \
       && [[ "$(stat -c %s "$tmp")" == "$usz" ]]; then
      rm -f "$pay"; mv -f "$tmp" "$dst"; return 0
    fi
    log "header-based extraction failed; scanning for an xz stream"
  fi
  local off
  for off in $(grep -obUaP '\xfd7zXZ\x00' "$img" | cut -d: -f1); do
    tail -c +"$((off + 1))" "$img" | xz -dc >"$tmp" 2>/dev/null || true
    if [[ -s "$tmp" ]] && is_elf "$tmp"; then rm -f "$pay"; mv -f "$tmp" "$dst"; return 0; fi
  done
  rm -f "$tmp" "$pay"
  return 1
}

# ---------------------------------------------------------------- stamp
FIO_BIN=""
case "$FIO_MODE" in
  0|no|false) ;;
  1|yes|true) FIO_BIN="$(command -v fio || true)"; [[ -n "$FIO_BIN" ]] || die "VW_GUEST_FIO=1 but fio is not installed" ;;
  auto|"") FIO_BIN="$(command -v fio || true)" ;;
  *) die "VW_GUEST_FIO must be auto, 1 or 0 (got '$FIO_MODE')" ;;
esac
BUSYBOX="$(command -v busybox || true)"
[[ -n "$BUSYBOX" ]] || die "busybox not found (apt-get install busybox-static)"
BUSYBOX="$(readlink -f "$BUSYBOX")"
[[ -n "$FIO_BIN" ]] && FIO_BIN="$(readlink -f "$FIO_BIN")"
COPY_BINS=()
for b in $EXTRA_BINS; do
  p="$(command -v "$b" || true)"; [[ -n "$p" ]] || die "VW_GUEST_EXTRA_BINS: '$b' not found"
  COPY_BINS+=("$(readlink -f "$p")")
done

stamp_inputs() {
  echo "deb=$DEB kver=$KVER gzip=$GZIP_LEVEL"
  echo "boot=${BOOT_MODULES[*]} extra=${EXTRA_MODULES[*]}"
  sha256sum "$SCRIPT" "$BUSYBOX"
  (cd "$TESTS_DIR" && find . -type f | sort | xargs -r sha256sum)
  [[ -d "$HERE/helpers" ]] && (cd "$HERE/helpers" && find . -type f | sort | xargs -r sha256sum)
  command -v gcc >/dev/null 2>&1 && gcc --version | head -1
  local b
  for b in "${COPY_BINS[@]}" $FIO_BIN; do sha256sum "$b"; ldd "$b" 2>/dev/null | sed 's/ (0x[0-9a-f]*)//' || true; done
}
STAMP="$(stamp_inputs | sha256sum | cut -d' ' -f1)"
if [[ "${VW_GUEST_FORCE:-0}" != 1 && -f "$OUT/.stamp" && "$(cat "$OUT/.stamp")" == "$STAMP" \
      && -s "$OUT/vmlinux" && -s "$OUT/vmlinuz" && -s "$OUT/initrd.gz" && -s "$OUT/kernel-version" \
      && ( -z "$FIO_BIN" || -s "$OUT/initrd-fio.img" ) ]]; then
  log "up to date ($KVER, $(elapsed))"
  exit 0
fi
rm -f "$OUT/.stamp"

# ---------------------------------------------------------------- kernel images
if [[ ! -s "$KROOT/vmlinux" ]]; then
  log "extracting vmlinux from vmlinuz-$KVER"
  extract_vmlinux "$KROOT/boot/vmlinuz-$KVER" "$KROOT/vmlinux" || die "could not extract vmlinux from vmlinuz-$KVER"
fi
cp -f "$KROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz.tmp" && mv -f "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
cp -f "$KROOT/vmlinux" "$OUT/vmlinux.tmp" && mv -f "$OUT/vmlinux.tmp" "$OUT/vmlinux"

# ---------------------------------------------------------------- initramfs tree
STAGE="$(mktemp -d "$OUT/.stage.XXXXXX")"
FSTAGE=""
trap 'rm -rf "$STAGE" ${FSTAGE:+"$FSTAGE"} "$OUT/initrd.gz.tmp" "$OUT/initrd-fio.img.tmp"' EXIT
mkdir -p "$STAGE"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,root,etc,lib,tests,mnt}
chmod 1777 "$STAGE/tmp"

# busybox with its applet links
cp "$BUSYBOX" "$STAGE/bin/busybox"
bb_ldd="$(ldd "$BUSYBOX" 2>&1 || true)"
if [[ "$bb_ldd" != *"not a dynamic executable"* && "$bb_ldd" != *"statically linked"* ]]; then
  log "warning: $BUSYBOX is dynamically linked (install busybox-static); copying its libraries"
  COPY_BINS+=("$BUSYBOX")
fi
while read -r applet; do
  [[ -z "$applet" || "$applet" == bin/busybox ]] && continue
  mkdir -p "$STAGE/$(dirname "$applet")"
  ln -sf /bin/busybox "$STAGE/$applet"
done < <("$BUSYBOX" --list-full)
[[ -e "$STAGE/bin/sh" ]] || ln -sf /bin/busybox "$STAGE/bin/sh"

# /dev/console and /dev/null so the kernel can give /init a console before devtmpfs.
if [[ $EUID -eq 0 ]]; then
  mknod -m 600 "$STAGE/dev/console" c 5 1
  mknod -m 666 "$STAGE/dev/null" c 1 3
fi

# kernel modules and their dependencies
MODDIR="lib/modules/$KVER"
mkdir -p "$STAGE/$MODDIR"
declare -A SEEN=()
collect_module() { # $1 = module name, $2 = list file for the load order (or "")
  local m="$1" list="$2" out line path rel
  out="$(modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>&1)" || return 1
  while read -r line; do
    case "$line" in
      builtin\ *) ;;
      insmod\ *)
        path="$(awk '{print $2}' <<<"$line")"
        rel="${path#"$KROOT"/}"
        if [[ -z "${SEEN[$rel]:-}" ]]; then
          SEEN[$rel]=1
          mkdir -p "$STAGE/$(dirname "$rel")"
          cp "$path" "$STAGE/$rel"
        fi
        if [[ -n "$list" ]] && ! grep -qxF "/$rel" "$list" 2>/dev/null; then echo "/$rel" >>"$list"; fi ;;
      *) log "modprobe --show-depends $m: $line" ;;
    esac
  done <<<"$out"
}
mkdir -p "$STAGE/etc/vw"
: >"$STAGE/etc/vw/boot-modules"
for m in "${BOOT_MODULES[@]}"; do
  collect_module "$m" "$STAGE/etc/vw/boot-modules" || die "required module $m not found in $KVER"
done
for m in "${EXTRA_MODULES[@]}"; do
  collect_module "$m" "" || log "note: optional module $m not in $KVER"
done
for m in "${CHECK_MODULES[@]}"; do
  if modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>/dev/null | grep -q '^builtin'; then :; else
    collect_module "$m" "$STAGE/etc/vw/boot-modules" || die "module $m is neither built in nor available"
  fi
done
for f in modules.order modules.builtin modules.builtin.modinfo; do
  [[ -f "$KROOT/$MODDIR/$f" ]] && cp "$KROOT/$MODDIR/$f" "$STAGE/$MODDIR/"
done
depmod -b "$STAGE" "$KVER"
echo "$KVER" >"$STAGE/etc/vw/kernel-version"

# host binaries with their shared libraries and the dynamic loader. No ld.so.cache
# is needed: Debian's loader searches the multiarch dirs by default, and libraries
# elsewhere (ceph's) are found through their RUNPATH.
copy_with_libs() { # $1 = stage root, $2 = binary
  local root="$1" bin="$2" lib
  mkdir -p "$root/usr/bin"
  cp -L "$bin" "$root/usr/bin/$(basename "$bin")"
  while read -r lib; do
    [[ -z "$lib" || -e "$root$lib" ]] && continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done < <(ldd "$bin" 2>/dev/null | awk '$2=="=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
}
for b in "${COPY_BINS[@]}"; do
  if [[ "$b" == "$BUSYBOX" ]]; then
    copy_with_libs "$STAGE" "$b"; rm -f "$STAGE/usr/bin/$(basename "$b")"
  else
    copy_with_libs "$STAGE" "$b"
  fi
done

# fio goes into a second cpio layer (about 85 MB with its libraries). The kernel
# unpacks concatenated archives in order, so initrd-fio.img = initrd.gz + this layer,
# left uncompressed: gunzip of 85 MB under TCG costs ~5 s per boot, loading it raw ~1 s.
FSTAGE=""
if [[ -n "$FIO_BIN" ]]; then
  FSTAGE="$(mktemp -d "$OUT/.stage-fio.XXXXXX")"
  copy_with_libs "$FSTAGE" "$FIO_BIN"
  mkdir -p "$FSTAGE/etc/vw"; echo yes >"$FSTAGE/etc/vw/has-fio"
  if [[ $EUID -eq 0 ]] && command -v chroot >/dev/null; then
    chroot "$FSTAGE" /usr/bin/fio --version >/dev/null 2>&1 || die "fio copied into the initramfs layer does not run (chroot check)"
  fi
fi

# small static C helpers for guest tests (e.g. vw-ivshmem: ivshmem-doorbell through vfio-pci)
for src in "$HERE"/helpers/*.c; do
  [[ -e "$src" ]] || continue
  name="$(basename "$src" .c)"
  if command -v gcc >/dev/null 2>&1 && gcc -static -O2 -Wall -o "$STAGE/usr/bin/$name" "$src" 2>"$STAGE/.gcc.log"; then
    strip "$STAGE/usr/bin/$name" 2>/dev/null || true
  else
    log "note: could not build helper $name (gcc -static with libc6-dev needed): $(tail -3 "$STAGE/.gcc.log" 2>/dev/null)"
    rm -f "$STAGE/usr/bin/$name"
  fi
  rm -f "$STAGE/.gcc.log"
done

# test scripts and the helper library
cp "$TESTS_DIR"/*.sh "$STAGE/tests/"
chmod 755 "$STAGE"/tests/*.sh

cat >"$STAGE/lib/vw-lib.sh" <<'EOF'
# Helpers for guest test scripts: `. /lib/vw-lib.sh`
VW_TEST="${VW_TEST:-unknown}"
vw_log()  { echo "[vw $VW_TEST] $*"; }
vw_pass() { echo; echo "VW-PASS $VW_TEST $*"; : >/tmp/.vw-marker; exit 0; }
vw_fail() { echo; echo "VW-FAIL $VW_TEST $*"; : >/tmp/.vw-marker; exit 1; }
# uptime in milliseconds (centisecond resolution)
vw_ms()   { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
# vw_wait_for TEST_EXPR_ARGS... : e.g. vw_wait_for 20 -e /dev/vda  (seconds, then a `test` expression)
vw_wait_for() {
  local limit_ms=$(( $1 * 1000 )); shift
  local start; start=$(vw_ms)
  while ! test "$@"; do
    [ $(( $(vw_ms) - start )) -ge "$limit_ms" ] && return 1
    sleep 0.1
  done
  return 0
}
EOF

cat >"$STAGE/init" <<'EOF'
#!/bin/sh
# vhost-wasm test guest init
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /dev/shm 2>/dev/null
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1
hostname vw-guest

VW_TEST=""; VW_TIMEOUT=""; VW_MODULES=""
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vw.test=*) VW_TEST="${arg#vw.test=}" ;;
    vw.timeout=*) VW_TIMEOUT="${arg#vw.timeout=}" ;;
    vw.modules=*) VW_MODULES="${arg#vw.modules=}" ;;
    vw.*=*) # vw.foo_bar=v -> VW_FOO_BAR=v for the test script
      k="${arg%%=*}"; k="VW_$(echo "${k#vw.}" | tr 'a-z.-' 'A-Z__')"
      export "$k=${arg#*=}" ;;
  esac
done
export VW_TEST

while read -r ko; do
  [ -n "$ko" ] || continue
  out="$(insmod "$ko" 2>&1)" || case "$out" in *"File exists"*) ;; *) echo "vw-init: insmod $ko: $out" ;; esac
done </etc/vw/boot-modules
for m in $(echo "$VW_MODULES" | tr ',' ' '); do
  modprobe "$m" || echo "vw-init: modprobe $m failed"
done

finish() { sync; poweroff -f; echo o >/proc/sysrq-trigger; sleep 5; exit 1; }

if [ -z "$VW_TEST" ]; then
  echo "vw-init: no vw.test= on the command line; starting a shell (exit to power off)"
  setsid cttyhack sh -l
  finish
fi

echo
echo "VW-BEGIN $VW_TEST"
echo "vw-init: kernel $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime)s"
rm -f /tmp/.vw-marker
if [ ! -f "/tests/$VW_TEST.sh" ]; then
  echo; echo "VW-FAIL $VW_TEST no-such-test /tests/$VW_TEST.sh"
  finish
fi
if [ -n "$VW_TIMEOUT" ]; then
  timeout -s KILL "$VW_TIMEOUT" sh "/tests/$VW_TEST.sh"; rc=$?
else
  sh "/tests/$VW_TEST.sh"; rc=$?
fi
if [ ! -e /tmp/.vw-marker ]; then
  echo
  if [ "$rc" = 0 ]; then echo "VW-PASS $VW_TEST"
  elif [ -n "$VW_TIMEOUT" ] && [ "$rc" = 137 ]; then echo "VW-FAIL $VW_TEST guest-timeout=${VW_TIMEOUT}s"
  else echo "VW-FAIL $VW_TEST exit=$rc"; fi
fi
echo "vw-init: done at uptime $(cut -d' ' -f1 /proc/uptime)s"
finish
EOF
chmod 755 "$STAGE/init"

# ---------------------------------------------------------------- pack
pack() { (cd "$1" && find . -mindepth 1 -printf '%P\n' | sort | cpio -o -H newc --quiet -R 0:0); }
log "packing initramfs ($(du -sh "$STAGE" | cut -f1) uncompressed)"
pack "$STAGE" | gzip -n -"$GZIP_LEVEL" >"$OUT/initrd.gz.tmp"
mv -f "$OUT/initrd.gz.tmp" "$OUT/initrd.gz"
if [[ -n "$FSTAGE" ]]; then
  log "packing fio layer ($(du -sh "$FSTAGE" | cut -f1), uncompressed)"
  # The kernel takes an uncompressed archive only at a 4-byte aligned offset and skips
  # zero bytes between archives: pad the gzip member with zeros to 512 bytes.
  gz_size=$(stat -c %s "$OUT/initrd.gz")
  { cat "$OUT/initrd.gz"; head -c $(( (512 - gz_size % 512) % 512 )) /dev/zero; pack "$FSTAGE"; } >"$OUT/initrd-fio.img.tmp"
  mv -f "$OUT/initrd-fio.img.tmp" "$OUT/initrd-fio.img"
else
  rm -f "$OUT/initrd-fio.img"
fi
echo "$KVER" >"$OUT/kernel-version"
echo "$KPKG $KPKG_VERSION" >"$OUT/kernel-package"
echo "$STAMP" >"$OUT/.stamp"
log "done: kernel $KVER ($KPKG $KPKG_VERSION), initrd.gz $(du -h "$OUT/initrd.gz" | cut -f1)$([[ -n "$FSTAGE" ]] && echo ", initrd-fio.img $(du -h "$OUT/initrd-fio.img" | cut -f1)"), $(elapsed)"

# ==================================================================== appended: e2fsprogs for the blk test
# The vhost-user-blk guest test (tests/blk.sh, booted with initrd-fio.img) makes a real ext4 file system and
# checks it: the host's mke2fs and e2fsck with their libraries and /etc/mke2fs.conf go into one more
# uncompressed cpio layer at the end of initrd-fio.img (later layers add files to the earlier ones). This
# block runs only after a rebuild above (an up-to-date stamp exits earlier), so the layer is added once per
# build; the stamp is withdrawn while it works, so a failure here means a rebuild next time.
if [[ -s "$OUT/initrd-fio.img" ]] && command -v mke2fs >/dev/null 2>&1; then
  rm -f "$OUT/.stamp"
  E2STAGE="$(mktemp -d "$OUT/.stage-e2fs.XXXXXX")"
  trap 'rm -rf "$STAGE" ${FSTAGE:+"$FSTAGE"} "$E2STAGE" "$OUT/initrd.gz.tmp" "$OUT/initrd-fio.img.tmp"' EXIT
  for b in mke2fs e2fsck; do
    p="$(command -v "$b" || true)"
    [[ -n "$p" ]] && copy_with_libs "$E2STAGE" "$(readlink -f "$p")"
  done
  ln -sf mke2fs "$E2STAGE/usr/bin/mkfs.ext4"
  mkdir -p "$E2STAGE/etc/vw"
  [[ -f /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "$E2STAGE/etc/"
  echo yes >"$E2STAGE/etc/vw/has-e2fsprogs"
  fio_size=$(stat -c %s "$OUT/initrd-fio.img")
  { cat "$OUT/initrd-fio.img"; head -c $(( (512 - fio_size % 512) % 512 )) /dev/zero; pack "$E2STAGE"; } >"$OUT/initrd-fio.img.tmp"
  mv -f "$OUT/initrd-fio.img.tmp" "$OUT/initrd-fio.img"
  rm -rf "$E2STAGE"
  echo "$STAMP" >"$OUT/.stamp"
  log "e2fsprogs layer added to initrd-fio.img ($(du -h "$OUT/initrd-fio.img" | cut -f1))"
fi
