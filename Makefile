# `make demo` and `make test` do all the set-up on a fresh machine (see scripts/install.sh).
PY := .venv/bin/python

.PHONY: install demo test test-fast test-portable bench clean

install:
	scripts/install.sh dev

demo: install
	$(PY) -m dipod_trl demo

test: install
	$(PY) -m pytest -q -ra

test-fast: install
	$(PY) -m pytest -q -ra -m "not slow"

# The fast tests on torch's portable CPU kernels: they round differently from the vectorised ones (AVX2, AVX-512), as
# another CPU does, so a test that compares floats recorded on this machine bit for bit fails here too.
test-portable: install
	ATEN_CPU_CAPABILITY=default $(PY) -m pytest -q -ra -m "not slow"

bench: install
	$(PY) benchmarks/bench_sampling.py
	$(PY) benchmarks/bench_elbo.py
	$(PY) benchmarks/bench_dipod_overhead.py

clean:
	rm -rf .venv outputs .pytest_cache
