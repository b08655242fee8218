# Shared by scripts/run.sh, scripts/quality.sh and the benchmark scripts (source it).
# Installs what is missing, builds, and sets Open MPI up for one machine.

SQUEEZE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SQUEEZE_PACKAGES=(libopenmpi-dev openmpi-bin libopenblas-dev liblapacke-dev libscalapack-openmpi-dev libdnnl-dev pkg-config python3 iproute2)

# ensure_packages: installs the missing apt packages when root; otherwise prints the exact
# apt-get line and fails. On a system without dpkg it only names what is needed.
ensure_packages() {
    if ! command -v dpkg-query >/dev/null; then
        echo "no dpkg-query: not a Debian system; make sure these are installed: ${SQUEEZE_PACKAGES[*]}"
        return 0
    fi
    local missing=() p
    for p in "${SQUEEZE_PACKAGES[@]}"; do
        if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) != installed ]]; then
            missing+=("$p")
        fi
    done
    ((${#missing[@]} == 0)) && return 0
    echo "missing: ${missing[*]}"
    if ((EUID != 0)); then
        echo "not root; run:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
        return 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" || return 1
}

# build_release: the optimized squeeze binary; sets SQUEEZE (its path).
build_release() {
    echo "==> swift build -c release"
    # The build's own status decides: a failed build must never fall back to a stale binary.
    local status
    (cd "$SQUEEZE_ROOT" && swift build -c release --product squeeze 2>&1) | { grep -Ev '^\[[0-9]+/[0-9]+\]' || true; }
    status=${PIPESTATUS[0]}
    if ((status != 0)); then
        echo "error: swift build -c release failed (exit status $status); see the messages above" >&2
        exit 1
    fi
    SQUEEZE="$(cd "$SQUEEZE_ROOT" && swift build -c release --show-bin-path)/squeeze"
    [[ -x $SQUEEZE ]] || { echo "error: the build reported success but $SQUEEZE is missing" >&2; exit 1; }
}

# Open MPI on one machine: shared memory + TCP, no CMA single-copy, yield when idle, root allowed,
export OMPI_MCA_btl=${OMPI_MCA_btl:-self,vader,tcp}
export OMPI_MCA_pml=${OMPI_MCA_pml:-ob1}
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}
export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
export OMPI_MCA_rmaps_base_oversubscribe=${OMPI_MCA_rmaps_base_oversubscribe:-1}
# No core binding: a rank runs cores/ranks BLAS threads and must be allowed on that many cores.
export OMPI_MCA_hwloc_base_binding_policy=${OMPI_MCA_hwloc_base_binding_policy:-none}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
