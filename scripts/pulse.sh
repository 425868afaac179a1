#!/usr/bin/env bash
# Starts a PulseAudio daemon with only virtual devices (null sinks; each
# sink's ".monitor" source is a virtual microphone) for the audio device
# tests (crates/calling-media/tests/devices.rs, docs/DEVICES.md). Works as
# root in a container: no sound card, no D-Bus, no session, no cookie (the
# socket takes anonymous clients; it is a private socket under $dir).
#
#   scripts/pulse.sh         start (idempotent) and make the sinks; prints
#                            PULSE_SERVER=unix:<socket> as its last line
#   scripts/pulse.sh stop    stop that daemon
#
# Clients reach it through PULSE_SERVER=unix:$dir/native. The sinks are
# listed in $CALLING_PULSE_SINKS (default below); each runs at 48 kHz stereo.
# scripts/setup.sh installs pulseaudio and pulseaudio-utils.
set -euo pipefail

dir="${CALLING_PULSE_DIR:-/tmp/calling-pulse-$(id -u)}"
socket="$dir/native"
sinks="${CALLING_PULSE_SINKS:-calling_mic1 calling_mic2 calling_mic3 calling_spk1 calling_spk2 calling_spk3 calling_spk4 calling_e2e_mic calling_e2e_spk}"
export PULSE_SERVER="unix:$socket"

for tool in pulseaudio pactl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "pulse.sh: $tool is missing (Debian packages pulseaudio and pulseaudio-utils; run scripts/setup.sh)" >&2
        exit 2
    fi
done

alive() {
    timeout 5 pactl info >/dev/null 2>&1
}

if [ "${1:-}" = "stop" ]; then
    if alive; then
        timeout 5 pactl exit || true
    fi
    exit 0
fi

mkdir -p "$dir"
chmod 700 "$dir"
if ! alive; then
    rm -f "$socket"
    # -n: no default.pa (it would look for sound cards, D-Bus, X11). The
    # daemon never exits by itself; its log goes to $dir/log.
    pulseaudio --daemonize=yes --system=false -n \
        --exit-idle-time=-1 --high-priority=no --realtime=no \
        --use-pid-file=no --log-target="file:$dir/log" \
        --load="module-native-protocol-unix auth-anonymous=1 socket=$socket" \
        --load="module-always-sink" \
        </dev/null >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do
        alive && break
        sleep 0.1
    done
    if ! alive; then
        echo "pulse.sh: PulseAudio did not start; its log:" >&2
        tail -n 20 "$dir/log" >&2 || true
        exit 1
    fi
fi

have="$(pactl list short sinks | cut -f2)"
for sink in $sinks; do
    if ! grep -qx "$sink" <<<"$have"; then
        pactl load-module module-null-sink "sink_name=$sink" rate=48000 channels=2 format=float32le \
            "sink_properties=device.description=$sink" >/dev/null
    fi
done
echo "PULSE_SERVER=$PULSE_SERVER"
