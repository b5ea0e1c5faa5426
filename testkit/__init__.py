"""What the tests (tests/) and the benchmark suite (bench/) share: the daemon launcher.

Imports batchd only through its public client (batchd.client); nothing under batchd/
imports this package, and it is not installed with batchd.
"""
