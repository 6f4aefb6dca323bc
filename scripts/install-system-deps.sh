#!/usr/bin/env bash
# Installs the Debian packages the tests need: ffmpeg (test clips), GStreamer's RTSP
# server (a real RTSP camera), Xvfb, xdotool and ImageMagick (window tests),
# systemd-analyze (unit file lint), openssl (a test TLS certificate), mosquitto (a real
# MQTT broker, and its mosquitto_passwd and mosquitto_sub), Chromium and its WebDriver (the
# web page's browser tests); what a minimal Debian lacks for `make`: python3-venv, and
# libGL/GLib, which the opencv-python wheel loads; and Debian's own OpenCV (python3-opencv
# 4.6, with GStreamer), one of the three OpenCVs CI tests on (make test-opencv).
#   --if-root   do nothing (beyond a note) unless running as root with apt-get
set -euo pipefail

packages=(
  ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-libav
  gstreamer1.0-tools python3-gst-1.0 xvfb xdotool imagemagick x11-utils systemd fonts-dejavu-core
  python3-venv libgl1 libglib2.0-0 openssl
  mosquitto mosquitto-clients
  chromium chromium-driver
  python3-opencv
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "${1:-}" = "--if-root" ] && { [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; }; then
  echo "note: tests that need ${missing[*]} will be skipped; install them with: sudo bash scripts/install-system-deps.sh" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "error: apt-get not found; install these packages by hand: ${missing[*]}" >&2
  exit 1
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
