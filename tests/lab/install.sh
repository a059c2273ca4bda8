#!/usr/bin/env bash
# Install the real batch systems that the airavata-hpc test lab starts on loopback.
#
# Idempotent and non-interactive; run as root on Debian 12. Installs OpenSSH's server,
# Slurm 22.05 with munge, Son of Grid Engine 8.1.9 and the slurm-wlm-torque PBS wrappers
# (unpacked beside gridengine, which conflicts with the package), and creates the test user
# `hpcuser`. When everything is already present it returns in a few milliseconds.
#
# Environment:
#   AIRAVATA_LAB_TORQUE_DIR  where the torque wrappers go (default /opt/airavata-lab/torque)
#   AIRAVATA_LAB_FORCE=1     redo the apt work even if everything looks installed
set -euo pipefail

TORQUE_DIR=${AIRAVATA_LAB_TORQUE_DIR:-/opt/airavata-lab/torque}
LAB_USER=hpcuser
SLURM_LINKS="sbatch salloc srun scancel squeue scontrol sinfo"

log() { printf 'lab/install: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "must run as root (it installs Debian packages and creates a user)"
    exit 1
fi

# Files whose presence means the matching step is done.
need_apt=0
for f in /usr/sbin/sshd /usr/lib/openssh/sftp-server \
         /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sbatch \
         /usr/sbin/sge_qmaster /usr/sbin/sge_execd /usr/bin/qconf /usr/bin/qacct \
         /var/lib/gridengine/default/common/act_qmaster \
         /usr/share/perl5/Switch.pm; do
    [ -e "$f" ] || { need_apt=1; break; }
done
# The torque wrappers `use Slurm; use Slurmdb;` (libslurm-perl, libslurmdb-perl).
compgen -G '/usr/lib/*/perl5/*/Slurmdb.pm' >/dev/null || need_apt=1
need_torque=0
for f in "$TORQUE_DIR/bin/qsub" "$TORQUE_DIR/bin/qstat" "$TORQUE_DIR/bin/qdel"; do
    [ -x "$f" ] || need_torque=1
done
for l in $SLURM_LINKS; do
    [ -L "$TORQUE_DIR/bin/$l" ] || need_torque=1
done
[ "${AIRAVATA_LAB_FORCE:-0}" = 1 ] && { need_apt=1; need_torque=1; }

export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef
          -o Dpkg::Options::=--force-confold)

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        apt-get update -q >/dev/null
        apt_updated=1
    fi
}

if [ "$need_apt" = 1 ]; then
    apt_update_once
    log "installing openssh-server, slurm-wlm, munge and the torque wrappers' perl deps"
    apt-get install "${APT_OPTS[@]}" openssh-server openssh-sftp-server slurm-wlm munge \
        perl libslurm-perl libslurmdb-perl libswitch-perl >/dev/null
    # Without these answers the gridengine postinst leaves the master unset.
    debconf-set-selections <<'PRESEED'
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string localhost
PRESEED
    log "installing gridengine-master gridengine-exec gridengine-client"
    apt-get install "${APT_OPTS[@]}" gridengine-master gridengine-exec gridengine-client \
        >/dev/null
fi

if [ "$need_torque" = 1 ]; then
    apt_update_once
    log "unpacking slurm-wlm-torque into $TORQUE_DIR"
    work=$(mktemp -d)
    # Let apt's unprivileged _apt user write the download (avoids the sandbox warning).
    if id -u _apt >/dev/null 2>&1; then chown _apt "$work"; fi
    (cd "$work" && apt-get download -q slurm-wlm-torque >/dev/null)
    dpkg-deb -x "$work"/slurm-wlm-torque_*.deb "$work/root"
    install -d -m 755 "$TORQUE_DIR/bin"
    for f in "$work"/root/usr/bin/*; do
        install -m 755 "$f" "$TORQUE_DIR/bin/$(basename "$f")"
    done
    # The wrappers call sbatch, squeue, ... from their own directory.
    for l in $SLURM_LINKS; do
        ln -sfn "/usr/bin/$l" "$TORQUE_DIR/bin/$l"
    done
    rm -rf "$work"
fi

if ! id -u "$LAB_USER" >/dev/null 2>&1; then
    log "creating user $LAB_USER"
    useradd -m -s /bin/bash "$LAB_USER"
    # sshd with UsePAM no refuses a locked ('!') account even for key logins.
    usermod -p '*' "$LAB_USER"
fi
