#!/usr/bin/env bash
# Install the Debian packages Branchline's test suite needs (Debian 12 "bookworm").
#
#   sudo bash tools/install-test-deps.sh                 # required packages
#   sudo bash tools/install-test-deps.sh --with-tshark   # also tshark (large; optional)
#   sudo bash tools/install-test-deps.sh --dry-run       # show what would happen (apt-get -s)
#   BRANCHLINE_EXTRA_TEST_PACKAGES="minimodem" sudo -E bash tools/install-test-deps.sh
#
# Idempotent: installs only what is missing, and refreshes the package lists only when
# they are missing or more than a day old. Never prompts (noninteractive debconf).
set -euo pipefail

required=(
  kamailio        # test trunk/registrar (tests/integration/peers/kamailio.py)
  baresip-core    # far-end phone (tests/integration/peers/baresip.py)
  sip-tester      # sipp, scripted SIP scenarios
  sox             # makes and converts test WAVs
  espeak-ng       # speech-like test audio
  python3-venv
  python3-dev
  gcc             # builds the C extensions of the hw extra (pyalsaaudio, systemd-python)
  libc6-dev
  libasound2-dev  # builds pyalsaaudio (the hw extra)
  libsystemd-dev  # builds systemd-python (the hw extra)
  pkg-config
  iproute2        # network namespaces for WAN-failure tests
  nftables        # packet loss between those namespaces
  fail2ban        # fail2ban-regex checks the security filter (tests/unit/test_fail2ban_filter.py)
  systemd         # systemd-analyze verify/security and systemd-sysusers on systemd/ (tests/unit/test_systemd_units.py)
  sipvicious      # svmap/svwar/svcrack against the gateway (tests/integration/test_scanners.py)
  linphone-cli    # linphonec softphone (tests/integration/test_interop_linphone.py)
  gammu           # AT software against the modem emulator (tests/integration/test_modem_emulator_gammu.py)
  python3-gammu   # libGammu as an SMS PDU peer (tests/unit/test_sms_gammu.py; runs under /usr/bin/python3)
  minimodem       # a Bell 202 caller ID peer (tests/integration/test_gsm_calls.py, tests/unit/test_callerid_line.py)
  prometheus      # promtool checks and tests the alert rules of docs/metrics.md (tests/unit/test_metrics_docs.py)
)
optional=()
dry_run=0

for arg in "$@"; do
  case "$arg" in
    --with-tshark) optional+=(tshark) ;;
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install-test-deps: unknown option $arg (expected --with-tshark, --dry-run)" >&2; exit 2 ;;
  esac
done
if [ -n "${BRANCHLINE_EXTRA_TEST_PACKAGES:-}" ]; then
  # shellcheck disable=SC2206  # word splitting is the point: a space-separated list
  optional+=(${BRANCHLINE_EXTRA_TEST_PACKAGES})
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: must run as root (it calls apt-get); try: sudo bash $0" >&2
  exit 2
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: apt-get not found; this script supports Debian 12 only" >&2
  exit 2
fi

export DEBIAN_FRONTEND=noninteractive
# tshark asks whether non-root users may capture; answer "no" up front so it never prompts.
if [ "$dry_run" -eq 0 ] && printf '%s\n' "${optional[@]}" | grep -qx tshark \
   && command -v debconf-set-selections >/dev/null; then
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
fi

is_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

missing=()
for pkg in "${required[@]}" "${optional[@]}"; do
  if is_installed "$pkg"; then
    echo "install-test-deps: $pkg already installed"
  else
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-test-deps: nothing to do"
  exit 0
fi

lists=/var/lib/apt/lists
if ! compgen -G "$lists/*_Packages*" >/dev/null \
   || [ -z "$(find "$lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 -print -quit)" ]; then
  echo "install-test-deps: package lists missing or older than a day: apt-get update"
  if [ "$dry_run" -eq 1 ]; then
    echo "install-test-deps: (dry run) would run apt-get update"
  else
    apt-get update
  fi
else
  echo "install-test-deps: package lists are fresh (under a day old); skipping apt-get update"
fi

echo "install-test-deps: apt-get install ${missing[*]}"
if [ "$dry_run" -eq 1 ]; then
  apt-get install -s -y --no-install-recommends "${missing[@]}"
  echo "install-test-deps: (dry run) nothing installed"
  exit 0
fi
apt-get install -y --no-install-recommends "${missing[@]}"

for pkg in "${missing[@]}"; do
  if ! is_installed "$pkg"; then
    echo "install-test-deps: $pkg still not installed" >&2
    exit 1
  fi
done
# On a systemd host, installing kamailio enables and starts the system-wide kamailio
# on port 5060. Tests run their own instances, so stop the one this run just installed.
if printf '%s\n' "${missing[@]}" | grep -qx kamailio && [ -d /run/systemd/system ]; then
  echo "install-test-deps: systemctl disable --now kamailio (tests start their own)"
  systemctl disable --now kamailio || true
fi
echo "install-test-deps: done"
