#!/bin/sh
# Two guests on two ports of one `vhost-wasm net` switch that the host kills with SIGKILL and restarts, several
# times, while they ping each other (test/qemu/net-restart.test.ts). QEMU (chardev reconnect=1) takes the link
# down when the back-end goes and up again once it has reconnected and set the rings up anew: the guest counts the
# link going down (carrier_down_count) and, after each time, how long until the peer answers again. After the
# last restart the guests move a file over TCP with busybox nc and print its md5 (the host compares them).
# Kernel command line:
#   vw.net_role=recv|send   recv listens (nc -l) and writes the file, send generates and sends it
#   vw.net_ip=A.B.C.D       this guest's address (/24)
#   vw.net_peer=A.B.C.D     the other guest
#   vw.net_restarts=N       back-end restarts to live through
#   vw.net_bytes=N          size of the file sent after the restarts (default 4 MiB)
#   vw.net_stream_bytes=N   size of the stream sent across the restarts (default 16 MiB)
. /lib/vw-lib.sh
role=${VW_NET_ROLE:?vw.net_role missing}
ip=${VW_NET_IP:?vw.net_ip missing}
peer=${VW_NET_PEER:?vw.net_peer missing}
restarts=${VW_NET_RESTARTS:?vw.net_restarts missing}
bytes=${VW_NET_BYTES:-4194304}
stream_bytes=${VW_NET_STREAM_BYTES:-16777216}
port=5001
stream_port=5002
SYS=/sys/class/net/eth0

vw_wait_for 20 -e $SYS || vw_fail "no eth0 (net devices: $(ls /sys/class/net | tr '\n' ' '))"
ip link set lo up
ip addr add "$ip/24" dev eth0 || vw_fail "ip addr add failed"
ip link set eth0 up || vw_fail "ip link set eth0 up failed"
[ -r $SYS/carrier_down_count ] || vw_fail "no $SYS/carrier_down_count in this kernel"
t0=$(vw_ms)
until ping -c 1 -W 1 "$peer" >/dev/null 2>&1; do
  [ $(( $(vw_ms) - t0 )) -ge 180000 ] && vw_fail "no answer from $peer in 180 s"
done
down0=$(cat $SYS/carrier_down_count)
vw_log "traffic up: $peer answers after $(( $(vw_ms) - t0 )) ms (carrier down count $down0)"

# the stream across the restarts (TCP retransmits what a restart drops)
case "$role" in
  recv)
    mkfifo /tmp/streamin
    exec 4<>/tmp/streamin
    (
      timeout 500 nc -l -p "$stream_port" <&4 >/tmp/stream.bin
      rc=$?
      vw_log "stream received (nc exit $rc)"
      exit $rc
    ) &
    ;;
  send)
    head -c "$stream_bytes" /dev/urandom >/tmp/stream.bin
    (
      tries=0
      until timeout 500 nc "$peer" "$stream_port" </tmp/stream.bin; do
        tries=$(( tries + 1 ))
        [ "$tries" -ge 120 ] && exit 1
        sleep 0.5
      done
    ) &
    ;;
esac
stream_pid=$!
stream_t0=$(vw_ms)

# traffic until the link has gone down `restarts` times and come back after each
seen=0
ok=0
lost=0
while [ "$seen" -lt "$restarts" ]; do
  n=$(( $(cat $SYS/carrier_down_count) - down0 ))
  if [ "$n" -gt "$seen" ]; then
    t1=$(vw_ms)
    until [ "$(cat $SYS/carrier 2>/dev/null)" = 1 ] && ping -c 1 -W 1 -s 1000 "$peer" >/dev/null 2>&1; do
      [ $(( $(vw_ms) - t1 )) -ge 90000 ] && vw_fail "restart $n: no traffic 90 s after the link went down (carrier $(cat $SYS/carrier))"
    done
    seen=$n
    vw_log "restart $seen: traffic back $(( $(vw_ms) - t1 )) ms after the link went down (pings so far: $ok answered, $lost lost)"
    continue
  fi
  if ping -c 1 -W 1 -s 1000 "$peer" >/dev/null 2>&1; then ok=$(( ok + 1 )); else lost=$(( lost + 1 )); fi
done

wait "$stream_pid" || vw_fail "the stream across the restarts failed"
stream_ms=$(( $(vw_ms) - stream_t0 ))
stream_size=$(stat -c %s /tmp/stream.bin)
stream_sum=$(md5sum /tmp/stream.bin | cut -d' ' -f1)
vw_log "stream: $stream_size bytes in $stream_ms ms across the restarts, md5 $stream_sum"

case "$role" in
  recv)
    mkfifo /tmp/ncin
    exec 3<>/tmp/ncin
    t1=$(vw_ms)
    timeout 180 nc -l -p "$port" <&3 >/tmp/file.bin || vw_fail "nc -l failed or timed out"
    ;;
  send)
    head -c "$bytes" /dev/urandom >/tmp/file.bin
    t1=$(vw_ms)
    tries=0
    until timeout 180 nc "$peer" "$port" </tmp/file.bin; do
      tries=$(( tries + 1 ))
      [ "$tries" -ge 120 ] && vw_fail "could not connect to $peer:$port"
      sleep 0.5
    done
    ;;
  *) vw_fail "vw.net_role must be recv or send, not '$role'" ;;
esac
size=$(stat -c %s /tmp/file.bin)
sum=$(md5sum /tmp/file.bin | cut -d' ' -f1)
vw_pass "role=$role restarts=$seen downs=$(( $(cat $SYS/carrier_down_count) - down0 )) pings_ok=$ok pings_lost=$lost stream_bytes=$stream_size stream_md5=$stream_sum stream_ms=$stream_ms bytes=$size md5=$sum ms=$(( $(vw_ms) - t1 ))"
