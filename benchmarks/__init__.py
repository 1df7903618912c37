"""Benchmarks: our implementation beside fair references, with the machine's ceilings.

Run from the repository root: ``python -m benchmarks {decoder,decoding,training,encoders,scst,data,all}``
(``make bench`` runs them all); results go to ``bench_results/``.
"""
