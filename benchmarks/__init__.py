"""expsvc's benchmark suite: ``python -m benchmarks [--quick]``.

Six sections, each measuring its contenders side by side in one run (interleaved repetitions, median and
min–max): the seed net against a hand-written numpy floor and torch eager, five seeds vectorised, a wide net
against torch at 1 and 2 threads, the cost of history logging, CLI start-up and memory, and queries on a
large store.  Results go to ``benchmarks/results/`` as JSON and Markdown, with the machine description and the
git commit.  See ``benchmarks/README.md``.
"""
