#!/bin/sh
# tests/hw/scenario-powercut.sh — runs INSIDE the VM for tests/hw/powercut.sh (busybox sh).
# Usage: sh scenario-powercut.sh SHARE record|check
#   record  mounts the virtio disk (/dev/vda, ext4) and records onto it with `pirec record`: a camera
#           on vivid (libx264 encoder, GOP 60 frames at 30 fps) and notes sent every 0.2 s; writes
#           the guest's uptime (CLOCK_MONOTONIC here: no suspend) to $SHARE/powercut-heartbeat every
#           0.1 s, so the host knows when its power cut came; creates $SHARE/powercut-recording
#           once the camera writes rows. The host kills qemu: this phase never ends by itself.
#   check   mounts the disk again (the journal is replayed), runs pirec-remux --json on the session
#           and copies the session and its report to $SHARE/powercut-out for the host to check.
SHARE=$1
PHASE=$2
BIN=$(ls -d "$SHARE"/build-amd64-v1/apps 2>/dev/null | head -1)
D=/mnt/disk
mkdir -p $D
mount -t ext4 /dev/vda $D || { echo "RESULT powercut-$PHASE FAIL cannot mount /dev/vda"; exit 1; }
case $PHASE in
record)
	cat > /tmp/pirec.conf <<EOC
[session]
output_dir = $D/sessions
remux_after = false
[storage]
fsync_interval = 1s
[control]
socket = /tmp/control.sock
[camera.cam]
source = v4l2
device = /dev/video0
size = 320x240
fps = 30
[notes]
enabled = true
EOC
	( while :; do cut -d' ' -f1 /proc/uptime > "$SHARE/powercut-heartbeat.new" &&
		mv "$SHARE/powercut-heartbeat.new" "$SHARE/powercut-heartbeat"; sleep 0.1; done ) &
	"$BIN/pirec" record -c /tmp/pirec.conf --label powercut > /tmp/pirec.log 2>&1 &
	# up to 120 s: under TCG on a loaded host the first encoder start can take a minute
	for i in $(seq 1 1200); do
		n=$(cat $D/sessions/*/cam/t001_frames.csv 2>/dev/null | wc -l)
		[ "$n" -gt 30 ] && break
		sleep 0.1
	done
	[ "$n" -gt 30 ] || { echo "RESULT powercut-record FAIL no camera rows"; cat /tmp/pirec.log; exit 1; }
	touch "$SHARE/powercut-recording"
	i=0
	# each note the controller answered "saved", with the guest's uptime after the answer
	while :; do
		"$BIN/pirec" note --socket /tmp/control.sock "powercut note $i" 2>/dev/null | grep -q saved &&
			echo "$i $(cut -d' ' -f1 /proc/uptime)" >> "$SHARE/powercut-notes"
		i=$((i + 1)); sleep 0.2
	done
	;;
check)
	S=$(ls -d $D/sessions/*/ | head -1)
	rm -rf "$SHARE/powercut-out"; mkdir -p "$SHARE/powercut-out"
	"$BIN/pirec-remux" --json "$S" > "$SHARE/powercut-out/remux.json" 2> "$SHARE/powercut-out/remux.err"
	echo $? > "$SHARE/powercut-out/remux.rc"
	cp -r "$S" "$SHARE/powercut-out/session"
	echo "RESULT powercut-check PASS copied $S"
	;;
esac
umount $D
