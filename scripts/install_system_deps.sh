#!/usr/bin/env bash
# System (apt) packages the simulator suites need. Idempotent and fast when already done.
# A simple sequential script: one section per suite; append your own section, do not restructure.
# Runs as root (CI and the dev machines); with sudo available it is used, otherwise the step is skipped.
set -euo pipefail

if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "install_system_deps: not root and no sudo; skipping apt steps" >&2; exit 0; fi
export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------------------------------------------
# libero (MuJoCo rendering): EGL needs nothing beyond Mesa's libEGL (already there with libgl1-mesa-dri);
# OSMesa (MUJOCO_GL=osmesa, the fallback and the speed benchmark's second backend) needs libosmesa6 from
# the same Mesa as the rest (backports when the simpler section below upgraded Mesa).
# ---------------------------------------------------------------------------------------------------
if [ "${1:-all}" = "all" ] || [ "${1:-}" = "libero" ]; then
  if dpkg-query -W -f='${Status}' libosmesa6 2>/dev/null | grep -q "ok installed"; then
    echo "install_system_deps[libero]: libosmesa6 $(dpkg-query -W -f='${Version}' libosmesa6) already installed"
  elif [ -f /etc/debian_version ]; then
    MESA=$(dpkg-query -W -f='${Version}' libgl1-mesa-dri 2>/dev/null || true)
    $SUDO apt-get update -qq
    if [[ "$MESA" == *bpo* ]]; then
      $SUDO apt-get install -y -qq -t bookworm-backports libosmesa6 >/dev/null
    else
      $SUDO apt-get install -y -qq libosmesa6 >/dev/null
    fi
    echo "install_system_deps[libero]: installed libosmesa6 $(dpkg-query -W -f='${Version}' libosmesa6)"
  else
    echo "install_system_deps[libero]: not Debian; install OSMesa yourself for MUJOCO_GL=osmesa (EGL works without it)" >&2
  fi
fi
[ "${1:-}" = "libero" ] && exit 0  # `install_system_deps.sh libero`: only the section above

# ---------------------------------------------------------------------------------------------------
# simpler (ManiSkill3 / SAPIEN 3): Vulkan on CPU through Mesa lavapipe from Debian bookworm-backports.
# bookworm's own Mesa 22.3 lavapipe lacks descriptorBindingPartiallyBound, so SAPIEN finds no device.
# Installing backports' mesa-vulkan-drivers also upgrades the Mesa GL/EGL libraries LIBERO's MuJoCo EGL
# rendering uses: one Mesa for both suites (its version is recorded in each suite's provenance).
# ---------------------------------------------------------------------------------------------------
simpler_mesa_ok() {
  local v
  v=$(dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null || true)
  [ -n "$v" ] && dpkg --compare-versions "$v" ge 25 && dpkg-query -W -f='${Status}' libvulkan1 2>/dev/null | grep -q "ok installed"
}
if [ -f /etc/debian_version ] && grep -q '^12' /etc/debian_version; then
  if simpler_mesa_ok; then
    echo "install_system_deps[simpler]: mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers) already installed"
  else
    BACKPORTS=/etc/apt/sources.list.d/debian-backports.sources
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      # Copy URIs and Signed-By from the machine's Debian deb822 source (the stanza serving suite bookworm).
      SRC=$(grep -lE '^Suites:.*\bbookworm\b' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
      URIS="http://deb.debian.org/debian"; SIGNED="/usr/share/keyrings/debian-archive-keyring.gpg"
      if [ -n "$SRC" ]; then
        STANZA=$(awk -v RS= '/Suites:[^\n]*bookworm( |$|\n)/ {print; exit}' "$SRC")
        U=$(printf '%s\n' "$STANZA" | sed -n 's/^URIs:[[:space:]]*//p' | head -n1)
        S=$(printf '%s\n' "$STANZA" | sed -n 's/^Signed-By:[[:space:]]*//p' | head -n1)
        [ -n "$U" ] && URIS="$U"; [ -n "$S" ] && SIGNED="$S"
      fi
      printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
        "$URIS" "$SIGNED" | $SUDO tee "$BACKPORTS" >/dev/null
      echo "install_system_deps[simpler]: wrote $BACKPORTS (URIs: $URIS)"
    fi
    $SUDO apt-get update -qq
    # one Mesa for everything: also upgrade OSMesa when an earlier section installed bookworm's
    EXTRA_MESA=$(dpkg-query -W -f='${Status}' libosmesa6 2>/dev/null | grep -q "ok installed" && echo libosmesa6 || true)
    $SUDO apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1 $EXTRA_MESA >/dev/null
    echo "install_system_deps[simpler]: installed mesa-vulkan-drivers $(dpkg-query -W -f='${Version}' mesa-vulkan-drivers)"
  fi
else
  echo "install_system_deps[simpler]: not Debian 12 (bookworm); install a Mesa >= 25 lavapipe (mesa-vulkan-drivers) and libvulkan1 yourself" >&2
fi

