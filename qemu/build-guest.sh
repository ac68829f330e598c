#!/usr/bin/env bash
# build-guest.sh — build the MemX QEMU test guest (kernel + busybox initramfs).
#
# Usage: qemu/build-guest.sh [OUTDIR]
#
#   OUTDIR defaults to ${MEMX_GUEST_DIR:-/var/tmp/memx-guest}.
#
# Produces:
#   OUTDIR/vmlinuz    copy of the host's Debian kernel
#   OUTDIR/initrd.gz  busybox-static + virtio-blk/ext4 modules + e2fsprogs +
#                     the guest scripts in qemu/guest/ (/init = guest/init.sh)
#   OUTDIR/tools.img  only when fio is installed: a read-only ext4 image with fio,
#                     every shared library it links and the dynamic loader
#                     (/bin/fio, /lib/*); run-guest.sh --tools attaches it as a
#                     second virtio-blk disk, which the guest mounts on /tools.
#                     Kept out of the initramfs: Debian's fio links ~64 libraries
#                     (~80 MB), and the guest reads only the pages fio touches.
#                     MEMX_FIO=PATH picks another fio binary.
#
# The kernel is the newest version in /lib/modules that has a matching
# /boot/vmlinuz-<ver>; override with MEMX_KERNEL_VERSION=<ver>.
# The build is skipped when a hash of all inputs matches OUTDIR/.stamp
# (set MEMX_GUEST_FORCE=1 to rebuild anyway). On success the output paths
# (vmlinuz, initrd.gz and, with fio, tools.img) are printed on stdout, one per line.
#
# Needs: busybox-static, linux-image-amd64, cpio, gzip, e2fsprogs (all Debian);
# fio for tools.img (the guest's fio scenario).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GUEST_SRC="${SCRIPT_DIR}/guest"
OUTDIR="${1:-${MEMX_GUEST_DIR:-/var/tmp/memx-guest}}"

# Modules needed for virtio-blk over PCI and ext4. Dependencies are added from
# modules.dep; modules built into the kernel are skipped.
REQUIRED_MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev
    virtio_pci virtio_blk crc16 mbcache jbd2 crc32c_generic ext4)
# Loaded if the kernel has them; failure to insmod them is not fatal.
OPTIONAL_MODULES=(libcrc32c crc32c_intel)

# e2fsprogs binaries copied (with their shared libraries) into the guest.
E2FS_BINARIES=(/usr/sbin/mke2fs /usr/sbin/e2fsck)

die() { echo "build-guest: error: $*" >&2; exit 1; }
log() { echo "build-guest: $*" >&2; }

find_kernel() {
    if [[ -n "${MEMX_KERNEL_VERSION:-}" ]]; then
        [[ -f "/boot/vmlinuz-${MEMX_KERNEL_VERSION}" && -d "/lib/modules/${MEMX_KERNEL_VERSION}" ]] \
            || die "MEMX_KERNEL_VERSION=${MEMX_KERNEL_VERSION}: no /boot/vmlinuz or /lib/modules for it"
        echo "${MEMX_KERNEL_VERSION}"
        return
    fi
    local ver
    while IFS= read -r ver; do
        if [[ -f "/boot/vmlinuz-${ver}" && -f "/lib/modules/${ver}/modules.dep" ]]; then
            echo "${ver}"
            return
        fi
    done < <(find /lib/modules -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -rV)
    die "no kernel found: need /lib/modules/<ver>/modules.dep and /boot/vmlinuz-<ver> (apt-get install linux-image-amd64)"
}

KVER="$(find_kernel)"
KERNEL="/boot/vmlinuz-${KVER}"
MODDIR="/lib/modules/${KVER}"
BUSYBOX="$(command -v busybox || true)"
[[ -n "${BUSYBOX}" ]] || die "busybox not found (apt-get install busybox-static)"
# The guest has no libc for busybox, so it must be the static build.
if ldd "${BUSYBOX}" >/dev/null 2>&1; then
    die "${BUSYBOX} is dynamically linked; install busybox-static"
fi
for tool in cpio gzip ldd sha256sum; do
    command -v "${tool}" >/dev/null || die "${tool} not found"
