"""The benchmarks, one module a script, each run from the repository root as
`python -m bench.NAME ...` (bench/README.md lists them: what each measures, the doc it feeds
and its command). Shared pieces: `bench._common` (paths, the `grn` command as a child
process, percentiles) and `bench.server` (start a server, wait until it is ready, stop it).
"""
