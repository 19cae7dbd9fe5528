"""Sessions: a schedule of timed readouts on a programmed chip, resumed safely, replayed later.

- :mod:`harness.sessions.schedule` — the session TOML parsed once into frozen specs; readout
  schedules (log, linear, list) in absolute seconds since programming.
- :mod:`harness.sessions.refresh_spec` — the ``[refresh]`` table (``RefreshSpec``), below the schedule.
- :mod:`harness.sessions.runner` — ``run_session``: program, wait, read, append to the recording.
- :mod:`harness.sessions.refresh` — refresh sessions at run time: the rule after each read, the
  re-programming into a new programming epoch; the monitor is injected (``AccuracyMonitor``).
- :mod:`harness.sessions.resume` — ``plan_resume`` / ``resume_session`` / ``verify_chip``: continue
  an interrupted session from its recording, once the chip on the bench is verified.
- :mod:`harness.sessions.status` — ``session_status``: readouts done and pending, next due (no torch).
- :mod:`harness.sessions.resume_check` — the check read that decides whether the chip on the
  bench is the chip in the recording before a resume appends anything.
- :mod:`harness.sessions.replay` — the ``replay:`` backend and ``summarize_recording``;
  :mod:`harness.sessions.replay_plots` — the replay figure.

May import: recording, programming, models, data, virtual (its physics, for the resume check),
the chip seam and the shared basics.
"""

from harness._exports import lazy_exports

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(
        ["ProgramSpec", "ReadoutSpec", "Schedule", "SessionSpec", "load_session", "log_schedule", "parse_session"],
        "schedule",
    ),
    **dict.fromkeys(
        ["RestorableChip", "SessionProgress", "SessionResult", "record_readouts", "run_session", "timetable"],
        "runner",
    ),
    **dict.fromkeys(["ResumePlan", "plan_resume", "resume_session", "verify_chip"], "resume"),
    "RefreshSpec": "refresh_spec",
    **dict.fromkeys(["AccuracyMonitor", "MonitorFactory"], "refresh"),
    "session_status": "status",
    **dict.fromkeys(["ChipCheck", "check_against"], "resume_check"),
    **dict.fromkeys(["ReplayChip", "open_replay", "summarize_recording"], "replay"),
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