done
for bin in "${E2FS_BINARIES[@]}"; do
    [[ -x "${bin}" ]] || die "${bin} not found (apt-get install e2fsprogs)"
done

# ---------------------------------------------------------------- modules

# Module name of a modules.dep path: basename without .ko[.xz|.zst|.gz], '-' → '_'.
modname() {
    local base="${1##*/}"
    base="${base%%.ko*}"
    echo "${base//-/_}"
}

# "name path" for every line of a modules.dep/modules.builtin file, where name is
# the module name (basename without .ko[.xz|.zst|.gz], '-' -> '_').
module_names() {
    awk '{ p = $1; sub(/:$/, "", p); n = p; sub(/.*\//, "", n); sub(/\.ko.*/, "", n); gsub(/-/, "_", n); print n, $0 }' "$1"
}

declare -A DEP_LINE=()   # module name -> "path: dep1 dep2 ..."
while read -r name line; do
    DEP_LINE["${name}"]="${line}"
done < <(module_names "${MODDIR}/modules.dep")

declare -A BUILTIN=()
if [[ -f "${MODDIR}/modules.builtin" ]]; then
    while read -r name _; do
        BUILTIN["${name}"]=1
    done < <(module_names "${MODDIR}/modules.builtin")
fi

declare -A VISITED=()
ORDERED=()      # "name relpath" in load order (dependencies first)
OPTIONAL_SET=" ${OPTIONAL_MODULES[*]} "

visit() {
    local name="$1" line path deps dep
    [[ -n "${VISITED[${name}]:-}" ]] && return 0
    VISITED["${name}"]=1
    line="${DEP_LINE[${name}]:-}"
    path="${line%%:*}"
    deps="${line#*:}"
    for dep in ${deps}; do
        visit "$(modname "${dep}")"
    done
    ORDERED+=("${name} ${path}")
}

for m in "${REQUIRED_MODULES[@]}" "${OPTIONAL_MODULES[@]}"; do
    if [[ -n "${BUILTIN[${m}]:-}" ]]; then
        log "module ${m} is built into ${KVER}; skipping"
    elif [[ -n "${DEP_LINE[${m}]:-}" ]]; then
        visit "${m}"
    elif [[ "${OPTIONAL_SET}" == *" ${m} "* ]]; then
        log "optional module ${m} not present in ${KVER}; skipping"
    else
        die "module ${m} neither built in nor listed in ${MODDIR}/modules.dep"
    fi
done

# ---------------------------------------------------------------- libraries

# Shared libraries (and the dynamic loader) of the e2fsprogs binaries.
LIBS=()
while IFS= read -r lib; do
    LIBS+=("${lib}")
done < <(
    for bin in "${E2FS_BINARIES[@]}"; do
        ldd "${bin}" | awk '/=> \//{print $3} /^[[:space:]]*\/[^ ]*ld-linux/{print $1}'
    done | sort -u
)
[[ "${#LIBS[@]}" -gt 0 ]] || die "ldd found no libraries for ${E2FS_BINARIES[*]}"

# fio for the tools image (optional: without it there is no tools.img, and only the
# scenarios that need fio fail, saying so). Its libraries and loader as for e2fsprogs;
# a static fio has none.
FIO="${MEMX_FIO:-$(command -v fio || true)}"
FIO_LIBS=()
if [[ -n "${FIO}" ]]; then
    [[ -x "${FIO}" ]] || die "MEMX_FIO=${FIO} is not an executable"
    FIO="$(readlink -f "${FIO}")"
    fio_ldd="$(ldd "${FIO}" 2>&1 || true)"     # "not a dynamic executable" for a static fio
    if grep -q 'not found' <<< "${fio_ldd}"; then
        die "${FIO} has unresolved libraries: $(grep 'not found' <<< "${fio_ldd}" | tr -s ' \t\n' ' ')"
    fi
    while IFS= read -r lib; do
        FIO_LIBS+=("${lib}")
    done < <(awk '/=> \//{print $3} /^[[:space:]]*\/[^ ]*ld-linux/{print $1}' <<< "${fio_ldd}" | sort -u)
fi
TOOLS_IMG="${OUTDIR}/tools.img"

# ---------------------------------------------------------------- stamp

