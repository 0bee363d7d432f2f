"""How an inspection run ended, told to its supervisor: the degraded reasons and the exit status.

A run is *degraded* when it finished but did not record or deliver everything it should have: a
reject the PLC never got (``missed_rejects``: late, queue full or PLC unreachable — an NG part that
may be in the OK bin), inspection halted by ``plc.on_failure: stop``, an NG event not written
(unwritable ``--out``, read-only or full disk), snapshots dropped or failed, any output that
failed, a file source that ended before its reported frame count, or ``summary.json`` that could
not be written. ``summary.json`` (or stderr, when it cannot be written) says which, in
``degraded_reasons``; the exit status says that it happened:

====  =====================================================================================
 0    the run ended normally (end of source, a limit, SIGINT/SIGTERM) and recorded everything
 1    the source failed for good (``capture.give_up_s`` without a frame): a service manager restarts the run
 2    bad input: a config key or value, the model or a file source (one line on stderr)
 3    degraded: the run ended but a reject was missed or something was not recorded (``degraded_reasons``)
====  =====================================================================================
"""

from __future__ import annotations

from typing import Any, Mapping

EXIT_OK, EXIT_SOURCE_FAILED, EXIT_BAD_INPUT, EXIT_DEGRADED = 0, 1, 2, 3

EXIT_ROWS = (  # (status, meaning) for `defectdet inspect --help`
    (
        EXIT_OK,
        "ok: the run ended (max frames, duration, end of the file or folder, SIGTERM) and recorded "
        "everything",
    ),
    (
        EXIT_SOURCE_FAILED,
        "the source failed for good (capture.give_up_s), so a service manager restarts the run",
    ),
    (EXIT_BAD_INPUT, "bad input: a config key or value, the model or a file source (one line on stderr)"),
    (
        EXIT_DEGRADED,
        "degraded: the run ended but a reject was missed (missed_rejects), inspection was halted, "
        "events/snapshots/outputs were not all written, the file source ended early or summary.json could "
        "not be written (summary.json's degraded_reasons, and stderr, say why)",
    ),
)


def degraded_reasons(summary: Mapping[str, Any]) -> list[str]:
    """One line per thing the run failed to record, from a loop summary (empty: nothing lost)."""
    reasons = []
    missed = summary.get("missed_rejects") or 0
    if missed:
        why = ", ".join(
            f"{n} {r.replace('_', ' ')}"
            for r, n in (summary.get("missed_rejects_by_reason") or {}).items()
            if n
        )
        reasons.append(
            f"rejects: {missed} NG part(s) not rejected ({why}): "
            "they may be in the OK bin; the alarm was raised"
        )
    if summary.get("inspection_halted"):
        reasons.append(
            f"inspection halted: {summary['inspection_halted']}; "
            f"{summary.get('uninspected_frames', 0)} frame(s) not inspected"
        )
    if summary.get("source_ended_early"):
        reasons.append(str(summary["source_ended_early"]))
    ng, written = summary.get("ng") or 0, summary.get("events_written")
    if written is not None and written < ng:
        reasons.append(f"events: {ng - written} of {ng} NG event(s) not written to the event log")
    for name, stats in (summary.get("sinks") or {}).items():
        low = stats.get("dropped_low_disk")
        if low:
            reasons.append(
                f"{name}: {low} NG frame(s) not saved: free disk space under snapshots.min_free_mb "
                f"({stats.get('min_free_mb')} MB), kept for the event log"
            )
        if stats.get("errors"):
            reasons.append(f"{name}: {stats['errors']} failure(s), the last: {stats.get('last_error')}")
    return reasons


def assess(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary keys ``degraded`` (bool) and ``degraded_reasons`` (list of one-line reasons)."""
    reasons = degraded_reasons(summary)
    return {"degraded": bool(reasons), "degraded_reasons": reasons}


def exit_status(summary: Mapping[str, Any]) -> int:
    """``defectdet inspect``'s exit status for a finished run (see the module docstring)."""
    if summary.get("source_error"):
        return EXIT_SOURCE_FAILED
    return EXIT_DEGRADED if summary.get("degraded") else EXIT_OK
