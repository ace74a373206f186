#!/usr/bin/env bash
# Train the embedded models (`make pretrain`): the pretrain pipeline's two streams, which
# share nothing but the corpus parameters, side by side, one thread each:
#   pretrain_musicgen  corpus -> encodec-synth -> evidence; -> MusicGen-synth -> evidence
#   pretrain_small     corpus -> RAVE-synth -> evidence; clap-synth (+ evidence)
# Waits for both and fails if either fails. Each stream logs to $LOG_DIR/<stream>.log,
# with its start and end (UTC, exit status) on the first and last lines. Interrupted
# (Ctrl-C, kill), both stop; running it again resumes from the checkpoints.
#
# Usage: scripts/pretrain.sh [kedro run options, e.g. --params=pretrain_output_dir=...]
#   KEDRO    the kedro executable (default .venv/bin/kedro)
#   PYTHON   the Python beside it (creates the MLflow store first; default: KEDRO's folder)
#   LOG_DIR  where the logs go (default logs)
set -uo pipefail
cd "$(dirname "$0")/.."

KEDRO=${KEDRO:-.venv/bin/kedro}
LOG_DIR=${LOG_DIR:-logs}
STREAMS=(pretrain_musicgen pretrain_small)
mkdir -p "$LOG_DIR"

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# Two runs creating a new MLflow sqlite store at the same moment race on its schema
# migrations (one fails: "duplicate column name"): create it before the streams start.
PYTHON=${PYTHON:-$(dirname "$KEDRO")/python}
"$PYTHON" - <<'EOF' || exit 1
import yaml
uri = yaml.safe_load(open("conf/base/mlflow.yml"))["server"]["mlflow_tracking_uri"]
if uri.startswith("sqlite:"):
    import mlflow

    mlflow.MlflowClient(tracking_uri=uri).search_experiments()
EOF

# One stream, logging its start and end. A signal stops kedro (default action) but not
# this wrapper (a no-op handler, which kedro does not inherit), so the end is logged.
run_stream() {
  local stream=$1
  shift
  trap ':' INT TERM
  echo "# $stream started $(now): $KEDRO run --pipeline=$stream $*"
  # One thread per stream: the two streams fill a 2-core machine, and one thread makes
  # every training deterministic given its seed.
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
    "$KEDRO" run --pipeline="$stream" "$@"
  local rc=$?
  echo "# $stream ended $(now), exit $rc"
  return $rc
}

# Every stream in a process group of its own, so that an interruption reaches kedro and
# its wrapper together (background jobs of a script would otherwise ignore SIGINT).
set -m
pids=()
stopping=0
stop_all() {
  stopping=1
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done
}
trap stop_all INT TERM
for stream in "${STREAMS[@]}"; do
  ((stopping)) && break
  run_stream "$stream" "$@" >"$LOG_DIR/$stream.log" 2>&1 &
  pids+=($!)
  echo "[pretrain] $stream started (pid $!), log $LOG_DIR/$stream.log"
done
((stopping)) && stop_all  # a signal between a start and its pid being recorded

status=0
for i in "${!pids[@]}"; do
  stream=${STREAMS[$i]}
  wait "${pids[$i]}"
  rc=$?
  # A trapped signal interrupts `wait` (status > 128) while the stream may still run.
  while ((rc > 128)) && kill -0 "${pids[$i]}" 2>/dev/null; do
    wait "${pids[$i]}"
    rc=$?
  done
  if ((rc == 0)); then
    echo "[pretrain] $stream done"
  else
    echo "[pretrain] $stream FAILED (exit $rc), see $LOG_DIR/$stream.log" >&2
    status=1
  fi
done
exit $status
