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
#   LOG_DIR  where the logs go (default logs)
set -uo pipefail
cd "$(dirname "$0")/.."

KEDRO=${KEDRO:-.venv/bin/kedro}
LOG_DIR=${LOG_DIR:-logs}
STREAMS=(pretrain_musicgen pretrain_small)
mkdir -p "$LOG_DIR"

now() { date -u +%Y-%m-%dT%H:%M:%SZ; }

declare -A stream_of=()
# Background jobs of a script ignore SIGINT: pass an interruption on to both.
trap 'kill -TERM "${!stream_of[@]}" 2>/dev/null' INT TERM
for stream in "${STREAMS[@]}"; do
  log="$LOG_DIR/$stream.log"
  echo "# $stream started $(now): $KEDRO run --pipeline=$stream $*" >"$log"
  # One thread per stream: the two streams fill a 2-core machine, and one thread makes
  # every training deterministic given its seed.
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
    "$KEDRO" run --pipeline="$stream" "$@" >>"$log" 2>&1 &
  stream_of[$!]=$stream
  echo "[pretrain] $stream started (pid $!), log $log"
done

status=0
while ((${#stream_of[@]})); do
  unset done_pid
  wait -n -p done_pid "${!stream_of[@]}"
  rc=$?
  [[ -n ${done_pid:-} && -n ${stream_of[$done_pid]:-} ]] || continue  # a trapped signal
  stream=${stream_of[$done_pid]}
  unset "stream_of[$done_pid]"
  echo "# $stream ended $(now), exit $rc" >>"$LOG_DIR/$stream.log"
  if ((rc == 0)); then
    echo "[pretrain] $stream done"
  else
    echo "[pretrain] $stream FAILED (exit $rc), see $LOG_DIR/$stream.log" >&2
    status=1
  fi
done
exit $status
