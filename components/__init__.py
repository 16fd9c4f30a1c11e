"""slimgate's pipeline steps. Each step is a function that reads from paths and writes to a run
directory, so the CLI, an Airflow task, a KFP component and a container call the same code.

Steps: :func:`components.prepare.prepare_data`, :func:`components.baseline.baseline`,
:func:`components.optimize.candidate`, :func:`components.evaluate.evaluate`,
:func:`components.benchmark.benchmark`, :func:`components.gate.gate`,
:func:`components.promote.promote`, :func:`components.report.report`.
"""