input_hash() {
    {
        echo "kver ${KVER}"
        sha256sum < "${BASH_SOURCE[0]}"
        find "${GUEST_SRC}" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        local f
        for f in "${KERNEL}" "${BUSYBOX}" "${E2FS_BINARIES[@]}" "${LIBS[@]}" /etc/mke2fs.conf; do
            [[ -e "${f}" ]] && stat -L -c '%n %s %Y' "${f}"
        done
        for m in "${ORDERED[@]}"; do
            stat -L -c '%n %s %Y' "${MODDIR}/${m#* }"
        done
        echo "fio ${FIO:-none}"
        for f in ${FIO:+"${FIO}"} "${FIO_LIBS[@]}"; do
            stat -L -c '%n %s %Y' "${f}"
        done
    } | sha256sum | cut -d" " -f1
}

HASH="$(input_hash)"
STAMP="${OUTDIR}/.stamp"
# The output paths, one per line (tools.img only when fio is there).
print_outputs() {
    echo "${OUTDIR}/vmlinuz"
    echo "${OUTDIR}/initrd.gz"
    if [[ -n "${FIO}" ]]; then echo "${TOOLS_IMG}"; fi
}

if [[ -z "${MEMX_GUEST_FORCE:-}" && -f "${STAMP}" && -f "${OUTDIR}/vmlinuz" \
      && -f "${OUTDIR}/initrd.gz" && ( -z "${FIO}" || -f "${TOOLS_IMG}" ) \
      && "$(cat "${STAMP}")" == "${HASH}" ]]; then
    log "up to date (kernel ${KVER}${FIO:+, tools.img with ${FIO}})"
    print_outputs
    exit 0
fi

# ---------------------------------------------------------------- staging

mkdir -p "${OUTDIR}"
STAGE="$(mktemp -d "${OUTDIR}/.stage.XXXXXX")"
TOOLS_STAGE="$(mktemp -d "${OUTDIR}/.tools-stage.XXXXXX")"
cleanup() {
    rm -rf "${STAGE}" "${TOOLS_STAGE}" "${OUTDIR}/initrd.gz.tmp" "${OUTDIR}/vmlinuz.tmp" "${TOOLS_IMG}.tmp"
}
trap cleanup EXIT

log "building guest for kernel ${KVER} in ${OUTDIR}"
mkdir -p "${STAGE}"/{bin,dev,etc,proc,sys,tmp,mnt,root,run,memx,lib64,usr} \
    "${STAGE}/lib/modules/${KVER}" "${STAGE}/sys/kernel/debug"
chmod 1777 "${STAGE}/tmp"
ln -s bin "${STAGE}/sbin"
ln -s ../bin "${STAGE}/usr/bin"
ln -s ../bin "${STAGE}/usr/sbin"

# busybox with one symlink per applet (all in /bin).
cp "${BUSYBOX}" "${STAGE}/bin/busybox"
while IFS= read -r applet; do
    [[ -n "${applet}" && "${applet}" != busybox ]] || continue
    ln -sf busybox "${STAGE}/bin/${applet}"
done < <("${BUSYBOX}" --list)

# e2fsprogs (replace busybox's mke2fs applet with the real one).
for bin in "${E2FS_BINARIES[@]}"; do
    rm -f "${STAGE}/bin/${bin##*/}"
    cp -L "${bin}" "${STAGE}/bin/${bin##*/}"
done
ln -sf mke2fs "${STAGE}/bin/mkfs.ext4"
ln -sf e2fsck "${STAGE}/bin/fsck.ext4"
for lib in "${LIBS[@]}"; do
    mkdir -p "${STAGE}$(dirname "${lib}")"
    cp -L "${lib}" "${STAGE}${lib}"
