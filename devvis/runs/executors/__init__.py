"""Executors of a sweep's units: ``local`` (this process or a process pool), ``slurm`` (submitit job
arrays) and ``torchrun`` (ranks of one launch). Each runs units through
:func:`devvis.runs.unit.execute_units` and reports through the units' status records."""
