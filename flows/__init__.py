"""Prefect flows, deployments and the command line: wiring only. The only package
that imports prefect."""
