"""Benchmarks: our implementation beside fair references, with the machine's ceilings.

Run from the repository root: ``python -m benchmarks NAME`` with NAME one of decoder, decoding,
training, encoders, scst, data, images, threads or all (``make bench`` runs them all); results go
to ``bench_results/``.
"""