done
[[ -f /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "${STAGE}/etc/mke2fs.conf"
ln -s /proc/mounts "${STAGE}/etc/mtab"
echo "root:x:0:0:root:/root:/bin/sh" > "${STAGE}/etc/passwd"
echo "root:x:0:" > "${STAGE}/etc/group"

# Kernel modules, decompressed (busybox insmod only takes plain .ko files).
: > "${STAGE}/memx/modules.list"
for m in "${ORDERED[@]}"; do
    name="${m%% *}"
    rel="${m#* }"
    src="${MODDIR}/${rel}"
    dst_rel="${rel%%.ko*}.ko"
    dst="${STAGE}/lib/modules/${KVER}/${dst_rel}"
    mkdir -p "$(dirname "${dst}")"
    case "${rel}" in
        *.ko)     cp "${src}" "${dst}" ;;
        *.ko.xz)  xz -dc "${src}" > "${dst}" ;;
        *.ko.zst) zstd -qdc "${src}" > "${dst}" ;;
        *.ko.gz)  gzip -dc "${src}" > "${dst}" ;;
        *) die "unknown module format: ${rel}" ;;
    esac
    optional=0
    [[ "${OPTIONAL_SET}" == *" ${name} "* ]] && optional=1
    echo "${name} /lib/modules/${KVER}/${dst_rel} ${optional}" >> "${STAGE}/memx/modules.list"
done

# Guest scripts.
install -m 0755 "${GUEST_SRC}/init.sh" "${STAGE}/init"
for f in "${GUEST_SRC}"/*.sh; do
    [[ "${f##*/}" == init.sh ]] && continue
    install -m 0755 "${f}" "${STAGE}/memx/${f##*/}"
done
echo "${KVER}" > "${STAGE}/memx/kernel-version"

# A console node so the kernel can open /dev/console before /init mounts devtmpfs.
if [[ "$(id -u)" -eq 0 ]]; then
    mknod -m 600 "${STAGE}/dev/console" c 5 1
    mknod -m 666 "${STAGE}/dev/null" c 1 3
fi

# ---------------------------------------------------------------- tools image

# fio and its libraries on a read-only ext4 image (no journal: nothing ever writes
# to it). The guest runs /tools/lib/ld-linux-x86-64.so.2 --library-path /tools/lib
# /tools/bin/fio, so neither the initramfs nor the guest's /lib is involved.
if [[ -n "${FIO}" ]]; then
    mkdir -p "${TOOLS_STAGE}/bin" "${TOOLS_STAGE}/lib"
    cp -L "${FIO}" "${TOOLS_STAGE}/bin/fio"
    for lib in "${FIO_LIBS[@]}"; do
        cp -L "${lib}" "${TOOLS_STAGE}/lib/${lib##*/}"
    done
    "${FIO}" --version > "${TOOLS_STAGE}/fio-version"
    # Contents plus a quarter for ext4's metadata, plus 8 MiB.
    tools_kib=$(( $(du -sk "${TOOLS_STAGE}" | cut -f1) * 5 / 4 + 8192 ))
    mke2fs -q -F -t ext4 -O ^has_journal -m 0 -L memx-tools -E root_owner=0:0 \
        -d "${TOOLS_STAGE}" "${TOOLS_IMG}.tmp" "${tools_kib}k" >&2 \
        || die "mke2fs -d of the tools image failed"
    chmod 0444 "${TOOLS_IMG}.tmp"
    mv -f "${TOOLS_IMG}.tmp" "${TOOLS_IMG}"
    log "tools.img: $(cat "${TOOLS_STAGE}/fio-version") with ${#FIO_LIBS[@]} libraries, $((tools_kib / 1024)) MiB"
else
    rm -f "${TOOLS_IMG}"
    log "fio not installed: no tools.img (only the fio scenario needs it; apt-get install fio)"
fi

# ---------------------------------------------------------------- archive

(cd "${STAGE}" && find . -print0 | LC_ALL=C sort -z \
    | cpio --null --create --format=newc --owner=0:0 --quiet) \
    | gzip -6 -n > "${OUTDIR}/initrd.gz.tmp"
cp "${KERNEL}" "${OUTDIR}/vmlinuz.tmp"
chmod 0644 "${OUTDIR}/vmlinuz.tmp" "${OUTDIR}/initrd.gz.tmp"
mv -f "${OUTDIR}/vmlinuz.tmp" "${OUTDIR}/vmlinuz"
mv -f "${OUTDIR}/initrd.gz.tmp" "${OUTDIR}/initrd.gz"
echo "${HASH}" > "${STAMP}"
log "modules: $(cut -d' ' -f1 "${STAGE}/memx/modules.list" | tr '\n' ' ')"
log "initrd.gz: $(stat -c %s "${OUTDIR}/initrd.gz") bytes"
print_outputs
