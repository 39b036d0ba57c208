"""Fleet runs: one job (bag replay, autolabelling) over many inputs, resumable, on Ray.

:func:`~univ_core.fleet.runner.run_fleet` takes a :class:`~univ_core.fleet.job.FleetJob` and
input paths; see :mod:`univ_core.fleet.job` for what a job provides. Ray is optional: without
it (or with one worker) the same units run in this process. Ray is imported only
when a run uses it.
"""
