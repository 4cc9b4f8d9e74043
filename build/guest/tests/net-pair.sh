#!/bin/sh
# Two guests on two ports of one `vhost-wasm net` switch: configure eth0, ping the peer, then move a file
# over TCP with busybox nc and print its md5 (the host compares the two guests' markers).
# Kernel command line:
#   vw.net_role=recv|send   recv listens (nc -l) and writes the file, send generates and sends it
#   vw.net_ip=A.B.C.D       this guest's address (/24)
#   vw.net_peer=A.B.C.D     the other guest
#   vw.net_bytes=N          file size (default 4 MiB)
#   vw.net_wait=S           seconds to wait for the peer to answer pings (default 120: it may boot later)
. /lib/vw-lib.sh
role=${VW_NET_ROLE:?vw.net_role missing}
ip=${VW_NET_IP:?vw.net_ip missing}
peer=${VW_NET_PEER:?vw.net_peer missing}
bytes=${VW_NET_BYTES:-4194304}
wait_s=${VW_NET_WAIT:-120}
port=5001

vw_wait_for 20 -e /sys/class/net/eth0 || vw_fail "no eth0 (net devices: $(ls /sys/class/net | tr '\n' ' '))"
ip link set lo up
ip addr add "$ip/24" dev eth0 || vw_fail "ip addr add failed"
ip link set eth0 up || vw_fail "ip link set eth0 up failed"
t0=$(vw_ms)
until [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ]; do
  [ $(( $(vw_ms) - t0 )) -ge 20000 ] && vw_fail "eth0 has no carrier after 20s"
  sleep 0.1
done
queues=$(ls -d /sys/class/net/eth0/queues/tx-* 2>/dev/null | wc -l)
mac=$(cat /sys/class/net/eth0/address)
vw_log "eth0 $mac $ip/24 up, $queues tx queue(s), features: $(cat /sys/class/net/eth0/device/features 2>/dev/null)"

# the peer may still be booting: ping until it answers
t0=$(vw_ms)
until ping -c 1 -W 1 "$peer" >/dev/null 2>&1; do
  [ $(( $(vw_ms) - t0 )) -ge $(( wait_s * 1000 )) ] && vw_fail "no answer from $peer in ${wait_s}s"
done
first_ms=$(( $(vw_ms) - t0 ))
# pings from both CPUs: with XPS each CPU sends on its own TX queue, so both queue pairs carry traffic
out0=$(taskset 1 ping -c 5 -i 0.2 -W 2 "$peer" 2>&1)
out1=$(taskset 2 ping -c 5 -i 0.2 -W 2 "$peer" 2>&1)
rx0=$(echo "$out0" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
rx1=$(echo "$out1" | sed -n 's/.* \([0-9]*\) packets received.*/\1/p')
rtt=$(echo "$out0" | sed -n 's/.*= [0-9.]*\/\([0-9.]*\)\/.*/\1/p')
vw_log "ping: first answer after ${first_ms}ms, cpu0 $rx0/5, cpu1 $rx1/5, avg rtt ${rtt}ms"
[ "${rx0:-0}" -ge 4 ] && [ "${rx1:-0}" -ge 4 ] || vw_fail "ping lost packets: cpu0 ${rx0:-?}/5 cpu1 ${rx1:-?}/5"

case "$role" in
  recv)
    # nc must not see EOF on stdin (it would shut the connection down): hold a fifo open instead
    mkfifo /tmp/ncin
    exec 3<>/tmp/ncin
    t1=$(vw_ms)
    timeout 180 nc -l -p "$port" <&3 >/tmp/file.bin || vw_fail "nc -l failed or timed out"
    ms=$(( $(vw_ms) - t1 ))
    ;;
  send)
    head -c "$bytes" /dev/urandom >/tmp/file.bin
    t1=$(vw_ms)
    tries=0
    # the receiver listens once its own pings are done: retry while it is not there yet
    until timeout 180 nc "$peer" "$port" </tmp/file.bin; do
      tries=$(( tries + 1 ))
      [ "$tries" -ge 120 ] && vw_fail "could not connect to $peer:$port"
      sleep 0.5
    done
    ms=$(( $(vw_ms) - t1 ))
    ;;
  *) vw_fail "vw.net_role must be recv or send, not '$role'" ;;
esac
size=$(stat -c %s /tmp/file.bin)
sum=$(md5sum /tmp/file.bin | cut -d' ' -f1)
[ "$ms" -gt 0 ] || ms=1
vw_pass "role=$role bytes=$size md5=$sum ms=$ms kib_per_s=$(( size * 1000 / 1024 / ms )) queues=$queues ping0=$rx0 ping1=$rx1 rtt=$rtt mac=$mac"
